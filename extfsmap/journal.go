package extfsmap

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"

	"github.com/prezero/prezero/extfsmap/internal/jbd2"
	"github.com/prezero/prezero/freemap"
)

// A filesystem with needs_recovery set (mounted, or crashed, when it was
// copied) is mapped by replaying its journal in memory, never on the source:
//
//  1. The internal journal is found through the on-disk journal inode, as
//     the kernel finds it at mount; jbd2 runs the scan, revoke and replay
//     passes and says which logged copy of which block recovery writes.
//  2. The volume is read through an overlay of those copies (the state that
//     e2fsck or the kernel leaves after replay), and mapped as usual.
//  3. The union rule: a cluster stays free only if it is also free in every
//     other version of its group's bitmap that replay could leave or that
//     the log holds: the on-disk bitmap and every logged copy of the
//     bitmap block (committed or not, revoked or not), found through every
//     version of the group's descriptor (on disk and logged). So if prezero
//     and jbd2 ever disagreed on where replay stops, no cluster that any
//     prefix of the replay allocates is zeroed.
//  4. The journal's own blocks are always used, and it is passed through
//     untouched: a restored image replays exactly as the original would.
//
// When the fast-commit area holds commits for the replayed transactions,
// every cluster their replay could allocate is kept too (fastcommit.go).
//
// Anything else passes the volume through: an external journal, a journal
// that cannot be read or that jbd2 would fail to recover, a fast-commit
// record naming an inode that cannot be mapped, a logged superblock whose
// geometry differs (a resize in flight), a replayed block outside the
// filesystem.

// Replay describes an in-memory journal replay (Volume.Journal).
type Replay struct {
	Transactions int    `json:"transactions"`   // transactions replayed
	Blocks       int    `json:"blocks"`         // distinct blocks written by replay
	Copies       int    `json:"logged_copies"`  // block copies in the walked log
	Revokes      int    `json:"revoke_records"` // revoke records in the replayed transactions
	FirstTID     uint32 `json:"first_tid"`      // first transaction replayed (s_sequence)
	EndTID       uint32 `json:"end_tid"`        // first transaction not replayed
	JournalBytes int64  `json:"journal_bytes"`  // size of the journal
	KeptBytes    int64  `json:"kept_bytes"`     // free after replay, kept by the union rule
	Wrapped      bool   `json:"wrapped"`        // the log wraps around the journal's end
	FastCommit   bool   `json:"fast_commit"`    // fast commits kept allocated too
}

// String is the form map shows: "journal replayed in memory: ...".
func (j *Replay) String() string {
	if j.Transactions == 0 && j.Blocks == 0 {
		return "journal replayed in memory: nothing to replay"
	}
	plural := func(n int, what string) string {
		if n == 1 {
			return fmt.Sprintf("1 %s", what)
		}
		return fmt.Sprintf("%d %ss", n, what)
	}
	s := fmt.Sprintf("journal replayed in memory: %s, %s", plural(j.Transactions, "transaction"), plural(j.Blocks, "block"))
	if j.FastCommit {
		s += ", fast commits kept"
	}
	return s
}

// Superblock fields of the journal.
const (
	sbJournalUUID = 0xD0
	sbJournalInum = 0xE0
	sbJournalDev  = 0xE4
)

// refuse returns the reason to pass a filesystem needing recovery through:
// a *freemap.Refusal of kind (freemap.ErrUnsupported or ErrUnsafe).
func (s *superblock) refuse(kind error, format string, args ...any) error {
	return &freemap.Refusal{Kind: kind, Msg: s.kind + ": needs_recovery set; " + fmt.Sprintf(format, args...) + ", so its bitmaps cannot be trusted"}
}

// maxUnionReads caps how many logged copies of bitmaps are read for the
// union, and maxDescCopies how many logged copies of one descriptor block
// are kept in memory; beyond them the groups concerned are kept whole.
const (
	maxUnionReads = 1 << 20
	maxDescCopies = 4096
)

