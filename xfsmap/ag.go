package xfsmap

import (
	"math"

	"github.com/prezero/prezero/freemap"
)

// AGF (struct xfs_agf) field offsets, big-endian. It sits in the second
// sector of every AG.
const (
	agfMagicOff    = 0
	agfVersionOff  = 4
	agfSeqnoOff    = 8
	agfLengthOff   = 12
	agfBnoRootOff  = 16
	agfCntRootOff  = 20
	agfBnoLevelOff = 28
	agfCntLevelOff = 32
	agfFlCountOff  = 48
	agfFreeOff     = 52
	agfLongestOff  = 56
	agfUUIDOff     = 64
	agfCRCOff      = 216
	agfMagic       = 0x58414746 // "XAGF"
)

// Short-form btree block header (struct xfs_btree_block, short pointers).
const (
	bbMagicOff    = 0
	bbLevelOff    = 4
	bbNumRecsOff  = 6
	bbLeftOff     = 8
	bbRightOff    = 12
	bbBlknoOff    = 16 // v5 only from here
	bbUUIDOff     = 32
	bbOwnerOff    = 48
	bbCRCOff      = 52
	bbHdrV4       = 16
	bbHdrV5       = 56
	nullAgBlock   = math.MaxUint32
	maxBtreeLevel = 9 // XFS_BTREE_MAXLEVELS of the short-pointer trees
)

// Free-space btree magics.
const (
	magicBnoV4 = 0x41425442 // "ABTB"
	magicBnoV5 = 0x41423342 // "AB3B"
	magicCntV4 = 0x41425443 // "ABTC"
	magicCntV5 = 0x41423343 // "AB3C"
)

// agf is the part of an AGF this parser uses.
type agf struct {
	length   uint64
	bnoRoot  uint32
	bnoLevel uint32
	cntRoot  uint32
	cntLevel uint32
	freeblks uint64
	longest  uint64
}

// readAGF reads and checks the AGF of AG agno.
func (m *mapper) readAGF(agno uint64) (*agf, error) {
	s := m.s
	off := s.agOff(agno, 0) + s.sectSize
	b := make([]byte, s.sectSize)
	if err := m.r.read(b, off); err != nil {
		return nil, err
	}
	if be.Uint32(b[agfMagicOff:]) != agfMagic || be.Uint32(b[agfVersionOff:]) != 1 {
		return nil, freemap.Formatf(off, "xfs: AGF has a bad magic or version")
	}
	if s.v5 {
		if !cksumOK(b, agfCRCOff) {
			return nil, freemap.Formatf(off+agfCRCOff, "xfs: AGF checksum mismatch")
		}
		if !s.uuidOK(b[agfUUIDOff : agfUUIDOff+16]) {
			return nil, freemap.Formatf(off+agfUUIDOff, "xfs: AGF belongs to another filesystem (uuid)")
		}
	}
	if seq := be.Uint32(b[agfSeqnoOff:]); uint64(seq) != agno {
		return nil, freemap.Formatf(off+agfSeqnoOff, "xfs: AGF has sequence number %d", seq)
	}
	a := &agf{
		length:   uint64(be.Uint32(b[agfLengthOff:])),
		bnoRoot:  be.Uint32(b[agfBnoRootOff:]),
		cntRoot:  be.Uint32(b[agfCntRootOff:]),
		bnoLevel: be.Uint32(b[agfBnoLevelOff:]),
		cntLevel: be.Uint32(b[agfCntLevelOff:]),
		freeblks: uint64(be.Uint32(b[agfFreeOff:])),
		longest:  uint64(be.Uint32(b[agfLongestOff:])),
	}
	if a.length != s.agLen(agno) {
		return nil, freemap.Formatf(off+agfLengthOff, "xfs: AGF length %d, superblock geometry says %d", a.length, s.agLen(agno))
	}
	if a.bnoLevel < 1 || a.bnoLevel > maxBtreeLevel || a.cntLevel < 1 || a.cntLevel > maxBtreeLevel {
		return nil, freemap.Formatf(off+agfBnoLevelOff, "xfs: AGF btree levels %d/%d out of range", a.bnoLevel, a.cntLevel)
	}
	if a.freeblks > a.length || a.longest > a.freeblks {
		return nil, freemap.Formatf(off+agfFreeOff, "xfs: AGF free count %d (longest %d) does not fit the AG", a.freeblks, a.longest)
	}
	return a, nil
}

