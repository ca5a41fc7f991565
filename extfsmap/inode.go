package extfsmap

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sort"
)

// Reading one inode's block mapping: what the journal replay needs to find
// the internal journal (s_journal_inum) as the kernel finds it at mount,
// before replay: through the on-disk inode, its extent tree or its block map.

// Inode field offsets (struct ext4_inode).
const (
	inoSizeLo      = 0x04
	inoFlags       = 0x20
	inoBlock       = 0x28 // i_block[15], 60 bytes
	inoGeneration  = 0x64
	inoSizeHigh    = 0x6C
	inoChecksumLo  = 0x7C
	inoExtraIsize  = 0x80
	inoChecksumHi  = 0x82
	inoGoodOldSize = 128

	inodeFlagExtents = 0x80000

	extMagic    = 0xF30A
	extMaxDepth = 5
)

// fileExtent maps count logical blocks from logical to physical.
type fileExtent struct {
	logical, physical, count uint64
}

// fileMap is the block mapping of one inode.
type fileMap struct {
	extents []fileExtent // sorted by logical, non-overlapping
	meta    []uint64     // extent tree or indirect blocks
	size    uint64       // i_size in bytes

	unwritten bool // accept unwritten (preallocated) extents
}

// maxFileExtents caps the mapping of the journal inode (a journal is a
// handful of extents; a block-mapped one of ext3 coalesces the same way).
const maxFileExtents = 1 << 16

// readInodeMap reads inode ino (from the on-disk inode table) and returns
// the mapping of its first maxBlocks logical blocks.
func (s *superblock) readInodeMap(r io.ReaderAt, ino uint64, maxBlocks uint64) (*fileMap, error) {
	return s.readInodeMapOpt(r, ino, maxBlocks, inodeOpts{verify: true})
}

// inodeOpts changes how readInodeMapOpt reads an inode.
type inodeOpts struct {
	verify    bool    // check the inode and extent block checksums
	allBlocks bool    // map blocks past i_size and unwritten extents too
	flags     *uint32 // use these i_flags instead of the inode's own
}

// errBadExtentRoot: an extent-mapped inode whose root header is not one.
var errBadExtentRoot = errors.New("extent root has bad magic")

// readInodeMapOpt is readInodeMap with options.
func (s *superblock) readInodeMapOpt(r io.ReaderAt, ino uint64, maxBlocks uint64, o inodeOpts) (*fileMap, error) {
	if ino == 0 || ino > s.groups*s.inodesPerGroup {
		return nil, s.errorf(sbOffset+0xE0, "inode %d out of range", ino)
	}
	g, idx := (ino-1)/s.inodesPerGroup, (ino-1)%s.inodesPerGroup
	gd, err := newDescReader(r, s).desc(g)
	if err != nil {
		return nil, err
	}
	if !gd.csumOK {
		return nil, s.errorf(s.descOffset(g), "descriptor of group %d, which holds inode %d, fails its checksum", g, ino)
	}
	if gd.inodeTable < s.firstDataBlock || gd.inodeTable >= s.blocksCount || s.itableBlocks > s.blocksCount-gd.inodeTable {
		return nil, s.errorf(s.descOffset(g), "inode table of group %d at block %d lies outside the filesystem", g, gd.inodeTable)
	}
	off := int64(gd.inodeTable)*s.blockSize + int64(idx*s.inodeSize)
	raw := make([]byte, s.inodeSize)
	if _, err := r.ReadAt(raw, off); err != nil {
		return nil, fmt.Errorf("%s: reading inode %d at byte %d: %w", s.kind, ino, off, err)
	}
	le := binary.LittleEndian
	var seed uint32
	if s.metadataCsum && o.verify {
		var nb [4]byte
		le.PutUint32(nb[:], uint32(ino))
		seed = crc32c(s.csumSeed, nb[:])
		seed = crc32c(seed, raw[inoGeneration:inoGeneration+4])
		if !s.inodeChecksumOK(raw, seed) {
			return nil, s.errorf(off, "inode %d fails its checksum", ino)
		}
	}
	fm := &fileMap{size: uint64(le.Uint32(raw[inoSizeLo:])) | uint64(le.Uint32(raw[inoSizeHigh:]))<<32, unwritten: o.allBlocks}
	if !o.allBlocks {
		maxBlocks = min(maxBlocks, (fm.size+uint64(s.blockSize)-1)/uint64(s.blockSize))
	}
	flags := le.Uint32(raw[inoFlags:])
	if o.flags != nil {
		flags = *o.flags
	}
	if flags&inodeFlagExtents != 0 {
		if le.Uint16(raw[inoBlock:]) != extMagic {
			return nil, fmt.Errorf("%s: inode %d: %w", s.kind, ino, errBadExtentRoot)
		}
		err = s.walkExtents(r, fm, raw[inoBlock:inoBlock+60], extMaxDepth+1, seed, off, maxBlocks)
	} else {
		err = s.walkBlockMap(r, fm, raw[inoBlock:inoBlock+60], off, maxBlocks)
	}
	if err != nil {
		return nil, err
	}
	sort.Slice(fm.extents, func(i, j int) bool { return fm.extents[i].logical < fm.extents[j].logical })
	for i := 1; i < len(fm.extents); i++ {
		if a, b := fm.extents[i-1], fm.extents[i]; a.logical+a.count > b.logical {
			return nil, s.errorf(off, "inode %d maps logical block %d twice", ino, b.logical)
		}
	}
	return fm, nil
}