// readRecovering maps a filesystem with needs_recovery set: on-disk
// superblock b, parsed as s.
func readRecovering(r io.ReaderAt, size int64, b []byte, s *superblock, opt Options) (*Volume, error) {
	le := binary.LittleEndian
	if s.compat&compatHasJournal == 0 {
		return nil, s.refuse(freemap.ErrUnsafe, "but the filesystem has no journal")
	}
	inum := uint64(le.Uint32(b[sbJournalInum:]))
	if inum == 0 {
		return nil, s.refuse(freemap.ErrUnsupported, "its journal is on an external device (journal UUID %x, device %#x) that is not part of this volume", b[sbJournalUUID:sbJournalUUID+16], le.Uint32(b[sbJournalDev:]))
	}
	fm, err := s.readInodeMap(r, inum, 1<<32)
	if err != nil {
		return nil, s.refuse(freemap.ErrUnsafe, "its journal inode %d cannot be read (%v)", inum, err)
	}
	jsize := int64(fm.size) / s.blockSize * s.blockSize
	jr := &fileReader{r: r, bs: s.blockSize, fm: fm, size: jsize}
	log, err := jbd2.Recover(jr, jsize, int(s.blockSize))
	if err != nil {
		kind := freemap.ErrUnsafe
		if errors.Is(err, jbd2.ErrUnsupported) {
			kind = freemap.ErrUnsupported
		}
		return nil, s.refuse(kind, "the journal cannot be replayed in memory: %v", err)
	}
	final := log.Final()
	for _, c := range final {
		if c.Home >= s.blocksCount {
			return nil, s.refuse(freemap.ErrUnsafe, "the journal replays block %d, outside the filesystem's %d blocks", c.Home, s.blocksCount)
		}
	}
	j := &journalState{r: r, s: s, log: log, final: final, jr: jr}
	if err := j.checkSuperCopies(b); err != nil {
		return nil, err
	}
	v, err := read(&replayReader{j: j, size: size}, size, opt, j)
	if err != nil {
		return nil, err
	}
	used, err := j.unionUsed(fm)
	if err != nil {
		v.Free.Release()
		return nil, err
	}
	before := v.Free.FreeBytes()
	if err := v.keep(s, used); err != nil {
		return nil, err
	}
	if log.FastCommit {
		// Commits in the fast-commit area: their allocations are in no
		// logged bitmap (fastcommit.go).
		fc := freemap.NewBuilder(s.fsBytes())
		if err := j.fastCommitUsed(&replayReader{j: j, size: size}, fc); err != nil {
			v.Free.Release()
			return nil, err
		}
		if err := v.keep(s, fc.Map()); err != nil {
			return nil, err
		}
	}
	v.Journal = &Replay{
		Transactions: log.Transactions(),
		Blocks:       len(final),
		Copies:       len(log.Copies),
		Revokes:      log.Revokes,
		FirstTID:     log.Sequence,
		EndTID:       log.End,
		JournalBytes: jsize,
		KeptBytes:    before - v.Free.FreeBytes(),
		Wrapped:      log.Wrapped,
		FastCommit:   log.FastCommit,
	}
	if log.Transactions() > 0 {
		tids := fmt.Sprintf("transactions %d to %d", log.Sequence, log.End-1)
		if log.Transactions() == 1 {
			tids = fmt.Sprintf("transaction %d", log.Sequence)
		}
		v.Notes = append(v.Notes, fmt.Sprintf("needs_recovery: replayed %s of the journal in memory; %d bytes more kept because another version of their bitmap marks them used", tids, v.Journal.KeptBytes))
	}
	if j.wholeGroups > 0 {
		v.Notes = append(v.Notes, fmt.Sprintf("needs_recovery: %d block groups kept whole (a logged descriptor or bitmap could not be used)", j.wholeGroups))
	}
	return v, nil
}

// journalState is one in-memory replay.
type journalState struct {
	r     io.ReaderAt
	s     *superblock
	log   *jbd2.Log
	jr    io.ReaderAt
	final []jbd2.Copy // sorted by Home

	wholeGroups int
}

