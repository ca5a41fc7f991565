package extfsmap

import (
	"encoding/binary"
	"fmt"

	"github.com/prezero/prezero/freemap"
)

// The cross-check walks every in-use inode's block references (extent
// trees, direct and indirect block maps, the xattr block; the journal and
// resize inodes are inodes like the others) and keeps used every block that
// a file references but the block bitmap marks free. Without bitmap
// checksums a corrupted bitmap byte that swaps a used and a free block keeps
// the group's free count right, and only this finds it (as e2fsck -f does).

// Inode fields and flags.
const (
	inodeMode      = 0x00
	inodeSizeLo    = 0x04
	inodeFlags     = 0x20
	inodeBlock     = 0x28 // i_block[15], 60 bytes
	inodeFileACLLo = 0x68
	inodeFileACLHi = 0x76

	flagExtents    = 0x80000
	flagInlineData = 0x10000000

	extentMagic    = 0xF30A
	maxExtentDepth = 5

	bgFreeInodesL   = 0x0E
	bgFreeInodesH   = 0x2E
	bgItableUnusedL = 0x1C
	bgItableUnusedH = 0x32
)

// CrossCheck chooses whether Read cross-checks the block bitmaps against the
// inodes' block references.
type CrossCheck int

const (
	// CrossCheckAuto cross-checks filesystems without bitmap checksums
	// (ext2, ext3, ext4 without metadata_csum).
	CrossCheckAuto CrossCheck = iota
	// CrossCheckOn always cross-checks.
	CrossCheckOn
	// CrossCheckOff never does.
	CrossCheckOff
)

// Options change how Read maps a filesystem. The zero value is the default.
type Options struct {
	CrossCheck CrossCheck
}

// CrossCheckResult says what the cross-check found.
type CrossCheckResult struct {
	Done           bool  // the cross-check ran
	Inodes         int64 // in-use inodes whose references were read
	Conflicts      int64 // blocks referenced by an inode but marked free, kept used
	BadReferences  int64 // references outside the filesystem (ignored)
	UnreadableTree int64 // inodes whose extent tree or block map was not valid
}

// checker holds the state of one cross-check.
type checker struct {
	m         *mapper
	free      *freemap.Map
	conflicts *freemap.Builder
	res       CrossCheckResult
	reads     int64 // indirect and index blocks read
	maxReads  int64
	buf       [maxExtentDepth + 4][]byte // one block buffer per tree level
}

// crossCheck returns free without the blocks that in-use inodes reference.
func (m *mapper) crossCheck(free *freemap.Map, sb []byte) (*freemap.Map, CrossCheckResult, error) {
	s := m.s
	le := binary.LittleEndian
	c := &checker{m: m, free: free, conflicts: freemap.NewBuilder(free.Size())}
	c.maxReads = int64(s.blocksCount) + 1024 // a real filesystem reads each tree block once
	for i := range c.buf {
		c.buf[i] = make([]byte, s.blockSize)
	}
	inodesCount := uint64(le.Uint32(sb[sbInodesCount:]))
	ipg := s.inodesPerGroup
	isz := int64(s.inodeSize)
	if ipg == 0 || isz < 128 {
		return nil, c.res, s.errorf(sbOffset, "cross-check: %d inodes per group of %d bytes", ipg, isz)
	}
	ibm := make([]byte, s.blockSize)
	const batch = 1 << 20
	table := make([]byte, max(batch/isz, 1)*isz)
	d := newDescReader(m.r, s)
	for g := range s.groups {
		gd, err := d.desc(g)
		if err != nil {
			return nil, c.res, err
		}
		n := ipg
		if s.gdtCsum {
			if gd.flags&bgInodeUninit != 0 {
				continue
			}
			unused := uint64(binary.LittleEndian.Uint16(gd.raw[bgItableUnusedL:]))
			if s.descSize >= descSize64 {
				unused |= uint64(binary.LittleEndian.Uint16(gd.raw[bgItableUnusedH:])) << 16
			}
			n -= min(unused, n)
		}
		if first := g * ipg; first >= inodesCount {
			break
		} else {
			n = min(n, inodesCount-first)
		}
		// A group whose descriptor counts every inode free has none to
		// walk (the cross-check adds safety; it need not distrust this).
		freeInodes := uint64(binary.LittleEndian.Uint16(gd.raw[bgFreeInodesL:]))
		if s.descSize >= descSize64 {
			freeInodes |= uint64(binary.LittleEndian.Uint16(gd.raw[bgFreeInodesH:])) << 16
		}
		if freeInodes >= ipg {
			continue
		}
		// The inode bitmap says which inodes are in use; without a
		// readable one, every inode with a mode is looked at.
		haveBitmap := gd.inodeBitmap != 0 && gd.inodeBitmap < s.blocksCount
		if haveBitmap {
			if _, err := m.r.ReadAt(ibm, int64(gd.inodeBitmap)*s.blockSize); err != nil {
				return nil, c.res, fmt.Errorf("%s: cross-check: reading inode bitmap of group %d: %w", s.kind, g, err)
			}
		}
		if gd.inodeTable == 0 || gd.inodeTable+s.itableBlocks > s.blocksCount {
			c.res.UnreadableTree += int64(n)
			continue
		}
		base := int64(gd.inodeTable) * s.blockSize
		// Read only the runs of in-use inodes, a batch at a time: a large,
		// mostly empty filesystem has gigabytes of unused inode table.
		inUse := func(idx uint64) bool { return !haveBitmap || ibm[idx>>3]&(1<<(idx&7)) != 0 }
		for i := uint64(0); i < n; {
			if !inUse(i) {
				i++
				continue
			}
			k := uint64(1)
			for k < uint64(len(table))/uint64(isz) && i+k < n && inUse(i+k) {
				k++
			}
			p := table[:int64(k)*isz]
			if _, err := m.r.ReadAt(p, base+int64(i)*isz); err != nil {
				return nil, c.res, fmt.Errorf("%s: cross-check: reading inode table of group %d: %w", s.kind, g, err)
			}
			for j := uint64(0); j < k; j++ {
				if err := c.inode(p[int64(j)*isz : int64(j+1)*isz]); err != nil {
					return nil, c.res, err
				}
			}
			i += k
		}
	}
	c.res.Done = true
	conf := c.conflicts.Map()
	defer conf.Release()
	if conf.FreeBytes() == 0 {
		return free, c.res, nil
	}
	c.res.Conflicts = conf.FreeBytes() / s.blockSize
	return free.Without(conf), c.res, nil
}

