package restore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// GPT header fields (UEFI 2.10, 5.3.2), as byte offsets in the header.
const (
	gptSignature   = "EFI PART"
	gptHeaderSize  = 12 // uint32 HeaderSize: bytes covered by HeaderCRC32
	gptHeaderCRC   = 16 // uint32 HeaderCRC32, computed with this field zero
	gptMyLBA       = 24 // uint64 MyLBA: where this header is
	gptAlternate   = 32 // uint64 AlternateLBA: where the other header is
	gptFirstUsable = 40 // uint64 FirstUsableLBA
	gptLastUsable  = 48 // uint64 LastUsableLBA
	gptEntryLBA    = 72 // uint64 PartitionEntryLBA: start of this header's entry array
	gptEntryCount  = 80 // uint32 NumberOfPartitionEntries
	gptEntrySize   = 84 // uint32 SizeOfPartitionEntry: 128 * 2^n
	gptEntriesCRC  = 88 // uint32 PartitionEntryArrayCRC32
	gptMinHeader   = 92 // the fields above; HeaderSize may be larger, up to a sector

	// GPT partition entry fields (5.3.3).
	gptEntryType  = 0  // 16-byte type GUID; all zero is an unused entry
	gptEntryFirst = 32 // uint64 StartingLBA
	gptEntryLast  = 40 // uint64 EndingLBA, inclusive

	maxGPTEntries = 16384 // caps the entry array at 64 MiB with 4 KiB entries
)

// errNoGPT means there is no "EFI PART" signature at LBA 1.
var errNoGPT = errors.New("no GPT header")

// gptTable is a primary GPT read from the start of a disk.
type gptTable struct {
	sectorSize  int64
	header      []byte // the primary header, HeaderSize bytes
	altLBA      uint64 // where the backup header belongs
	firstUsable uint64
	lastUsable  uint64
	entries     []byte // the entry array, count*size bytes
	entrySize   int
}

// readGPT reads and checks the primary GPT of the size-byte disk start r
// at sector size ss. It returns errNoGPT if there is no signature.
func readGPT(r io.ReaderAt, size, ss int64) (*gptTable, error) {
	if size < 2*ss {
		return nil, errNoGPT
	}
	sec := make([]byte, ss)
	if _, err := r.ReadAt(sec, ss); err != nil {
		return nil, fmt.Errorf("reading LBA 1: %w", err)
	}
	if string(sec[:8]) != gptSignature {
		return nil, errNoGPT
	}
	bad := func(format string, a ...any) error {
		return &FormatError{Off: ss, Msg: fmt.Sprintf("GPT header (%d-byte sectors): ", ss) + fmt.Sprintf(format, a...)}
	}
	le := binary.LittleEndian
	hs := le.Uint32(sec[gptHeaderSize:])
	if hs < gptMinHeader || int64(hs) > ss {
		return nil, bad("HeaderSize %d is outside %d..%d", hs, gptMinHeader, ss)
	}
	h := append([]byte(nil), sec[:hs]...)
	want := le.Uint32(h[gptHeaderCRC:])
	le.PutUint32(h[gptHeaderCRC:], 0)
	if got := crc32.ChecksumIEEE(h); got != want {
		return nil, bad("header CRC is %08x, the header says %08x (a damaged primary GPT cannot be restored from header.img)", got, want)
	}
	le.PutUint32(h[gptHeaderCRC:], want)
	if my := le.Uint64(h[gptMyLBA:]); my != 1 {
		return nil, bad("MyLBA is %d, not 1: this is not a primary header", my)
	}
	g := &gptTable{
		sectorSize:  ss,
		header:      h,
		altLBA:      le.Uint64(h[gptAlternate:]),
		firstUsable: le.Uint64(h[gptFirstUsable:]),
		lastUsable:  le.Uint64(h[gptLastUsable:]),
	}
	count, esz := le.Uint32(h[gptEntryCount:]), le.Uint32(h[gptEntrySize:])
	if count == 0 || count > maxGPTEntries || esz < 128 || esz > 4096 || esz&(esz-1) != 0 {
		return nil, bad("%d entries of %d bytes", count, esz)
	}
	g.entrySize = int(esz)
	entryLBA := le.Uint64(h[gptEntryLBA:])
	arrayLen := int64(count) * int64(esz)
	if entryLBA < 2 || entryLBA > uint64(size/ss) || int64(entryLBA)*ss+arrayLen > size {
		return nil, bad("the entry array at LBA %d (%d bytes) is not inside header.img (%d bytes)", entryLBA, arrayLen, size)
	}
	g.entries = make([]byte, arrayLen)
	if _, err := r.ReadAt(g.entries, int64(entryLBA)*ss); err != nil {
		return nil, fmt.Errorf("reading the GPT entry array: %w", err)
	}
	if got, want := crc32.ChecksumIEEE(g.entries), le.Uint32(h[gptEntriesCRC:]); got != want {
		return nil, bad("entry array CRC is %08x, the header says %08x", got, want)
	}
	// The backup array sits between LastUsableLBA and AlternateLBA.
	es := uint64(g.entrySectors())
	if g.firstUsable > g.lastUsable || g.altLBA > 1<<62/uint64(ss) || g.altLBA < es+1 || g.altLBA-es <= g.lastUsable {
		return nil, bad("usable LBAs %d-%d and AlternateLBA %d leave no room for the backup entry array (%d sectors)",
			g.firstUsable, g.lastUsable, g.altLBA, es)
	}
	return g, nil
}

