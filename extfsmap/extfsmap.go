// Package extfsmap reads the block allocation bitmaps of an ext2, ext3 or
// ext4 filesystem and returns the byte ranges they prove free.
//
// In prezero's pipeline it sits between layout (which finds the partition
// and hands it over as an io.ReaderAt of known size) and stream (which reads
// the partition back with every free range as zeros). It only reads; it
// never writes the source.
//
// The rule above all: unknown means allocated. A range goes into the
// freemap only when a bitmap that can be trusted says so:
//
//   - Anything the bitmaps do not cover passes through: the 1 KiB boot block
//     of 1 KiB-block filesystems, the padding bits of the last group, and the
//     part of the volume after the filesystem's last block.
//   - A group whose descriptor checksum or block bitmap checksum fails, or
//     whose bitmap lies somewhere impossible, is treated as fully used; it is
//     counted in Volume.Fallbacks and explained in Volume.Notes.
//   - A BLOCK_UNINIT group (honoured only when descriptors carry checksums
//     and that descriptor's verifies) is computed as libext2fs computes it:
//     free except for its superblock copy, descriptor and reserved GDT
//     blocks, and any group's bitmaps and inode table placed in it.
//   - Every group's bitmaps and inode table, superblock copy and descriptor
//     blocks are kept used even where a bitmap claims them free.
//   - Without checksums nothing vouches for a bitmap, so two witnesses are
//     asked: the descriptor's free count (a bitmap showing more free clusters
//     than it is not trusted) and the group 1 backup superblock (its
//     layout-defining fields must agree with the primary's).
//   - Whatever makes the bitmaps' meaning uncertain fails the whole volume:
//     an unknown INCOMPAT or RO_COMPAT feature, a journal needing recovery,
//     an unclean or MMP-busy filesystem, a filesystem larger than its
//     volume, a corrupt superblock. The caller then passes the whole volume
//     through.
//
// The result matches zerofree(8): on consistent filesystems the zeroed stream
// equals a zerofree'd copy byte for byte, except for the superblock fields
// that zerofree itself rewrites when it closes the filesystem (s_wtime,
// s_kbytes_written, s_checksum).
//
// Memory grows with the number of free extents and block groups, not with
// the volume size: bitmaps and descriptors are read a block or a batch at a
// time.
package extfsmap

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"

	"github.com/prezero/prezero/freemap"
)

// maxNotes caps Volume.Notes.
const maxNotes = 20

// Probe reports whether r looks like ext2/3/4: the superblock magic 0xEF53
// at byte 1024+0x38. It does no validation.
func Probe(r io.ReaderAt, size int64) bool {
	if size < sbOffset+sbSize {
		return false
	}
	var b [2]byte
	if _, err := r.ReadAt(b[:], sbOffset+sbMagicOff); err != nil {
		return false
	}
	return binary.LittleEndian.Uint16(b[:]) == sbMagic
}

// Volume is what Read learned.
type Volume struct {
	FS          string       // "ext2", "ext3" or "ext4", as blkid names them
	BlockSize   int          // bytes
	ClusterSize int          // bytes (== BlockSize unless bigalloc)
	Blocks      int64        // s_blocks_count
	FreeBlocks  int64        // s_free_blocks_count from the superblock (for reporting)
	Free        *freemap.Map // proven-free byte ranges relative to the volume start; Free.Size() == size
	Fallbacks   int          // groups treated as fully used because something could not be trusted
	Notes       []string     // reasons for the fallbacks and other remarks, capped
	CrossCheck  CrossCheckResult
}

// Read maps the filesystem in r, a volume of size bytes, with the default
// Options. An error means the whole volume must be passed through; its
// message says why.
func Read(r io.ReaderAt, size int64) (*Volume, error) {
	return ReadWith(r, size, Options{})
}