// inodeChecksumOK verifies i_checksum_lo/hi as ext4_inode_csum does.
func (s *superblock) inodeChecksumOK(raw []byte, seed uint32) bool {
	le := binary.LittleEndian
	zero := []byte{0, 0}
	c := crc32c(seed, raw[:inoChecksumLo])
	c = crc32c(c, zero)
	c = crc32c(c, raw[inoChecksumLo+2:inoGoodOldSize])
	hasHi := false
	if len(raw) > inoGoodOldSize {
		extra := uint64(le.Uint16(raw[inoExtraIsize:]))
		hasHi = inoGoodOldSize+extra >= inoChecksumHi+2
		c = crc32c(c, raw[inoGoodOldSize:inoChecksumHi])
		if hasHi {
			c = crc32c(c, zero)
			c = crc32c(c, raw[inoChecksumHi+2:])
		} else {
			c = crc32c(c, raw[inoChecksumHi:])
		}
	}
	want := uint32(le.Uint16(raw[inoChecksumLo:]))
	if hasHi {
		want |= uint32(le.Uint16(raw[inoChecksumHi:])) << 16
		return c == want
	}
	return c&0xFFFF == want
}

// addExtent records a mapping, checked against the filesystem's size.
func (s *superblock) addExtent(fm *fileMap, logical, physical, count uint64, at int64, maxBlocks uint64) error {
	if logical >= maxBlocks || count == 0 {
		return nil
	}
	count = min(count, maxBlocks-logical)
	if physical < s.firstDataBlock || physical >= s.blocksCount || count > s.blocksCount-physical {
		return s.errorf(at, "logical block %d maps to block %d, outside the filesystem", logical, physical)
	}
	if n := len(fm.extents); n > 0 {
		if e := &fm.extents[n-1]; e.logical+e.count == logical && e.physical+e.count == physical {
			e.count += count
			return nil
		}
	}
	if len(fm.extents) >= maxFileExtents {
		return s.unsupported("the journal inode has more than %d extents", maxFileExtents)
	}
	fm.extents = append(fm.extents, fileExtent{logical, physical, count})
	return nil
}

// walkExtents walks an extent tree node (the inode's i_block or a tree
// block); depthLeft bounds the recursion.
func (s *superblock) walkExtents(r io.ReaderAt, fm *fileMap, node []byte, depthLeft int, seed uint32, at int64, maxBlocks uint64) error {
	le := binary.LittleEndian
	if le.Uint16(node[0:]) != extMagic {
		return s.errorf(at, "extent header has bad magic %#x", le.Uint16(node[0:]))
	}
	entries, maxEntries, depth := int(le.Uint16(node[2:])), int(le.Uint16(node[4:])), int(le.Uint16(node[6:]))
	if entries > maxEntries || 12+12*maxEntries > len(node) || depth >= depthLeft {
		return s.errorf(at, "extent header (entries %d, max %d, depth %d) is impossible", entries, maxEntries, depth)
	}
	for i := range entries {
		e := node[12+12*i:]
		logical := uint64(le.Uint32(e[0:]))
		if depth == 0 {
			n := uint64(le.Uint16(e[4:]))
			if n > 32768 {
				if !fm.unwritten {
					// An unwritten extent: jbd2 could not use it.
					return s.unsupported("the journal inode has an unwritten extent at block %d", logical)
				}
				n -= 32768
			}
			phys := uint64(le.Uint16(e[6:]))<<32 | uint64(le.Uint32(e[8:]))
			if err := s.addExtent(fm, logical, phys, n, at, maxBlocks); err != nil {
				return err
			}
			continue
		}
		child := uint64(le.Uint32(e[4:])) | uint64(le.Uint16(e[8:]))<<32
		if child < s.firstDataBlock || child >= s.blocksCount {
			return s.errorf(at, "extent index points to block %d, outside the filesystem", child)
		}
		if logical >= maxBlocks {
			continue
		}
		fm.meta = append(fm.meta, child)
		if len(fm.meta) > maxFileExtents {
			return s.unsupported("the journal inode's extent tree has more than %d blocks", maxFileExtents)
		}
		b := make([]byte, s.blockSize)
		off := int64(child) * s.blockSize
		if _, err := r.ReadAt(b, off); err != nil {
			return fmt.Errorf("%s: reading extent block at byte %d: %w", s.kind, off, err)
		}
		if s.metadataCsum && seed != 0 {
			mx := int(le.Uint16(b[4:]))
			t := 12 + 12*mx
			if t+4 > len(b) || crc32c(seed, b[:t]) != le.Uint32(b[t:]) {
				return s.errorf(off, "extent block fails its checksum")
			}
		}
		if err := s.walkExtents(r, fm, b, depth, seed, off, maxBlocks); err != nil {
			return err
		}
	}
	return nil
}

