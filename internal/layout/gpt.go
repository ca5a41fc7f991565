package layout

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"strings"
	"unicode/utf16"

	"github.com/prezero/prezero/freemap"
)

// GPT header fields (UEFI 2.10, 5.3.2), as byte offsets in the header.
const (
	gptSigOff        = 0  // [8]byte Signature "EFI PART"
	gptRevisionOff   = 8  // uint32 Revision
	gptHeaderSizeOff = 12 // uint32 HeaderSize: bytes covered by HeaderCRC32
	gptHeaderCRCOff  = 16 // uint32 HeaderCRC32, computed with this field zero
	gptMyLBAOff      = 24 // uint64 MyLBA: where this header is
	gptAlternateOff  = 32 // uint64 AlternateLBA: where the other header is
	gptFirstUsable   = 40 // uint64 FirstUsableLBA
	gptLastUsable    = 48 // uint64 LastUsableLBA
	gptDiskGUIDOff   = 56 // [16]byte DiskGUID
	gptEntryLBAOff   = 72 // uint64 PartitionEntryLBA
	gptEntryNumOff   = 80 // uint32 NumberOfPartitionEntries
	gptEntrySzOff    = 84 // uint32 SizeOfPartitionEntry: 128 * 2^n
	gptEntriesCRCOff = 88 // uint32 PartitionEntryArrayCRC32
	gptMinHeader     = 92 // the fields above; HeaderSize may be larger, up to a sector

	gptSignature = "EFI PART"

	// maxGPTEntries and maxGPTEntrySize cap the entry array at 64 MiB;
	// the array must also fit in the source before anything is allocated.
	maxGPTEntries   = 16384 // far above the usual 128
	maxGPTEntrySize = 4096
)

// GPT partition entry fields (UEFI 2.10, 5.3.3).
const (
	gptETypeOff   = 0  // [16]byte PartitionTypeGUID; all zero is an unused entry
	gptEUniqueOff = 16 // [16]byte UniquePartitionGUID
	gptEFirstOff  = 32 // uint64 StartingLBA
	gptELastOff   = 40 // uint64 EndingLBA, inclusive
	gptEAttrOff   = 48 // uint64 Attributes
	gptENameOff   = 56 // [72]byte PartitionName, UTF-16LE
	gptENameLen   = 72
)

// ErrNoGPT means there is no "EFI PART" signature where a GPT header was
// looked for. It is not an ErrFormat: a disk need not have a GPT.
var ErrNoGPT = errors.New("no GPT header")

// GUID is a GUID as a GPT stores it: the first three fields little-endian.
type GUID [16]byte

// String formats g the usual way, upper case, as sfdisk prints it.
func (g GUID) String() string {
	le := binary.LittleEndian
	return fmt.Sprintf("%08X-%04X-%04X-%X-%X", le.Uint32(g[0:]), le.Uint16(g[4:]), le.Uint16(g[6:]), g[8:10], g[10:16])
}

// IsZero reports whether g is all zero (an unused GPT entry's type).
func (g GUID) IsZero() bool { return g == GUID{} }

// GPTHeader is a GPT header (UEFI 2.10, 5.3.2), decoded and checked.
type GPTHeader struct {
	Revision       uint32 // 0x00010000 for version 1.0
	HeaderSize     uint32 // bytes covered by HeaderCRC32: 92 up to one sector
	HeaderCRC32    uint32 // CRC32 of HeaderSize bytes, with this field zero
	MyLBA          uint64 // the LBA of this header: 1 for the primary
	AlternateLBA   uint64 // the LBA of the other header (the backup's, normally the last LBA)
	FirstUsableLBA uint64 // first LBA a partition may use
	LastUsableLBA  uint64 // last LBA a partition may use, inclusive
	DiskGUID       GUID
	EntryLBA       uint64 // PartitionEntryLBA: first LBA of this header's entry array
	NumEntries     uint32 // NumberOfPartitionEntries
	EntrySize      uint32 // SizeOfPartitionEntry: 128 * 2^n
	EntriesCRC32   uint32 // PartitionEntryArrayCRC32 over NumEntries*EntrySize bytes

	raw []byte // the HeaderSize bytes as read, for the backup writer
}

// arrayBytes returns the length of the entry array.
func (h *GPTHeader) arrayBytes() int64 { return int64(h.NumEntries) * int64(h.EntrySize) }