// replayReader reads the volume as recovery leaves it: the source, with the
// final logged copy of each replayed block laid over it.
type replayReader struct {
	j    *journalState
	size int64
}

func (o *replayReader) ReadAt(p []byte, off int64) (int, error) {
	n, err := o.j.r.ReadAt(p, off)
	if n == 0 {
		return n, err
	}
	bs := o.j.s.blockSize
	end := off + int64(n)
	fin := o.j.final
	i := sort.Search(len(fin), func(i int) bool { return int64(fin[i].Home) >= off/bs })
	var buf []byte
	for ; i < len(fin) && int64(fin[i].Home)*bs < end; i++ {
		if buf == nil {
			buf = make([]byte, bs)
		}
		if e := o.j.log.ReadCopy(fin[i], buf); e != nil {
			return 0, fmt.Errorf("%s: reading the logged copy of block %d: %w", o.j.s.kind, fin[i].Home, e)
		}
		bstart := int64(fin[i].Home) * bs
		lo, hi := max(bstart, off), min(bstart+bs, end)
		copy(p[lo-off:hi-off], buf[lo-bstart:hi-bstart])
	}
	return n, err
}

// copiesOf returns the logged copies of block home, in log order.
func (j *journalState) copiesOf(home uint64, byHome []int) []int {
	cs := j.log.Copies
	i := sort.Search(len(byHome), func(i int) bool { return cs[byHome[i]].Home >= home })
	k := i
	for k < len(byHome) && cs[byHome[k]].Home == home {
		k++
	}
	return byHome[i:k]
}

// checkSuperCopies refuses a log holding a superblock whose geometry
// differs from the on-disk one (a resize in flight).
func (j *journalState) checkSuperCopies(disk []byte) error {
	s := j.s
	home := uint64(sbOffset / s.blockSize)
	inner := sbOffset % s.blockSize
	buf := make([]byte, s.blockSize)
	fields := []struct {
		name      string
		off, size int
		mask      uint32 // for 4-byte feature words: the bits that place metadata
	}{
		{"s_blocks_count", sbBlocksCountLo, 4, 0}, {"s_blocks_count_hi", sbBlocksCountHi, 4, 0},
		{"s_inodes_count", sbInodesCount, 4, 0}, {"s_first_data_block", sbFirstDataBlock, 4, 0},
		{"s_log_block_size", sbLogBlockSize, 4, 0}, {"s_log_cluster_size", sbLogClusterSize, 4, 0},
		{"s_blocks_per_group", sbBlocksPerGroup, 4, 0}, {"s_clusters_per_group", sbClustersPerGroup, 4, 0},
		{"s_inodes_per_group", sbInodesPerGroup, 4, 0}, {"s_inode_size", sbInodeSize, 2, 0},
		{"s_reserved_gdt_blocks", sbReservedGDT, 2, 0}, {"s_desc_size", sbDescSize, 2, 0},
		{"s_first_meta_bg", sbFirstMetaBG, 4, 0}, {"s_backup_bgs", sbBackupBGs, 8, 0},
		{"COMPAT features", sbFeatureCompat, 4, layoutCompat},
		{"INCOMPAT features", sbFeatureIncompat, 4, layoutIncompat},
		{"RO_COMPAT features", sbFeatureROCompat, 4, layoutROCompat},
	}
	for _, c := range j.log.Copies {
		if c.Home != home {
			continue
		}
		if err := j.log.ReadCopy(c, buf); err != nil {
			return s.refuse(freemap.ErrUnsafe, "%v", err)
		}
		sb := buf[inner : inner+sbSize]
		if binary.LittleEndian.Uint16(sb[sbMagicOff:]) != sbMagic {
			return s.refuse(freemap.ErrUnsafe, "the journal logs block %d, the superblock's, without a superblock in it", home)
		}
		for _, f := range fields {
			a, b := sb[f.off:f.off+f.size], disk[f.off:f.off+f.size]
			differ := !bytes.Equal(a, b)
			if f.mask != 0 {
				le := binary.LittleEndian
				differ = le.Uint32(a)&f.mask != le.Uint32(b)&f.mask
			}
			if differ {
				return s.refuse(freemap.ErrUnsupported, "the journal logs a superblock (transaction %d) that differs from the on-disk one in %s: a resize was in flight", c.Seq, f.name)
			}
		}
	}
	return nil
}

