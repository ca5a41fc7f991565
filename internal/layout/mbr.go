package layout

import (
	"encoding/binary"
	"fmt"
	"io"
)

// MBR on-disk layout: four 16-byte entries at 446, signature 0x55AA at 510.
const (
	mbrEntries   = 446
	mbrEntrySize = 16
	mbrSigOff    = 510
	mbrSector    = 512 // MBR and EBR offsets count 512-byte sectors here

	maxLogical = 256 // cap on the EBR chain: Linux itself stops far earlier
)

// mbrEntry is one 16-byte partition entry.
type mbrEntry struct {
	status byte   // 0x80 bootable, 0x00 not; anything else is not an MBR
	typ    byte   // partition type; 0 is an unused slot
	start  uint32 // first sector (LBA), relative to the table's base
	count  uint32 // sectors
}

// isExtended reports whether an MBR type marks an extended container.
func isExtended(typ byte) bool { return typ == 0x05 || typ == 0x0F || typ == 0x85 }

// parseEntries decodes the four entries of an MBR or EBR sector. ok is false
// if the sector has no 0x55AA signature or a malformed status byte.
func parseEntries(sec []byte) (e [4]mbrEntry, ok bool) {
	if sec[mbrSigOff] != 0x55 || sec[mbrSigOff+1] != 0xAA {
		return e, false
	}
	for i := range e {
		b := sec[mbrEntries+i*mbrEntrySize:]
		e[i] = mbrEntry{
			status: b[0],
			typ:    b[4],
			start:  binary.LittleEndian.Uint32(b[8:12]),
			count:  binary.LittleEndian.Uint32(b[12:16]),
		}
		if e[i].status != 0 && e[i].status != 0x80 {
			return e, false
		}
	}
	return e, true
}

// parseMBR decodes sector 0 as an MBR. ok is false if it is not one: no
// signature, bad status bytes, no used entry, or a filesystem boot sector
// (NTFS and FAT carry 0x55AA too, with boot code where the entries would be).
func parseMBR(sec []byte) ([4]mbrEntry, bool) {
	e, ok := parseEntries(sec)
	if !ok {
		return e, false
	}
	if string(sec[3:11]) == "NTFS    " || string(sec[54:59]) == "FAT12" ||
		string(sec[54:59]) == "FAT16" || string(sec[82:87]) == "FAT32" {
		return e, false
	}
	used := 0
	for _, x := range e {
		if x.typ != 0 {
			if x.count == 0 || x.start == 0 {
				return e, false
			}
			used++
		}
	}
	return e, used > 0
}

// readMBR builds the layout of an MBR disk: primaries 1-4, then the logical
// partitions of the first extended container, numbered from 5.
func readMBR(r io.ReaderAt, size int64, entries [4]mbrEntry) (*Layout, error) {
	l := &Layout{Scheme: MBR, SectorSize: mbrSector}
	ext := -1 // index of the first usable extended container
	for i, e := range entries {
		if e.typ == 0 {
			continue
		}
		p := Partition{
			Number:   i + 1,
			Start:    int64(e.start) * mbrSector,
			Size:     int64(e.count) * mbrSector,
			Type:     fmt.Sprintf("0x%02x", e.typ),
			TypeName: mbrTypeName(e.typ),
		}
		p.Container = isExtended(e.typ)
		check(&p, size)
		l.Partitions = append(l.Partitions, p)
		if p.Container && ext < 0 && p.Problem == "" {
			ext = len(l.Partitions) - 1
		}
	}
	if ext >= 0 {
		c := &l.Partitions[ext]
		logical, problem := walkEBR(r, size, c.Start, c.End())
		// A broken chain keeps what it did yield; the container is marked,
		// and bytes of logicals it lost pass through, as all gaps do.
		c.Problem = problem
		l.Partitions = append(l.Partitions, logical...)
	}
	return l, nil
}

// walkEBR follows the chain of extended boot records inside the container
// [extStart, extEnd). Each EBR's first entry is a logical partition relative
// to that EBR; its second points to the next EBR relative to extStart. The
// walk stops at a loop, a link outside the container, or maxLogical entries.
func walkEBR(r io.ReaderAt, size, extStart, extEnd int64) ([]Partition, string) {
	var out []Partition
	seen := map[int64]bool{}
	var sec [mbrSector]byte
	for ebr := extStart; ; {
		if seen[ebr] {
			return out, fmt.Sprintf("EBR chain loops back to byte %d", ebr)
		}
		seen[ebr] = true
		if len(out) >= maxLogical {
			return out, fmt.Sprintf("EBR chain longer than %d entries", maxLogical)
		}
		if ebr+mbrSector > min(extEnd, size) {
			return out, fmt.Sprintf("EBR at byte %d lies outside the extended partition or the source", ebr)
		}
		if _, err := r.ReadAt(sec[:], ebr); err != nil {
			return out, fmt.Sprintf("reading EBR at byte %d: %v", ebr, err)
		}
		e, ok := parseEntries(sec[:])
		if !ok {
			if ebr == extStart {
				return out, "" // an empty extended partition
			}
			return out, fmt.Sprintf("EBR at byte %d has no valid signature", ebr)
		}
		if e[0].typ != 0 {
			p := Partition{
				Number:   5 + len(out),
				Start:    ebr + int64(e[0].start)*mbrSector,
				Size:     int64(e[0].count) * mbrSector,
				Type:     fmt.Sprintf("0x%02x", e[0].typ),
				TypeName: mbrTypeName(e[0].typ),
			}
			check(&p, size)
			if p.Problem == "" && (p.Start < extStart || p.End() > extEnd) {
				p.Problem = "logical partition extends outside its extended partition"
			}
			out = append(out, p)
		}
		if e[1].typ == 0 || e[1].start == 0 {
			return out, ""
		}
		ebr = extStart + int64(e[1].start)*mbrSector
	}
}

// mbrTypeName names common MBR partition types.
func mbrTypeName(t byte) string {
	switch t {
	case 0x05, 0x0F, 0x85:
		return "extended"
	case 0x07:
		return "NTFS/exFAT"
	case 0x0B, 0x0C:
		return "FAT32"
	case 0x06, 0x0E:
		return "FAT16"
	case 0x82:
		return "Linux swap"
	case 0x83:
		return "Linux"
	case 0x8E:
		return "Linux LVM"
	case 0xEF:
		return "EFI System"
	case 0xFD:
		return "Linux RAID"
	}
	return ""
}