// walkBlockMap walks the classic block map: 12 direct blocks, then single,
// double and triple indirect blocks.
func (s *superblock) walkBlockMap(r io.ReaderAt, fm *fileMap, iblock []byte, at int64, maxBlocks uint64) error {
	le := binary.LittleEndian
	per := uint64(s.blockSize / 4)
	var logical uint64
	for i := range 12 {
		if p := uint64(le.Uint32(iblock[4*i:])); p != 0 {
			if err := s.addExtent(fm, logical, p, 1, at, maxBlocks); err != nil {
				return err
			}
		}
		logical++
	}
	span := per
	for level := 1; level <= 3; level++ {
		p := uint64(le.Uint32(iblock[4*(11+level):]))
		if logical >= maxBlocks {
			break
		}
		if p != 0 {
			if err := s.walkIndirect(r, fm, p, level, logical, at, maxBlocks); err != nil {
				return err
			}
		}
		logical += span
		span *= per
	}
	return nil
}

func (s *superblock) walkIndirect(r io.ReaderAt, fm *fileMap, blk uint64, level int, logical uint64, at int64, maxBlocks uint64) error {
	if blk < s.firstDataBlock || blk >= s.blocksCount {
		return s.errorf(at, "indirect block %d outside the filesystem", blk)
	}
	fm.meta = append(fm.meta, blk)
	if len(fm.meta) > maxFileExtents {
		return s.unsupported("the journal inode has more than %d indirect blocks", maxFileExtents)
	}
	b := make([]byte, s.blockSize)
	off := int64(blk) * s.blockSize
	if _, err := r.ReadAt(b, off); err != nil {
		return fmt.Errorf("%s: reading indirect block at byte %d: %w", s.kind, off, err)
	}
	le := binary.LittleEndian
	per := uint64(s.blockSize / 4)
	span := uint64(1)
	for range level - 1 {
		span *= per
	}
	for i := range per {
		l := logical + i*span
		if l >= maxBlocks {
			break
		}
		p := uint64(le.Uint32(b[4*i:]))
		if p == 0 {
			continue
		}
		var err error
		if level == 1 {
			err = s.addExtent(fm, l, p, 1, off, maxBlocks)
		} else {
			err = s.walkIndirect(r, fm, p, level-1, l, off, maxBlocks)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// fileReader reads a mapped file's bytes from the volume. A hole is an
// error: jbd2 cannot read through one either.
type fileReader struct {
	r    io.ReaderAt
	bs   int64
	fm   *fileMap
	size int64
}

func (f *fileReader) ReadAt(p []byte, off int64) (int, error) {
	n := 0
	for n < len(p) {
		o := off + int64(n)
		if o < 0 || o >= f.size {
			return n, io.EOF
		}
		lb := uint64(o / f.bs)
		i := sort.Search(len(f.fm.extents), func(i int) bool {
			e := f.fm.extents[i]
			return e.logical+e.count > lb
		})
		if i == len(f.fm.extents) || f.fm.extents[i].logical > lb {
			return n, fmt.Errorf("journal block %d is not mapped", lb)
		}
		e := f.fm.extents[i]
		inner := o - int64(e.logical)*f.bs
		chunk := min(int64(len(p)-n), int64(e.count)*f.bs-inner, f.size-o)
		m, err := f.r.ReadAt(p[n:n+int(chunk)], int64(e.physical)*f.bs+inner)
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}
