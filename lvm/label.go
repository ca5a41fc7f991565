package lvm

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"io"

	"github.com/prezero/prezero/freemap"
)

// On-disk constants (lvm2 lib/label/label.h, lib/format_text/layout.h).
const (
	SectorSize     = 512        // LVM's unit for extent_size, pe_start, dev_size
	labelID        = "LABELONE" // label_header.id
	labelType      = "LVM2 001" // label_header.type
	labelSectors   = 4          // the label is in one of sectors 0..3
	mdaHeaderSize  = 512        // mda_header, one sector
	mdaMagic       = " LVM2 x[5A%r0N*>"
	mdaVersion     = 1
	initialCRC     = 0xf597a6cf // lvm2 lib/misc/crc.h INITIAL_CRC
	rawLocnIgnored = 0x00000001 // raw_locn.flags: this mda is not used
	maxAreas       = 8          // data or metadata areas listed in a pv_header
	maxText        = 16 << 20   // the largest metadata text read (lvm's default mda is 1 MiB)
	idLen          = 32         // a UUID without its dashes
)

// lvmCRC is lvm2's calc_crc: CRC-32 (IEEE, reflected) without the usual
// inversions, seeded with initial.
func lvmCRC(initial uint32, p []byte) uint32 {
	return ^crc32.Update(^initial, crc32.IEEETable, p)
}

// Area is a byte range of the PV, as a pv_header lists it. Size 0 in a
// data area means "to the end of the device".
type Area struct {
	Off  int64
	Size int64
}

// label is what the label sector and pv_header say.
type label struct {
	sector   int64 // where the label was found
	uuid     string
	devSize  int64
	data     []Area
	metadata []Area
}

// findLabel returns the sector (0..3) holding a LABELONE/LVM2 001 label
// header, or -1.
func findLabel(r io.ReaderAt, size int64) (int64, []byte) {
	var buf [labelSectors * SectorSize]byte
	n, _ := r.ReadAt(buf[:], 0)
	for s := 0; s < labelSectors; s++ {
		sec := buf[s*SectorSize : (s+1)*SectorSize]
		if (s+1)*SectorSize > n || int64(s+1)*SectorSize > size {
			break
		}
		if string(sec[0:8]) == labelID && string(sec[24:32]) == labelType {
			return int64(s), sec
		}
	}
	return -1, nil
}

// readLabel parses the label header and the pv_header after it.
func readLabel(r io.ReaderAt, size int64) (*label, error) {
	s, sec := findLabel(r, size)
	if s < 0 {
		return nil, freemap.Formatf(0, "lvm: no LABELONE label in the first %d sectors", labelSectors)
	}
	base := s * SectorSize
	if got := binary.LittleEndian.Uint64(sec[8:]); got != uint64(s) {
		return nil, freemap.Formatf(base+8, "lvm: label in sector %d says it is in sector %d", s, got)
	}
	if want, got := binary.LittleEndian.Uint32(sec[16:]), lvmCRC(initialCRC, sec[20:]); want != got {
		return nil, freemap.Formatf(base+16, "lvm: label checksum %#08x, computed %#08x", want, got)
	}
	off := binary.LittleEndian.Uint32(sec[20:])
	// pv_header: uuid[32], device_size u64, then two zero-terminated lists
	// of {offset u64, size u64}; all inside the label sector.
	if off < 32 || off > SectorSize-40-16 {
		return nil, freemap.Formatf(base+20, "lvm: pv_header offset %d outside the label sector", off)
	}
	p := sec[off:]
	l := &label{sector: s, uuid: string(p[:idLen]), devSize: int64(binary.LittleEndian.Uint64(p[32:]))}
	if !validID(l.uuid) {
		return nil, freemap.Formatf(base+int64(off), "lvm: PV UUID %q is not 32 letters and digits", l.uuid)
	}
	if l.devSize < 0 {
		return nil, freemap.Formatf(base+int64(off)+32, "lvm: device size %d", l.devSize)
	}
	pos := 40
	for list := 0; list < 2; list++ {
		var areas []Area
		for {
			if pos+16 > len(p) {
				return nil, freemap.Formatf(base+int64(off)+int64(pos), "lvm: pv_header area list runs past the label sector")
			}
			ao, as := binary.LittleEndian.Uint64(p[pos:]), binary.LittleEndian.Uint64(p[pos+8:])
			pos += 16
			if ao == 0 {
				break
			}
			if ao > 1<<62 || as > 1<<62 || len(areas) == maxAreas {
				return nil, freemap.Formatf(base+int64(off)+int64(pos-16), "lvm: bad pv_header area {%d, %d}", ao, as)
			}
			areas = append(areas, Area{int64(ao), int64(as)})
		}
		if list == 0 {
			l.data = areas
		} else {
			l.metadata = areas
		}
	}
	return l, nil
}