// GPTEntry is one used entry of a GPT partition entry array (5.3.3).
type GPTEntry struct {
	Index       int    // 1-based position in the array: Linux's partition number
	Type        GUID   // PartitionTypeGUID
	Unique      GUID   // UniquePartitionGUID
	StartingLBA uint64 // first LBA
	EndingLBA   uint64 // last LBA, inclusive
	Attributes  uint64 // bit 0 required, bit 1 no block I/O, bit 2 legacy BIOS bootable
	Name        string // PartitionName, decoded from UTF-16LE
}

// GPTTable is one GPT header with the entry array it points at, both checked.
type GPTTable struct {
	SectorSize int
	Header     GPTHeader
	Entries    []GPTEntry // the used entries (type GUID not zero), in array order
	array      []byte     // the whole entry array as read
}

// ReadGPT reads the GPT header at sector lba of the size-byte source r, with
// sectors of ss bytes, and the entry array it names. It checks what the
// UEFI spec asks a reader to check: the signature (else ErrNoGPT),
// HeaderSize, the header CRC, MyLBA == lba, an entry size of 128 * 2^n
// (capped), an entry count (capped), an array inside the source, and the
// array's CRC. Errors other than ErrNoGPT are *freemap.FormatError.
func ReadGPT(r io.ReaderAt, size int64, ss int, lba uint64) (*GPTTable, error) {
	sec := int64(ss)
	if lba == 0 || lba > uint64(size/sec) || int64(lba)*sec+sec > size {
		return nil, ErrNoGPT
	}
	off := int64(lba) * sec
	b := make([]byte, ss)
	if _, err := r.ReadAt(b, off); err != nil {
		return nil, fmt.Errorf("reading the GPT header at byte %d: %w", off, err)
	}
	if string(b[:8]) != gptSignature {
		return nil, ErrNoGPT
	}
	bad := func(format string, a ...any) error {
		return freemap.Formatf(off, "GPT header at LBA %d (%d-byte sectors): %s", lba, ss, fmt.Sprintf(format, a...))
	}
	le := binary.LittleEndian
	h := GPTHeader{
		Revision:       le.Uint32(b[gptRevisionOff:]),
		HeaderSize:     le.Uint32(b[gptHeaderSizeOff:]),
		HeaderCRC32:    le.Uint32(b[gptHeaderCRCOff:]),
		MyLBA:          le.Uint64(b[gptMyLBAOff:]),
		AlternateLBA:   le.Uint64(b[gptAlternateOff:]),
		FirstUsableLBA: le.Uint64(b[gptFirstUsable:]),
		LastUsableLBA:  le.Uint64(b[gptLastUsable:]),
		EntryLBA:       le.Uint64(b[gptEntryLBAOff:]),
		NumEntries:     le.Uint32(b[gptEntryNumOff:]),
		EntrySize:      le.Uint32(b[gptEntrySzOff:]),
		EntriesCRC32:   le.Uint32(b[gptEntriesCRCOff:]),
	}
	copy(h.DiskGUID[:], b[gptDiskGUIDOff:])
	if h.HeaderSize < gptMinHeader || h.HeaderSize > uint32(ss) {
		return nil, bad("HeaderSize %d is outside %d..%d", h.HeaderSize, gptMinHeader, ss)
	}
	h.raw = append([]byte(nil), b[:h.HeaderSize]...)
	le.PutUint32(h.raw[gptHeaderCRCOff:], 0)
	crc := crc32.ChecksumIEEE(h.raw)
	le.PutUint32(h.raw[gptHeaderCRCOff:], h.HeaderCRC32)
	if crc != h.HeaderCRC32 {
		return nil, bad("header CRC is %08x, the header says %08x", crc, h.HeaderCRC32)
	}
	if h.MyLBA != lba {
		return nil, bad("MyLBA is %d", h.MyLBA)
	}
	es := h.EntrySize
	if es < 128 || es > maxGPTEntrySize || es&(es-1) != 0 || h.NumEntries > maxGPTEntries {
		return nil, bad("%d entries of %d bytes (entries must be 128 * 2^n bytes, at most %d of at most %d)",
			h.NumEntries, es, maxGPTEntries, maxGPTEntrySize)
	}
	n := h.arrayBytes()
	if h.EntryLBA == 0 || h.EntryLBA > uint64(size/sec) || int64(h.EntryLBA)*sec > size-n {
		return nil, bad("the entry array at LBA %d (%d bytes) is not inside the source (%d bytes)", h.EntryLBA, n, size)
	}
	if h.FirstUsableLBA > h.LastUsableLBA+1 {
		return nil, bad("FirstUsableLBA %d is after LastUsableLBA %d", h.FirstUsableLBA, h.LastUsableLBA)
	}
	g := &GPTTable{SectorSize: ss, Header: h, array: make([]byte, n)}
	if _, err := r.ReadAt(g.array, int64(h.EntryLBA)*sec); err != nil {
		return nil, fmt.Errorf("reading the GPT entry array at LBA %d: %w", h.EntryLBA, err)
	}
	if crc := crc32.ChecksumIEEE(g.array); crc != h.EntriesCRC32 {
		return nil, bad("entry array CRC is %08x, the header says %08x", crc, h.EntriesCRC32)
	}
	for i := 0; i < int(h.NumEntries); i++ {
		e := g.array[i*int(es):]
		var ent GPTEntry
		copy(ent.Type[:], e[gptETypeOff:])
		if ent.Type.IsZero() {
			continue
		}
		copy(ent.Unique[:], e[gptEUniqueOff:])
		ent.Index = i + 1
		ent.StartingLBA = le.Uint64(e[gptEFirstOff:])
		ent.EndingLBA = le.Uint64(e[gptELastOff:])
		ent.Attributes = le.Uint64(e[gptEAttrOff:])
		ent.Name = decodeName(e[gptENameOff : gptENameOff+gptENameLen])
		g.Entries = append(g.Entries, ent)
	}
	return g, nil
}