// entrySectors returns the sectors the entry array fills.
func (g *gptTable) entrySectors() int64 {
	return (int64(len(g.entries)) + g.sectorSize - 1) / g.sectorSize
}

// partitions returns the used entries, numbered from 1 by entry index as
// Linux numbers them.
func (g *gptTable) partitions() ([]tablePart, error) {
	le := binary.LittleEndian
	var out []tablePart
	for i := 0; i < len(g.entries)/g.entrySize; i++ {
		e := g.entries[i*g.entrySize:]
		if allZero(e[gptEntryType : gptEntryType+16]) {
			continue
		}
		first, last := le.Uint64(e[gptEntryFirst:]), le.Uint64(e[gptEntryLast:])
		if first > last || first < g.firstUsable || last > g.lastUsable {
			return nil, fmt.Errorf("GPT entry %d spans LBAs %d-%d, outside the usable LBAs %d-%d", i+1, first, last, g.firstUsable, g.lastUsable)
		}
		out = append(out, tablePart{
			Number: i + 1,
			Start:  int64(first) * g.sectorSize,
			Size:   int64(last-first+1) * g.sectorSize,
		})
	}
	return out, nil
}

// end returns the size of the disk the GPT was made for: the byte after the
// backup header named by AlternateLBA.
func (g *gptTable) end() int64 { return (int64(g.altLBA) + 1) * g.sectorSize }

// backup returns the backup GPT, regenerated from the primary, and the byte
// offset where it belongs: the entry array, then at AlternateLBA the primary
// header with MyLBA and AlternateLBA swapped, PartitionEntryLBA pointing at
// the array just before it, and its CRC recomputed. The entry array and so
// its CRC are the primary's.
func (g *gptTable) backup() (off int64, data []byte) {
	es := g.entrySectors()
	entryLBA := int64(g.altLBA) - es
	data = make([]byte, (es+1)*g.sectorSize)
	copy(data, g.entries)
	h := data[es*g.sectorSize:]
	copy(h, g.header)
	le := binary.LittleEndian
	le.PutUint64(h[gptMyLBA:], g.altLBA)
	le.PutUint64(h[gptAlternate:], 1)
	le.PutUint64(h[gptEntryLBA:], uint64(entryLBA))
	le.PutUint32(h[gptHeaderCRC:], 0)
	le.PutUint32(h[gptHeaderCRC:], crc32.ChecksumIEEE(h[:len(g.header)]))
	return entryLBA * g.sectorSize, data
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
