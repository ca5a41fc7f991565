package extfsmap

import (
	"encoding/binary"
	"errors"

	"github.com/prezero/prezero/freemap"
)

// Fast commits (ext4 fast_commit) log no bitmaps: an fsync'd allocation may
// exist only as an ADD_RANGE record in the journal's fast-commit area, and
// fast-commit replay (the kernel's ext4_fc_replay, e2fsck's ext4_fc_replay)
// marks it allocated afterwards. So when the area holds commits for the
// transactions being replayed, every cluster such a replay could mark is
// kept used:
//
//   - every ADD_RANGE extent, in every record of every block of the area
//     (stale or not, torn or not: more records only keep more);
//   - every extent and extent tree block of every inode a record names
//     (ADD_RANGE, DEL_RANGE, INODE, CREAT, LINK, UNLINK, parents included),
//     as the replayed state holds it: replay ends by marking all of them
//     (ext4_fc_set_bitmaps_and_counters);
//   - an INODE record's own extent root too, when it carries one.
//
// DEL_RANGE and UNLINK records, which free, are ignored. Records never
// span blocks (the writer pads the rest of a block), so each block is read
// on its own, up to its first record that does not parse.

// Fast-commit record tags (fs/ext4/fast_commit.h).
const (
	fcTagAddRange = 1
	fcTagDelRange = 2
	fcTagCreat    = 3
	fcTagLink     = 4
	fcTagUnlink   = 5
	fcTagInode    = 6
	fcTagPad      = 7
	fcTagTail     = 8
	fcTagHead     = 9

	maxFCInodes = 1 << 16
)

// fastCommitUsed adds to used what fast-commit replay could allocate; r
// reads the volume as jbd2 replay leaves it.
func (j *journalState) fastCommitUsed(r *replayReader, used *freemap.Builder) error {
	s, log := j.s, j.log
	le := binary.LittleEndian
	addBlocks := func(blk, n uint64) {
		if blk >= s.blocksCount || n == 0 {
			return
		}
		n = min(n, s.blocksCount-blk)
		used.Add(int64(blk)*s.blockSize, int64(n)*s.blockSize)
	}
	// extentRoot marks the extents of a depth-0 extent root (60 bytes).
	extentRoot := func(iblock []byte) {
		if le.Uint16(iblock[0:]) != extMagic || le.Uint16(iblock[6:]) != 0 {
			return
		}
		for i := range min(int(le.Uint16(iblock[2:])), 4) {
			e := iblock[12+12*i:]
			n := uint64(le.Uint16(e[4:]))
			if n > 32768 {
				n -= 32768
			}
			addBlocks(uint64(le.Uint16(e[6:]))<<32|uint64(le.Uint32(e[8:])), n)
		}
	}
	inodes := map[uint64]bool{}
	fcFlags := map[uint64]uint32{}
	buf := make([]byte, s.blockSize)
	for i := log.Last; i < log.MaxLen; i++ {
		if err := log.ReadBlock(i, buf); err != nil {
			return s.refuse(freemap.ErrUnsafe, "its fast-commit area cannot be read (%v)", err)
		}
		for off := 0; off+4 <= len(buf); {
			tag, n := le.Uint16(buf[off:]), int(le.Uint16(buf[off+2:]))
			val := buf[off+4:]
			if n > len(val) {
				break
			}
			val = val[:n]
			switch tag {
			case fcTagAddRange:
				if n < 16 {
					break
				}
				inodes[uint64(le.Uint32(val))] = true
				ln := uint64(le.Uint16(val[8:]))
				if ln > 32768 {
					ln -= 32768
				}
				addBlocks(uint64(le.Uint16(val[10:]))<<32|uint64(le.Uint32(val[12:])), ln)
			case fcTagDelRange:
				if n >= 4 {
					inodes[uint64(le.Uint32(val))] = true
				}
			case fcTagCreat, fcTagLink, fcTagUnlink:
				if n >= 8 {
					inodes[uint64(le.Uint32(val))] = true
					inodes[uint64(le.Uint32(val[4:]))] = true
				}
			case fcTagInode:
				if n >= 4 {
					inodes[uint64(le.Uint32(val))] = true
				}
				if n >= 4+inoFlags+4 {
					fcFlags[uint64(le.Uint32(val))] = le.Uint32(val[4+inoFlags:])
				}
				if n >= 4+inoBlock+60 && le.Uint32(val[4+inoFlags:])&inodeFlagExtents != 0 {
					extentRoot(val[4+inoBlock : 4+inoBlock+60])
				}
			case fcTagPad, fcTagTail, fcTagHead:
			default:
				off = len(buf) // not a record: the rest of the block is not either
				continue
			}
			off += 4 + n
		}
		if len(inodes) > maxFCInodes {
			return s.refuse(freemap.ErrUnsupported, "its fast-commit area names more than %d inodes", maxFCInodes)
		}
	}
	for ino := range inodes {
		if ino == 0 || ino > s.groups*s.inodesPerGroup {
			continue // replay cannot touch it either
		}
		// Replay takes i_flags from the last INODE record, and the extent
		// root from the inode as it stands (an invalid root becomes an
		// empty tree, rebuilt from ADD_RANGE records).
		o := inodeOpts{allBlocks: true}
		if f, ok := fcFlags[ino]; ok {
			o.flags = &f
		}
		fm, err := s.readInodeMapOpt(r, ino, 1<<32, o)
		if errors.Is(err, errBadExtentRoot) {
			continue
		}
		if err != nil {
			return s.refuse(freemap.ErrUnsafe, "inode %d, named by its fast-commit area, cannot be mapped (%v)", ino, err)
		}
		for _, e := range fm.extents {
			addBlocks(e.physical, e.count)
		}
		for _, b := range fm.meta {
			addBlocks(b, 1)
		}
	}
	return nil
}