// decodeName decodes a NUL-terminated UTF-16LE partition name.
func decodeName(b []byte) string {
	u := make([]uint16, 0, len(b)/2)
	for i := 0; i+1 < len(b); i += 2 {
		c := binary.LittleEndian.Uint16(b[i:])
		if c == 0 {
			break
		}
		u = append(u, c)
	}
	return string(utf16.Decode(u))
}

// ArraySectors returns the number of sectors the entry array fills.
func (g *GPTTable) ArraySectors() int64 {
	ss := int64(g.SectorSize)
	return (g.Header.arrayBytes() + ss - 1) / ss
}

// End returns the size of the disk a primary GPT was made for: the byte
// after the backup header that AlternateLBA names.
func (g *GPTTable) End() int64 { return (int64(g.Header.AlternateLBA) + 1) * int64(g.SectorSize) }

// Backup returns the backup GPT regenerated from the primary g, and the byte
// offset where it belongs: the entry array, then at AlternateLBA the primary
// header with MyLBA and AlternateLBA swapped, PartitionEntryLBA pointing at
// the array just before it, and its CRC recomputed. The entry array and so
// its CRC are the primary's. The caller checks that AlternateLBA leaves room
// for the array (see BackupFits).
func (g *GPTTable) Backup() (off int64, data []byte) {
	ss := int64(g.SectorSize)
	es := g.ArraySectors()
	entryLBA := int64(g.Header.AlternateLBA) - es
	data = make([]byte, (es+1)*ss)
	copy(data, g.array)
	h := data[es*ss:]
	copy(h, g.Header.raw)
	le := binary.LittleEndian
	le.PutUint64(h[gptMyLBAOff:], g.Header.AlternateLBA)
	le.PutUint64(h[gptAlternateOff:], g.Header.MyLBA)
	le.PutUint64(h[gptEntryLBAOff:], uint64(entryLBA))
	le.PutUint32(h[gptHeaderCRCOff:], 0)
	le.PutUint32(h[gptHeaderCRCOff:], crc32.ChecksumIEEE(h[:len(g.Header.raw)]))
	return entryLBA * ss, data
}

// BackupFits reports whether the backup array and header Backup writes fit
// between LastUsableLBA and AlternateLBA.
func (g *GPTTable) BackupFits() bool {
	h := &g.Header
	es := uint64(g.ArraySectors())
	return h.AlternateLBA <= 1<<62/uint64(g.SectorSize) && h.AlternateLBA >= es+1 && h.AlternateLBA-es > h.LastUsableLBA
}

// Usable reports whether sectors first..last lie inside the usable LBAs.
func (g *GPTTable) Usable(first, last uint64) bool {
	return first <= last && first >= g.Header.FirstUsableLBA && last <= g.Header.LastUsableLBA
}