// mapAG adds the free extents of AG agno to the map, or returns a
// *freemap.FormatError (the AG passes through) or a read error.
func (m *mapper) mapAG(agno uint64) error {
	s := m.s
	a, err := m.readAGF(agno)
	if err != nil {
		return err
	}
	bmagic, cmagic := uint32(magicBnoV4), uint32(magicCntV4)
	if s.v5 {
		bmagic, cmagic = magicBnoV5, magicCntV5
	}
	// The AG's extents go to a builder of their own (bounded by
	// freemap's memory limit), merged into the volume's map only once
	// every check has passed.
	agb := freemap.NewBuilder(m.r.size)
	bno := &walk{m: m, agno: agno, agLen: a.length, magic: bmagic, out: agb}
	if err := bno.run(a.bnoRoot, a.bnoLevel); err != nil {
		agb.Map().Release()
		return err
	}
	agMap := agb.Map()
	cnt := &walk{m: m, agno: agno, agLen: a.length, magic: cmagic, byCount: true}
	if err := cnt.run(a.cntRoot, a.cntLevel); err != nil {
		agMap.Release()
		return err
	}
	agfOff := s.agOff(agno, 0) + s.sectSize
	fail := func(err error) error {
		agMap.Release()
		return err
	}
	if bno.count != cnt.count || bno.sum != cnt.sum || bno.hash != cnt.hash {
		return fail(freemap.Formatf(agfOff, "xfs: the by-block and by-size free-space btrees disagree (%d extents/%d blocks vs %d/%d)",
			bno.count, bno.sum, cnt.count, cnt.sum))
	}
	if bno.sum != a.freeblks {
		return fail(freemap.Formatf(agfOff+agfFreeOff, "xfs: the free-space btrees hold %d blocks, the AGF says %d", bno.sum, a.freeblks))
	}
	if bno.longest != a.longest {
		return fail(freemap.Formatf(agfOff+agfLongestOff, "xfs: the longest free extent is %d blocks, the AGF says %d", bno.longest, a.longest))
	}
	// The blocks of both trees are allocated: one inside a free extent is
	// corruption.
	for _, w := range []*walk{bno, cnt} {
		for _, blk := range w.blocks {
			if off := s.agOff(agno, uint64(blk)); agMap.IsFree(off) {
				return fail(freemap.Formatf(off, "xfs: btree block %d lies in a free extent", blk))
			}
		}
	}
	// Copy, not AddMap: AddMap would share the chunks that agMap's
	// memory charge covers, and agMap is released now.
	for e := range agMap.All() {
		m.out.Add(e.Off, e.Len)
	}
	if c := agMap.Coarsened(); c.Bytes > 0 {
		m.coarse.Bytes += c.Bytes
		m.coarse.Under = max(m.coarse.Under, c.Under)
	}
	agMap.Release()
	m.freeBlocks += int64(bno.sum)
	return nil
}

// walk visits one free-space btree of one AG.
type walk struct {
	m       *mapper
	agno    uint64
	agLen   uint64
	magic   uint32
	byCount bool             // cntbt: keyed by (length, start)
	out     *freemap.Builder // bnobt: receives the free extents

	blocks  []uint32              // btree blocks visited
	last    [maxBtreeLevel]uint32 // last block seen at each level, for sibling checks
	right   [maxBtreeLevel]uint32 // its right sibling
	seen    [maxBtreeLevel]bool
	prevKey uint64
	prevEnd uint64 // bnobt: end of the previous extent
	havePrv bool

	count, sum, hash, longest uint64
}

// key orders records: by start for the bnobt, by (length, start) for the
// cntbt.
func (w *walk) key(start, length uint64) uint64 {
	if w.byCount {
		return length<<32 | start
	}
	return start
}

// run walks the tree from root, of levels levels.
func (w *walk) run(root, levels uint32) error {
	if err := w.node(root, levels-1, 0, math.MaxUint64); err != nil {
		return err
	}
	// The rightmost block of every level has no right sibling: checked
	// when each block is read; here check every level was reached.
	for l := range levels {
		if !w.seen[l] {
			return freemap.Formatf(w.m.s.agOff(w.agno, uint64(root)), "xfs: btree level %d never reached", l)
		}
	}
	return nil
}

