package layout

import (
	"encoding/binary"
	"fmt"
	"io"
)

// MBR and EBR on-disk layout: boot code, then four 16-byte entries at 446,
// then the signature 55 AA at 510. The record is the first 512 bytes of its
// sector whatever the sector size; LBAs count logical sectors.
const (
	mbrEntries   = 446
	mbrEntrySize = 16
	mbrSigOff    = 510
	mbrSize      = 512

	maxLogical = 256 // cap on the EBR chain: Linux itself stops far earlier
)

// MBREntry is one 16-byte partition entry of an MBR or EBR.
type MBREntry struct {
	Status  byte   // 0x80 bootable, 0x00 not; anything else is not an MBR
	Type    byte   // partition type; 0 is an unused slot, 0xEE a protective MBR
	Start   uint32 // first sector (LBA), relative to the table's base
	Sectors uint32 // length in sectors
}

// IsExtended reports whether an MBR type marks an extended container.
func IsExtended(typ byte) bool { return typ == 0x05 || typ == 0x0F || typ == 0x85 }

// DecodeMBR decodes the four entries of an MBR or EBR (the first 512 bytes
// of sec). ok is false if there is no 55 AA signature or a status byte is
// neither 0x00 nor 0x80.
func DecodeMBR(sec []byte) (e [4]MBREntry, ok bool) {
	if len(sec) < mbrSize || sec[mbrSigOff] != 0x55 || sec[mbrSigOff+1] != 0xAA {
		return e, false
	}
	for i := range e {
		b := sec[mbrEntries+i*mbrEntrySize:]
		e[i] = MBREntry{
			Status:  b[0],
			Type:    b[4],
			Start:   binary.LittleEndian.Uint32(b[8:12]),
			Sectors: binary.LittleEndian.Uint32(b[12:16]),
		}
		if e[i].Status != 0 && e[i].Status != 0x80 {
			return e, false
		}
	}
	return e, true
}

// parseMBR decodes sector 0 as an MBR. ok is false if it is not one: no
// signature, bad status bytes, no used entry, or a filesystem boot sector
// (NTFS and FAT carry 55 AA too, with boot code where the entries would be).
func parseMBR(sec []byte) ([4]MBREntry, bool) {
	e, ok := DecodeMBR(sec)
	if !ok {
		return e, false
	}
	if string(sec[3:11]) == "NTFS    " || string(sec[54:59]) == "FAT12" ||
		string(sec[54:59]) == "FAT16" || string(sec[82:87]) == "FAT32" {
		return e, false
	}
	used := 0
	for _, x := range e {
		if x.Type != 0 {
			if x.Sectors == 0 || x.Start == 0 {
				return e, false
			}
			used++
		}
	}
	return e, used > 0
}

// readMBR builds the layout of an MBR disk with ss-byte sectors: primaries
// 1-4, then the logical partitions of the first extended container,
// numbered from 5.
func readMBR(r io.ReaderAt, size int64, entries [4]MBREntry, ss int) *Layout {
	sec := int64(ss)
	l := &Layout{Scheme: MBR, SectorSize: ss}
	l.Meta = append(l.Meta, Extent{Start: 0, Size: min(sec, size), What: "MBR"})
	ext := -1 // index of the first usable extended container
	for i, e := range entries {
		if e.Type == 0 {
			continue
		}
		p := Partition{
			Number:   i + 1,
			Start:    int64(e.Start) * sec,
			Size:     int64(e.Sectors) * sec,
			Type:     fmt.Sprintf("0x%02x", e.Type),
			TypeName: mbrTypeName(e.Type),
		}
		p.Container = IsExtended(e.Type)
		check(&p, size)
		l.Partitions = append(l.Partitions, p)
		if p.Container && ext < 0 && p.Problem == "" {
			ext = len(l.Partitions) - 1
		}
	}
	if ext >= 0 {
		c := &l.Partitions[ext]
		w := walkEBR(r, size, c.Start, c.End(), sec)
		// A broken chain keeps what it did yield; the container is marked,
		// the cut is noted, and bytes of logicals it lost pass through, as
		// all gaps do.
		c.Problem = w.problem
		if w.problem != "" {
			l.Notes = append(l.Notes, fmt.Sprintf("EBR chain of partition %d cut after %d logical partitions: %s", c.Number, len(w.logical), w.problem))
		}
		l.Partitions = append(l.Partitions, w.logical...)
		l.Meta = append(l.Meta, w.ebrs...)
	}
	return l
}

// ebrWalk is what walkEBR found.
type ebrWalk struct {
	logical []Partition
	ebrs    []Extent // the sector of every EBR read
	problem string   // why the chain was cut, "" if it ended normally
}

// walkEBR follows the chain of extended boot records inside the container
// [extStart, extEnd). Each EBR's first entry is a logical partition relative
// to that EBR; its second points to the next EBR relative to extStart. The
// walk stops at a loop, a link outside the container, or maxLogical entries.
func walkEBR(r io.ReaderAt, size, extStart, extEnd, ss int64) ebrWalk {
	var w ebrWalk
	seen := map[int64]bool{}
	var sec [mbrSize]byte
	for ebr, from := extStart, int64(-1); ; {
		if seen[ebr] {
			w.problem = fmt.Sprintf("EBR chain loops: the EBR at byte %d links back to the EBR at byte %d", from, ebr)
			return w
		}
		seen[ebr] = true
		if len(w.logical) >= maxLogical {
			w.problem = fmt.Sprintf("EBR chain longer than %d entries, cut at byte %d", maxLogical, ebr)
			return w
		}
		if ebr+ss > min(extEnd, size) {
			w.problem = fmt.Sprintf("EBR at byte %d lies outside the extended partition or the source", ebr)
			return w
		}
		if _, err := r.ReadAt(sec[:], ebr); err != nil {
			w.problem = fmt.Sprintf("reading EBR at byte %d: %v", ebr, err)
			return w
		}
		w.ebrs = append(w.ebrs, Extent{Start: ebr, Size: ss, What: "EBR"})
		e, ok := DecodeMBR(sec[:])
		if !ok {
			if ebr == extStart {
				return w // an empty extended partition
			}
			w.problem = fmt.Sprintf("EBR at byte %d has no valid signature", ebr)
			return w
		}
		if e[0].Type != 0 {
			p := Partition{
				Number:   5 + len(w.logical),
				Start:    ebr + int64(e[0].Start)*ss,
				Size:     int64(e[0].Sectors) * ss,
				Type:     fmt.Sprintf("0x%02x", e[0].Type),
				TypeName: mbrTypeName(e[0].Type),
			}
			check(&p, size)
			if p.Problem == "" && (p.Start < extStart || p.End() > extEnd) {
				p.Problem = "logical partition extends outside its extended partition"
			}
			w.logical = append(w.logical, p)
		}
		if e[1].Type == 0 || e[1].Start == 0 {
			return w
		}
		from, ebr = ebr, extStart+int64(e[1].Start)*ss
	}
}