// unionUsed returns the byte ranges that replay leaves free but that the
// union rule keeps: clusters used in another version of their group's
// bitmap, the metadata every descriptor version places, and the journal.
func (j *journalState) unionUsed(fm *fileMap) (*freemap.Map, error) {
	s := j.s
	used := freemap.NewBuilder(s.fsBytes())
	addBlocks := func(blk, n uint64) {
		if blk == 0 || blk >= s.blocksCount {
			return
		}
		n = min(n, s.blocksCount-blk)
		used.Add(int64(blk)*s.blockSize, int64(n)*s.blockSize)
	}
	for _, e := range fm.extents {
		addBlocks(e.physical, e.count)
	}
	for _, b := range fm.meta {
		addBlocks(b, 1)
	}

	cs := j.log.Copies
	byHome := make([]int, len(cs))
	for i := range byHome {
		byHome[i] = i
	}
	slices.SortStableFunc(byHome, func(a, b int) int {
		switch {
		case cs[a].Home < cs[b].Home:
			return -1
		case cs[a].Home > cs[b].Home:
			return 1
		}
		return 0
	})
	if len(cs) == 0 {
		return used.Map(), nil
	}
	// rel orders transaction IDs from the start of the log.
	rel := func(seq uint32) uint32 { return seq - j.log.Sequence }

	d := newDescReader(j.r, s) // the on-disk descriptors
	cbuf := make([]byte, s.blockSize)
	bitmap := make([]byte, s.blockSize)
	firstCluster := s.firstDataBlock >> s.clusterBits
	reads := 0
	// The logged copies of the current descriptor block, read once for
	// all the groups it describes.
	type descCopy struct {
		raw []byte
		seq uint32
	}
	var descs []descCopy
	descsOf, tooMany := ^uint64(0), false
	for g := range s.groups {
		gdDisk, err := d.desc(g)
		if err != nil {
			return nil, err
		}
		if db := g / s.descPerBlock; db != descsOf {
			descsOf, descs, tooMany = db, descs[:0], false
			ids := j.copiesOf(s.descBlockLoc(db), byHome)
			if len(ids) > maxDescCopies {
				tooMany = true
			}
			for _, ci := range ids {
				if tooMany {
					break
				}
				b := make([]byte, s.blockSize)
				if err := j.log.ReadCopy(cs[ci], b); err != nil {
					return nil, s.refuse(freemap.ErrUnsafe, "%v", err)
				}
				descs = append(descs, descCopy{raw: b, seq: cs[ci].Seq})
			}
		}
		if len(descs) == 0 && !tooMany && len(j.copiesOf(gdDisk.blockBitmap, byHome)) == 0 {
			continue // every version of this group is the on-disk one
		}
		start := int64(firstCluster+g*s.clustersPerGroup) * s.clusterSize
		end := min(start+int64(s.clustersPerGroup)*s.clusterSize, s.fsBytes())
		nbits := uint64((end - start + s.clusterSize - 1) / s.clusterSize)
		whole := tooMany
		// Every version of the descriptor: on disk, then each logged copy.
		// Each names a bitmap block; the on-disk content of that block is
		// part of a state replay can leave unless a copy of it that nothing
		// revokes, from the descriptor's transaction or earlier, replaced
		// it first.
		locs := map[uint64]bool{} // bitmap block -> its on-disk content counts
		o := int64(g%s.descPerBlock) * s.descSize
		for k := -1; k < len(descs) && !whole; k++ {
			raw, seq, onDisk := gdDisk.raw, uint32(0), true
			if k >= 0 {
				raw, seq, onDisk = descs[k].raw[o:o+s.descSize], descs[k].seq, false
			}
			gd := parseDesc(s, g, raw)
			addBlocks(gd.blockBitmap, 1)
			addBlocks(gd.inodeBitmap, 1)
			addBlocks(gd.inodeTable, s.itableBlocks)
			if !gd.csumOK || s.checkBitmapLoc(g, gd.blockBitmap) != "" && !(s.gdtCsum && gd.flags&bgBlockUninit != 0) {
				whole = true
				break
			}
			if s.gdtCsum && gd.flags&bgBlockUninit != 0 {
				continue // computed: nothing beyond the metadata above
			}
			if !onDisk {
				onDisk = true
				for _, ci := range j.copiesOf(gd.blockBitmap, byHome) {
					if c := cs[ci]; !c.Revoked && rel(c.Seq) <= rel(seq) {
						onDisk = false
						break
					}
				}
			}
			locs[gd.blockBitmap] = locs[gd.blockBitmap] || onDisk
		}
		clear(bitmap)
		or := func(b []byte) {
			for i := range (nbits + 7) / 8 {
				bitmap[i] |= b[i]
			}
		}
		for loc, onDisk := range locs {
			if whole {
				break
			}
			ids := j.copiesOf(loc, byHome)
			if reads += len(ids) + 1; reads > maxUnionReads {
				whole = true
				break
			}
			if onDisk {
				off := int64(loc) * s.blockSize
				if _, err := j.r.ReadAt(cbuf, off); err != nil {
					return nil, fmt.Errorf("%s: reading block bitmap of group %d at byte %d: %w", s.kind, g, off, err)
				}
				or(cbuf)
			}
			for _, ci := range ids {
				if err := j.log.ReadCopy(cs[ci], cbuf); err != nil {
					return nil, s.refuse(freemap.ErrUnsafe, "%v", err)
				}
				or(cbuf)
			}
		}
		if whole {
			j.wholeGroups++
			used.Add(start, end-start)
			continue
		}
		for i := nextBit(bitmap, 0, nbits, true); i < nbits; {
			k := nextBit(bitmap, i, nbits, false)
			used.Add(start+int64(i)*s.clusterSize, min(int64(k-i)*s.clusterSize, end-start-int64(i)*s.clusterSize))
			i = nextBit(bitmap, k, nbits, true)
		}
	}
	return used.Map(), nil
}

