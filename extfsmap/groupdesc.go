package extfsmap

import (
	"encoding/binary"
	"fmt"
	"io"
)

// Group descriptor field offsets (struct ext4_group_desc). The _hi halves
// exist only in 64-byte (INCOMPAT_64BIT) descriptors.
const (
	bgBlockBitmapLo     = 0x00
	bgInodeBitmapLo     = 0x04
	bgInodeTableLo      = 0x08
	bgFreeBlocksLo      = 0x0C
	bgFlags             = 0x12
	bgBlockBitmapCsumLo = 0x18
	bgChecksum          = 0x1E
	bgBlockBitmapHi     = 0x20
	bgInodeBitmapHi     = 0x24
	bgInodeTableHi      = 0x28
	bgFreeBlocksHi      = 0x2C
	bgBlockBitmapCsumHi = 0x38
)

// bg_flags bits.
const (
	bgInodeUninit = 0x1
	bgBlockUninit = 0x2
)

// descBatch is how many bytes of contiguous descriptor blocks are read at
// once.
const descBatch = 64 << 10

// groupDesc is one parsed group descriptor.
type groupDesc struct {
	raw          []byte // valid until the next call to descReader.next
	blockBitmap  uint64
	inodeBitmap  uint64
	inodeTable   uint64
	flags        uint16
	freeClusters uint64 // bg_free_blocks_count: free clusters in the group
	csumOK       bool   // the descriptor checksum verifies, or there is none
}

// descReader reads the group descriptors in group order, a batch of
// descriptor blocks at a time, so memory does not grow with the group count.
type descReader struct {
	r     io.ReaderAt
	s     *superblock
	buf   []byte
	first uint64 // index of the first descriptor block in buf
	n     uint64 // number of descriptor blocks in buf
}

func newDescReader(r io.ReaderAt, s *superblock) *descReader {
	nb := max(1, min(descBatch/s.blockSize, int64(s.descBlocks)))
	return &descReader{r: r, s: s, buf: make([]byte, nb*s.blockSize)}
}

// load reads descriptor block i and, where they are contiguous on disk, the
// ones after it.
func (d *descReader) load(i uint64) error {
	s := d.s
	n := uint64(1)
	if !s.hasMetaBG() || i < s.firstMetaBG {
		limit := s.descBlocks
		if s.hasMetaBG() {
			limit = s.firstMetaBG
		}
		n = min(uint64(int64(len(d.buf))/s.blockSize), limit-i)
	}
	loc := s.descBlockLoc(i)
	if loc >= s.blocksCount || n > s.blocksCount-loc {
		return s.errorf(sbOffset+sbBlocksCountLo, "group descriptor block %d at block %d lies outside the filesystem's %d blocks", i, loc, s.blocksCount)
	}
	off := int64(loc) * s.blockSize
	b := d.buf[:int64(n)*s.blockSize]
	if _, err := d.r.ReadAt(b, off); err != nil {
		return fmt.Errorf("%s: reading group descriptors at byte %d: %w", s.kind, off, err)
	}
	d.first, d.n = i, n
	return nil
}

// desc returns the descriptor of group g.
func (d *descReader) desc(g uint64) (groupDesc, error) {
	s := d.s
	i := g / s.descPerBlock
	if d.n == 0 || i < d.first || i >= d.first+d.n {
		if err := d.load(i); err != nil {
			return groupDesc{}, err
		}
	}
	off := int64(i-d.first)*s.blockSize + int64(g%s.descPerBlock)*s.descSize
	raw := d.buf[off : off+s.descSize]
	le := binary.LittleEndian
	gd := groupDesc{
		raw:          raw,
		blockBitmap:  uint64(le.Uint32(raw[bgBlockBitmapLo:])),
		inodeBitmap:  uint64(le.Uint32(raw[bgInodeBitmapLo:])),
		inodeTable:   uint64(le.Uint32(raw[bgInodeTableLo:])),
		flags:        le.Uint16(raw[bgFlags:]),
		freeClusters: uint64(le.Uint16(raw[bgFreeBlocksLo:])),
		csumOK:       true,
	}
	if s.descSize >= descSize64 {
		gd.blockBitmap |= uint64(le.Uint32(raw[bgBlockBitmapHi:])) << 32
		gd.inodeBitmap |= uint64(le.Uint32(raw[bgInodeBitmapHi:])) << 32
		gd.inodeTable |= uint64(le.Uint32(raw[bgInodeTableHi:])) << 32
		gd.freeClusters |= uint64(le.Uint16(raw[bgFreeBlocksHi:])) << 16
	}
	if s.gdtCsum {
		gd.csumOK = s.descChecksum(uint32(g), raw) == le.Uint16(raw[bgChecksum:])
	}
	return gd, nil
}

// descOffset returns the byte offset of group g's primary descriptor, for
// messages.
func (s *superblock) descOffset(g uint64) int64 {
	i := g / s.descPerBlock
	return int64(s.descBlockLoc(i))*s.blockSize + int64(g%s.descPerBlock)*s.descSize
}
