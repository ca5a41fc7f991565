package extfsmap

// Where the superblock copies and group descriptor tables lie, as
// e2fsprogs' ext2fs_bg_has_super, ext2fs_super_and_bgd_loc2 and
// ext2fs_reserve_super_and_bgd (lib/ext2fs/closefs.c, alloc_sb.c) compute
// them. These blocks are what a BLOCK_UNINIT group's bitmap marks used,
// besides the inode tables and bitmaps placed in it.

// blockRange is a half-open range of block numbers [start, end).
type blockRange struct{ start, end uint64 }

// hasSuper reports whether group g holds a superblock copy.
func (s *superblock) hasSuper(g uint64) bool {
	if g == 0 {
		return true
	}
	if s.hasSparse2() {
		return g == uint64(s.backupBGs[0]) || g == uint64(s.backupBGs[1])
	}
	if g <= 1 || !s.hasSparse() {
		return true
	}
	if g&1 == 0 {
		return false
	}
	return isPower(g, 3) || isPower(g, 5) || isPower(g, 7)
}

// isPower reports whether n is a power of b (n >= 1).
func isPower(n, b uint64) bool {
	if n == 0 {
		return false
	}
	for n%b == 0 {
		n /= b
	}
	return n == 1
}

// groupFirstBlock returns the first block of group g.
func (s *superblock) groupFirstBlock(g uint64) uint64 {
	return s.firstDataBlock + g*s.blocksPerGroup
}

// sbBlock returns the block where group g's superblock copy (if any) and
// descriptors start counting from: the group's first block, except that
// with 1 KiB blocks and bigalloc group 0 starts at block 0 while the
// superblock is block 1.
func (s *superblock) sbBlock(g uint64) uint64 {
	b := s.groupFirstBlock(g)
	if b == 0 && s.blockSize == 1024 {
		b = 1
	}
	return b
}

// oldDescBlocks returns the number of blocks following a superblock copy
// that hold (or are reserved for) the classic descriptor table.
//
// libext2fs counts s_first_meta_bg with meta_bg and desc_blocks +
// s_reserved_gdt_blocks without; the kernel (ext4_num_base_meta_clusters)
// adds s_reserved_gdt_blocks in both cases. We take the union: unknown means
// allocated.
func (s *superblock) oldDescBlocks() uint64 {
	if s.hasMetaBG() {
		return s.firstMetaBG + s.reservedGDT
	}
	return s.descBlocks + s.reservedGDT
}

// superAndBGD returns the block ranges of group g used by the superblock
// copy, the group descriptor blocks and the reserved GDT blocks, clipped to
// the filesystem. For group 0 it includes everything from block 0 (the boot
// block with 1 KiB blocks, which is outside every bitmap anyway).
func (s *superblock) superAndBGD(g uint64, out []blockRange) []blockRange {
	out = out[:0]
	gb := s.sbBlock(g)
	has := s.hasSuper(g)
	add := func(start, n uint64) {
		end := start + n
		if end > s.blocksCount {
			end = s.blocksCount
		}
		if start < end {
			out = append(out, blockRange{start, end})
		}
	}
	if g == 0 {
		add(0, gb+1)
	} else if has {
		add(gb, 1)
	}
	metaBG := g / s.descPerBlock
	if !s.hasMetaBG() || metaBG < s.firstMetaBG {
		if has {
			add(gb+1, s.oldDescBlocks())
		}
	} else if r := g % s.descPerBlock; r == 0 || r == 1 || r == s.descPerBlock-1 {
		n := uint64(0)
		if has {
			n = 1
		}
		add(gb+n, 1)
	}
	return out
}

// descBlockLoc returns the block holding primary descriptor block i, as
// ext2fs_descriptor_block_loc2 does for the primary superblock (and as
// ext2fs_flush writes them).
func (s *superblock) descBlockLoc(i uint64) uint64 {
	if !s.hasMetaBG() || i < s.firstMetaBG {
		return s.sbBlock(0) + 1 + i
	}
	bg := s.descPerBlock * i
	b := s.sbBlock(bg)
	if s.hasSuper(bg) {
		b++
	}
	return b
}