// node checks block agbno at level, whose keys must lie in [lo, hi).
func (w *walk) node(agbno uint32, level uint32, lo, hi uint64) error {
	s := w.m.s
	off := s.agOff(w.agno, uint64(agbno))
	if uint64(agbno) < s.headerBlocks() || uint64(agbno) >= w.agLen {
		return freemap.Formatf(off, "xfs: btree block %d outside AG %d", agbno, w.agno)
	}
	// No visited set is needed against loops: levels fall by one per
	// step, and a block reached twice repeats records, which the strict
	// record order refuses (every non-root leaf holds at least one).
	if uint64(len(w.blocks)) >= w.agLen {
		return freemap.Formatf(off, "xfs: more btree blocks than AG %d holds", w.agno)
	}
	w.blocks = append(w.blocks, agbno)
	b := make([]byte, s.blockSize)
	if err := w.m.r.read(b, off); err != nil {
		return err
	}
	hdr := bbHdrV4
	if s.v5 {
		hdr = bbHdrV5
		if !cksumOK(b, bbCRCOff) {
			return freemap.Formatf(off+bbCRCOff, "xfs: btree block %d checksum mismatch", agbno)
		}
		if be.Uint64(b[bbBlknoOff:]) != uint64(off)/bbSize {
			return freemap.Formatf(off+bbBlknoOff, "xfs: btree block %d records another address", agbno)
		}
		if uint64(be.Uint32(b[bbOwnerOff:])) != w.agno || !s.uuidOK(b[bbUUIDOff:bbUUIDOff+16]) {
			return freemap.Formatf(off+bbOwnerOff, "xfs: btree block %d belongs to another AG or filesystem", agbno)
		}
	}
	if be.Uint32(b[bbMagicOff:]) != w.magic {
		return freemap.Formatf(off, "xfs: btree block %d has magic %#x, want %#x", agbno, be.Uint32(b[bbMagicOff:]), w.magic)
	}
	if l := uint32(be.Uint16(b[bbLevelOff:])); l != level {
		return freemap.Formatf(off+bbLevelOff, "xfs: btree block %d has level %d, want %d", agbno, l, level)
	}
	// Sibling links: each block's left sibling is the previous block of
	// its level, and only the rightmost has no right sibling (checked by
	// the next block of the level, or by hi being the tree's end).
	left, right := be.Uint32(b[bbLeftOff:]), be.Uint32(b[bbRightOff:])
	wantLeft := uint32(nullAgBlock)
	if w.seen[level] {
		wantLeft = w.last[level]
	}
	if left != wantLeft || (w.seen[level] && w.right[level] != agbno) {
		return freemap.Formatf(off+bbLeftOff, "xfs: btree block %d has left sibling %d, want %d", agbno, left, wantLeft)
	}
	if (right == nullAgBlock) != (hi == math.MaxUint64) {
		return freemap.Formatf(off+bbRightOff, "xfs: btree block %d has a wrong right sibling %d", agbno, right)
	}
	w.seen[level], w.last[level], w.right[level] = true, agbno, right

	n := int(be.Uint16(b[bbNumRecsOff:]))
	if level == 0 {
		if max := (len(b) - hdr) / 8; n > max || (n == 0 && hi != math.MaxUint64) || (n == 0 && lo != 0) {
			return freemap.Formatf(off+bbNumRecsOff, "xfs: btree leaf %d claims %d records", agbno, n)
		}
		for i := range n {
			p := hdr + 8*i
			start, length := uint64(be.Uint32(b[p:])), uint64(be.Uint32(b[p+4:]))
			if err := w.record(off+int64(p), start, length, lo, hi); err != nil {
				return err
			}
		}
		return nil
	}
	maxr := (len(b) - hdr) / 12
	if n < 1 || n > maxr {
		return freemap.Formatf(off+bbNumRecsOff, "xfs: btree node %d claims %d pointers", agbno, n)
	}
	keyAt := func(i int) uint64 {
		p := hdr + 8*i
		return w.key(uint64(be.Uint32(b[p:])), uint64(be.Uint32(b[p+4:])))
	}
	ptrs := hdr + 8*maxr
	for i := range n {
		klo := keyAt(i)
		khi := hi
		if i+1 < n {
			khi = keyAt(i + 1)
		}
		if klo < lo || klo >= khi || khi > hi {
			return freemap.Formatf(off+int64(hdr+8*i), "xfs: btree node %d keys out of order", agbno)
		}
		if i == 0 && klo != lo && lo != 0 {
			return freemap.Formatf(off+int64(hdr), "xfs: btree node %d first key does not match its parent's", agbno)
		}
		child := be.Uint32(b[ptrs+4*i:])
		if err := w.node(child, level-1, klo, khi); err != nil {
			return err
		}
	}
	return nil
}

// record checks one free extent (AG blocks) and accumulates it.
func (w *walk) record(off int64, start, length, lo, hi uint64) error {
	s := w.m.s
	if length == 0 || start < s.headerBlocks() || start+length > w.agLen {
		return freemap.Formatf(off, "xfs: free extent (%d, %d) outside AG %d", start, length, w.agno)
	}
	k := w.key(start, length)
	if k < lo || k >= hi || (w.havePrv && k <= w.prevKey) {
		return freemap.Formatf(off, "xfs: free extent (%d, %d) out of order", start, length)
	}
	if !w.byCount {
		// bnobt: extents may not overlap the previous one or the log.
		if w.havePrv && start < w.prevEnd {
			return freemap.Formatf(off, "xfs: free extent (%d, %d) overlaps the previous one", start, length)
		}
		if w.agno == s.logStartAG && start < s.logStartBN+s.logBlocks && s.logStartBN < start+length {
			return freemap.Formatf(off, "xfs: free extent (%d, %d) overlaps the log", start, length)
		}
		w.prevEnd = start + length
		w.out.Add(s.agOff(w.agno, start), int64(length<<s.blockLog))
	}
	w.prevKey, w.havePrv = k, true
	w.count++
	w.sum += length
	w.hash += mix(start<<32 | length)
	w.longest = max(w.longest, length)
	return nil
}

// mix is splitmix64's finaliser: the order-independent sum of mix over
// the records fingerprints a tree's extent set.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