// extents returns the sectors this header and its entry array occupy.
func (g *GPTTable) extents(what string) []Extent {
	ss := int64(g.SectorSize)
	return []Extent{
		{Start: int64(g.Header.MyLBA) * ss, Size: ss, What: what + " GPT header"},
		{Start: int64(g.Header.EntryLBA) * ss, Size: g.ArraySectors() * ss, What: what + " GPT entry array"},
	}
}

// readGPTLayout reads a GPT disk at sector sizes ss (the device's, first)
// and then the others: the primary at LBA 1, else the backup.
func readGPTLayout(r io.ReaderAt, size int64, sizes []int) (*Layout, error) {
	var errs []string
	for _, ss := range sizes {
		l, err := readGPTSectors(r, size, ss)
		if err == nil {
			return l, nil
		}
		errs = append(errs, fmt.Sprintf("%d-byte sectors: %v", ss, err))
	}
	return nil, freemap.Formatf(512, "protective MBR found but no readable GPT (%s)", strings.Join(errs, "; "))
}

// readGPTSectors reads the GPT at sector size ss: the primary if it is
// sound, else the backup that the primary header or the last sector holds.
// Every header and array found, sound or not, is reported as metadata.
func readGPTSectors(r io.ReaderAt, size int64, ss int) (*Layout, error) {
	sec := int64(ss)
	last := uint64(size/sec) - 1
	l := &Layout{Scheme: GPT, SectorSize: ss}
	l.Meta = append(l.Meta, Extent{Start: 0, Size: sec, What: "protective MBR"})
	primary, perr := ReadGPT(r, size, ss, 1)
	if errors.Is(perr, ErrNoGPT) && size/sec < 3 {
		return nil, perr
	}
	g := primary
	var backup *GPTTable
	if primary != nil {
		l.Meta = append(l.Meta, primary.extents("primary")...)
		if alt := primary.Header.AlternateLBA; alt != 1 && alt <= last {
			backup, _ = ReadGPT(r, size, ss, alt)
			if backup == nil {
				// The backup belongs where the primary says; if it is not
				// there, those sectors are still the table's: keep them.
				l.Meta = append(l.Meta, Extent{Start: int64(alt) * sec, Size: sec, What: "backup GPT header"})
				if es := primary.ArraySectors(); uint64(es) < alt {
					l.Meta = append(l.Meta, Extent{Start: (int64(alt) - es) * sec, Size: es * sec, What: "backup GPT entry array"})
				}
			}
		}
	} else {
		// Damaged primary: the backup is in the last sector (or where a
		// primary whose array alone is damaged says; both are tried).
		l.Meta = append(l.Meta, Extent{Start: sec, Size: sec, What: "primary GPT header"})
		var berr error
		backup, berr = ReadGPT(r, size, ss, last)
		if backup == nil {
			return nil, fmt.Errorf("primary: %v; backup at LBA %d: %v", perr, last, berr)
		}
		g = backup
		l.Notes = append(l.Notes, "primary GPT is damaged; partitions read from the backup GPT")
		if es := backup.ArraySectors(); es > 0 {
			// The primary's array normally starts at LBA 2.
			l.Meta = append(l.Meta, Extent{Start: 2 * sec, Size: es * sec, What: "primary GPT entry array"})
		}
	}
	if backup != nil {
		l.Meta = append(l.Meta, backup.extents("backup")...)
	}
	for _, e := range g.Entries {
		p := Partition{
			Number:   e.Index,
			Type:     e.Type.String(),
			TypeName: gptTypeName(e.Type.String()),
			Name:     e.Name,
		}
		if e.EndingLBA < e.StartingLBA || e.EndingLBA >= uint64(1)<<62/uint64(ss) {
			p.Problem = fmt.Sprintf("invalid sector range %d-%d", e.StartingLBA, e.EndingLBA)
		} else {
			p.Start = int64(e.StartingLBA) * sec
			p.Size = int64(e.EndingLBA-e.StartingLBA+1) * sec
			check(&p, size)
			if p.Problem == "" && !g.Usable(e.StartingLBA, e.EndingLBA) {
				p.Problem = fmt.Sprintf("sectors %d-%d lie outside the GPT's usable area (over the partition table itself)", e.StartingLBA, e.EndingLBA)
			}
		}
		l.Partitions = append(l.Partitions, p)
	}
	return l, nil
}