// ReadWith is Read with options.
func ReadWith(r io.ReaderAt, size int64, opt Options) (*Volume, error) {
	if size < sbOffset+sbSize {
		return nil, freemap.Formatf(0, "ext: volume of %d bytes is too small to hold a superblock", size)
	}
	b := make([]byte, sbSize)
	if _, err := r.ReadAt(b, sbOffset); err != nil {
		return nil, fmt.Errorf("ext: reading superblock: %w", err)
	}
	s, err := parseSuperblock(b, size)
	if err != nil {
		return nil, err
	}
	if err := s.checkBackup(r, b); err != nil {
		return nil, err
	}
	m := &mapper{r: r, s: s, out: freemap.NewBuilder(size)}
	if s.state&stateErrors != 0 {
		m.note("the filesystem has errors recorded (s_state %#x); mapped from its bitmaps anyway, as zerofree does; consider e2fsck", s.state)
	}
	if x := s.compat &^ knownCompat; x != 0 {
		m.note("unknown COMPAT features %#x ignored (compatible by definition)", x)
	}
	if err := m.checkMMP(); err != nil {
		return nil, err
	}
	meta, err := m.metadata()
	if err != nil {
		return nil, err
	}
	if err := m.mapGroups(meta); err != nil {
		return nil, err
	}
	meta.Release()
	free := m.out.Map()
	var cc CrossCheckResult
	if opt.CrossCheck == CrossCheckOn || opt.CrossCheck == CrossCheckAuto && !s.metadataCsum {
		checked, res, err := m.crossCheck(free, b)
		if err != nil {
			free.Release()
			return nil, err
		}
		if checked != free {
			free.Release()
			free = checked
		}
		cc = res
		if res.Conflicts > 0 {
			m.note("cross-check: %d blocks that inodes use are marked free in the block bitmap; kept (the bitmap is wrong: run e2fsck -f)", res.Conflicts)
		}
		if res.UnreadableTree > 0 {
			m.note("cross-check: the block references of %d in-use inodes could not be read (the bitmap alone decides there)", res.UnreadableTree)
		}
	}
	if m.dropped > 0 {
		m.notes = append(m.notes, fmt.Sprintf("... and %d more", m.dropped))
	}
	return &Volume{
		FS:          s.kind,
		BlockSize:   int(s.blockSize),
		ClusterSize: int(s.clusterSize),
		Blocks:      int64(s.blocksCount),
		FreeBlocks:  int64(min(s.freeBlocks, math.MaxInt64)),
		Free:        free,
		CrossCheck:  cc,
		Fallbacks:   m.fallbacks,
		Notes:       m.notes,
	}, nil
}

// knownCompat lists the COMPAT features of e2fsprogs 1.47 (for notes only).
const knownCompat = 0x1FFF

// mapper holds the state of one Read.
type mapper struct {
	r         io.ReaderAt
	s         *superblock
	out       *freemap.Builder
	fallbacks int
	notes     []string
	dropped   int
}

func (m *mapper) note(format string, args ...any) {
	if len(m.notes) >= maxNotes {
		m.dropped++
		return
	}
	m.notes = append(m.notes, fmt.Sprintf(format, args...))
}

// fallback records that group g is passed through whole.
func (m *mapper) fallback(g uint64, format string, args ...any) {
	m.fallbacks++
	m.note("group %d treated as used: %s", g, fmt.Sprintf(format, args...))
}

// MMP (multiple mount protection) block fields.
const (
	mmpMagic    = 0x004D4D50
	mmpSeqClean = 0xFF4D4D50
	mmpSeqFsck  = 0xE24D4D50
)

// checkMMP refuses a filesystem whose MMP block says a node is using it.
func (m *mapper) checkMMP() error {
	s := m.s
	if s.incompat&incompatMMP == 0 {
		return nil
	}
	var b [8]byte
	off := int64(s.mmpBlock) * s.blockSize
	if _, err := m.r.ReadAt(b[:], off); err != nil {
		return fmt.Errorf("%s: reading MMP block: %w", s.kind, err)
	}
	if magic := binary.LittleEndian.Uint32(b[0:]); magic != mmpMagic {
		return s.errorf(off, "MMP block has bad magic %#x", magic)
	}
	switch seq := binary.LittleEndian.Uint32(b[4:]); seq {
	case mmpSeqClean:
		return nil
	case mmpSeqFsck:
		return s.unsafe("MMP block says e2fsck is running on it")
	default:
		return s.unsafe("MMP block says it is in use (sequence %#x): it may be mounted on another node", seq)
	}
}

// metadata returns every group's block bitmap, inode bitmap and inode table
// as one sorted extent set (in bytes). Locations outside the filesystem are
// dropped; they protect nothing.
func (m *mapper) metadata() (*freemap.Map, error) {
	s := m.s
	fsb := s.fsBytes()
	// Without flex_bg a group's bitmaps and inode table are adjacent, so
	// one builder merges them as they come. With flex_bg each kind is
	// packed with its own kind, so one builder per kind merges those runs.
	// Either way memory stays small in every normal layout.
	var kinds [3]*freemap.Builder
	kinds[0] = freemap.NewBuilder(fsb)
	kinds[1], kinds[2] = kinds[0], kinds[0]
	if s.incompat&incompatFlexBG != 0 {
		kinds[1], kinds[2] = freemap.NewBuilder(fsb), freemap.NewBuilder(fsb)
	}
	add := func(b *freemap.Builder, blk, n uint64) {
		if blk == 0 || blk >= s.blocksCount {
			return
		}
		n = min(n, s.blocksCount-blk)
		b.Add(int64(blk)*s.blockSize, int64(n)*s.blockSize)
	}
	d := newDescReader(m.r, s)
	for g := range s.groups {
		gd, err := d.desc(g)
		if err != nil {
			return nil, err
		}
		add(kinds[0], gd.blockBitmap, 1)
		add(kinds[1], gd.inodeBitmap, 1)
		add(kinds[2], gd.inodeTable, s.itableBlocks)
	}
	if kinds[1] == kinds[0] {
		return kinds[0].Map(), nil
	}
	all := freemap.NewBuilder(fsb)
	for _, k := range kinds {
		all.AddMap(k.Map(), 0)
	}
	return all.Map(), nil
}