// parseDesc parses one raw group descriptor of group g.
func parseDesc(s *superblock, g uint64, raw []byte) groupDesc {
	le := binary.LittleEndian
	gd := groupDesc{
		raw:         raw,
		blockBitmap: uint64(le.Uint32(raw[bgBlockBitmapLo:])),
		inodeBitmap: uint64(le.Uint32(raw[bgInodeBitmapLo:])),
		inodeTable:  uint64(le.Uint32(raw[bgInodeTableLo:])),
		flags:       le.Uint16(raw[bgFlags:]),
		csumOK:      true,
	}
	if s.descSize >= descSize64 {
		gd.blockBitmap |= uint64(le.Uint32(raw[bgBlockBitmapHi:])) << 32
		gd.inodeBitmap |= uint64(le.Uint32(raw[bgInodeBitmapHi:])) << 32
		gd.inodeTable |= uint64(le.Uint32(raw[bgInodeTableHi:])) << 32
	}
	if s.gdtCsum {
		gd.csumOK = s.descChecksum(uint32(g), raw) == le.Uint16(raw[bgChecksum:])
	}
	return gd
}

// keep makes the ranges of used (a set of used ranges held in a freemap)
// allocated in v.Free. A freemap coarsens by dropping extents, which for a
// set of used ranges would free them: a coarsened set passes the volume
// through instead.
func (v *Volume) keep(s *superblock, used *freemap.Map) error {
	defer used.Release()
	if c := used.Coarsened(); c.Bytes > 0 {
		v.Free.Release()
		return s.refuse(freemap.ErrUnsupported, "the blocks its journal keeps in use do not fit the memory limit (%v)", c)
	}
	free := v.Free.Without(used)
	v.Free.Release()
	v.Free = free
	return nil
}