// validID reports whether s is a UUID as LVM stores it without dashes.
func validID(s string) bool {
	if len(s) != idLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '!' || c == '#') {
			return false
		}
	}
	return true
}

// readMDA reads the metadata area at a and returns its committed text, or
// nil (and no error) when the mda is marked ignored or holds no metadata
// yet. A checksum that fails is an error.
func readMDA(r io.ReaderAt, size int64, a Area) ([]byte, error) {
	if a.Size < mdaHeaderSize+SectorSize || a.Off > size || a.Size > size-a.Off {
		return nil, freemap.Formatf(a.Off, "lvm: metadata area {%d, %d} outside the %d-byte device", a.Off, a.Size, size)
	}
	var h [mdaHeaderSize]byte
	if _, err := r.ReadAt(h[:], a.Off); err != nil {
		return nil, freemap.Formatf(a.Off, "lvm: reading the metadata area header: %v", err)
	}
	if want, got := binary.LittleEndian.Uint32(h[0:]), lvmCRC(initialCRC, h[4:]); want != got {
		return nil, freemap.Formatf(a.Off, "lvm: metadata area header checksum %#08x, computed %#08x", want, got)
	}
	if string(h[4:20]) != mdaMagic {
		return nil, freemap.Formatf(a.Off+4, "lvm: bad metadata area magic")
	}
	if v := binary.LittleEndian.Uint32(h[20:]); v != mdaVersion {
		return nil, freemap.Unsupported("lvm: metadata area version %d (only %d is known)", v, mdaVersion)
	}
	start, msize := binary.LittleEndian.Uint64(h[24:]), binary.LittleEndian.Uint64(h[32:])
	if start != uint64(a.Off) || msize != uint64(a.Size) {
		return nil, freemap.Formatf(a.Off+24, "lvm: metadata area header says {%d, %d}, the PV header {%d, %d}", start, msize, a.Off, a.Size)
	}
	// raw_locns[0] is the committed metadata ([1], precommitted, is only
	// meaningful during a write).
	rl := h[40:64]
	off, n := binary.LittleEndian.Uint64(rl[0:]), binary.LittleEndian.Uint64(rl[8:])
	sum, flags := binary.LittleEndian.Uint32(rl[16:]), binary.LittleEndian.Uint32(rl[20:])
	if flags&rawLocnIgnored != 0 || (off == 0 && n == 0) {
		return nil, nil
	}
	if flags&^rawLocnIgnored != 0 {
		return nil, freemap.Unsupported("lvm: unknown metadata location flags %#x", flags)
	}
	// The text is a circular buffer after the header: it may wrap from
	// the area's end to its start + 512.
	ring := uint64(a.Size) - mdaHeaderSize
	if off < mdaHeaderSize || off >= uint64(a.Size) || n == 0 || n > ring || n > maxText {
		return nil, freemap.Formatf(a.Off+40, "lvm: metadata text {%d, %d} outside its %d-byte area", off, n, a.Size)
	}
	text := make([]byte, n)
	first := min(n, uint64(a.Size)-off)
	if _, err := r.ReadAt(text[:first], a.Off+int64(off)); err != nil {
		return nil, freemap.Formatf(a.Off+int64(off), "lvm: reading the metadata text: %v", err)
	}
	if first < n {
		if _, err := r.ReadAt(text[first:], a.Off+mdaHeaderSize); err != nil {
			return nil, freemap.Formatf(a.Off+mdaHeaderSize, "lvm: reading the wrapped metadata text: %v", err)
		}
	}
	if got := lvmCRC(initialCRC, text); got != sum {
		return nil, freemap.Formatf(a.Off+56, "lvm: metadata text checksum %#08x, computed %#08x: the VG metadata is damaged", sum, got)
	}
	return bytes.TrimRight(text, "\x00"), nil
}