// inode walks one in-use inode's references.
func (c *checker) inode(in []byte) error {
	le := binary.LittleEndian
	mode := le.Uint16(in[inodeMode:])
	if mode == 0 {
		return nil
	}
	c.res.Inodes++
	flags := le.Uint32(in[inodeFlags:])
	if acl := uint64(le.Uint32(in[inodeFileACLLo:])) | uint64(le.Uint16(in[inodeFileACLHi:]))<<32; acl != 0 {
		c.ref(acl, 1)
	}
	if flags&flagInlineData != 0 {
		return nil
	}
	iblock := in[inodeBlock : inodeBlock+60]
	switch mode & 0xF000 {
	case 0x1000, 0x2000, 0x6000, 0xC000: // fifo, char, block device, socket
		return nil
	case 0xA000: // a fast symlink keeps its target in i_block
		if flags&flagExtents == 0 && le.Uint32(in[inodeSizeLo:]) < 60 {
			return nil
		}
	}
	if flags&flagExtents != 0 {
		ok, err := c.extents(iblock, maxExtentDepth+1)
		if err == nil && !ok {
			c.res.UnreadableTree++
		}
		return err
	}
	for i := 0; i < 12; i++ {
		c.ref(uint64(le.Uint32(iblock[4*i:])), 1)
	}
	for lvl := 1; lvl <= 3; lvl++ {
		if err := c.indirect(uint64(le.Uint32(iblock[4*(11+lvl):])), lvl); err != nil {
			return err
		}
	}
	return nil
}

// extents walks an extent tree node; ok is false if it is not valid.
func (c *checker) extents(node []byte, maxDepth int) (bool, error) {
	le := binary.LittleEndian
	if len(node) < 12 || le.Uint16(node[0:]) != extentMagic {
		return false, nil
	}
	entries, depth := int(le.Uint16(node[2:])), int(le.Uint16(node[6:]))
	if depth >= maxDepth || 12+12*entries > len(node) {
		return false, nil
	}
	for i := 0; i < entries; i++ {
		e := node[12+12*i:]
		if depth == 0 {
			n := uint64(le.Uint16(e[4:]))
			if n > 32768 {
				n -= 32768 // unwritten extent: allocated all the same
			}
			c.ref(uint64(le.Uint32(e[8:]))|uint64(le.Uint16(e[6:]))<<32, n)
			continue
		}
		leaf := uint64(le.Uint32(e[4:])) | uint64(le.Uint16(e[8:]))<<32
		c.ref(leaf, 1)
		b, err := c.read(leaf, depth)
		if err != nil || b == nil {
			return false, err
		}
		if le.Uint16(b[6:]) != uint16(depth-1) {
			return false, nil
		}
		if ok, err := c.extents(b, depth); err != nil || !ok {
			return ok, err
		}
	}
	return true, nil
}

// indirect walks an indirect block of the given level (1 single, 2 double,
// 3 triple).
func (c *checker) indirect(blk uint64, level int) error {
	if blk == 0 {
		return nil
	}
	c.ref(blk, 1)
	b, err := c.read(blk, level)
	if err != nil || b == nil {
		return err
	}
	le := binary.LittleEndian
	for i := 0; i+4 <= len(b); i += 4 {
		p := uint64(le.Uint32(b[i:]))
		if level == 1 {
			c.ref(p, 1)
		} else if err := c.indirect(p, level-1); err != nil {
			return err
		}
	}
	return nil
}

// read reads tree block blk into the buffer of its level; nil, nil if blk
// is outside the filesystem.
func (c *checker) read(blk uint64, level int) ([]byte, error) {
	s := c.m.s
	if blk == 0 || blk >= s.blocksCount || level >= len(c.buf) {
		return nil, nil
	}
	c.reads++
	if c.reads > c.maxReads {
		return nil, freemap.Unsafe("%s: cross-check read more tree blocks (%d) than the filesystem has: its inodes reference blocks in loops", s.kind, c.reads)
	}
	b := c.buf[level]
	if _, err := c.m.r.ReadAt(b, int64(blk)*s.blockSize); err != nil {
		return nil, fmt.Errorf("%s: cross-check: reading block %d: %w", s.kind, blk, err)
	}
	return b, nil
}

// ref records that blocks [blk, blk+n) are in use: any part of them the
// bitmap marks free is a conflict, kept used (widened to whole clusters).
func (c *checker) ref(blk, n uint64) {
	s := c.m.s
	if blk == 0 || n == 0 {
		return
	}
	if blk >= s.blocksCount || n > s.blocksCount-blk {
		c.res.BadReferences++
		return
	}
	cs := s.clusterSize
	off := int64(blk) * s.blockSize / cs * cs
	end := (int64(blk+n)*s.blockSize + cs - 1) / cs * cs
	for e, ok := c.free.Next(off); ok && e.Off < end; e, ok = c.free.Next(e.End()) {
		a, b := max(e.Off, off), min(e.End(), end)
		c.conflicts.Add(a, b-a)
	}
}
