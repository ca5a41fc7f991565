package xfsmap

import (
	"encoding/binary"
	"hash/crc32"

	"github.com/prezero/prezero/freemap"
)

// The internal log (kernel fs/xfs/libxfs/xfs_log_format.h and
// fs/xfs/xfs_log_recover.c). It is a ring of 512-byte basic blocks (BBs);
// every BB starts with the cycle number of the pass that wrote it, except a
// record header, which starts with its magic and then the cycle. The head
// is where the cycle drops; the last record before it says where the tail
// is. Only two states are accepted:
//
//   - clean: the last record is an unmount record (what xlog_find_tail
//     calls clean: nothing to replay);
//   - covered: every committed transaction between tail and head logs only
//     the superblock buffer, and the logged superblock keeps the on-disk
//     geometry (xfs_log_cover, run by fsfreeze: recovery would change
//     nothing the free-space btrees depend on).
//
// Anything else, or anything that does not parse, is ErrUnsafe.

// Log record header (struct xlog_rec_header) offsets, big-endian.
const (
	lrMagicOff     = 0
	lrCycleOff     = 4
	lrVersionOff   = 8
	lrLenOff       = 12
	lrLSNOff       = 16
	lrTailLSNOff   = 24
	lrCRCOff       = 32 // little-endian
	lrNumOpsOff    = 40
	lrCycleDataOff = 44
	lrSizeOff      = 320
	lrRecSize      = 328 // XLOG_REC_SIZE on 64-bit hosts
	lrRecSizeI386  = 324 // on i386
	lrExtSize      = 260 // XLOG_REC_EXT_SIZE: xh_cycle + xh_cycle_data
	lrMagic        = 0xFEEDBABE
	cycleDataBBs   = 64                      // XLOG_HEADER_CYCLE_SIZE / BBSIZE
	headerCycle    = 32 * 1024               // XLOG_HEADER_CYCLE_SIZE
	maxRecordSize  = 256 * 1024              // XLOG_MAX_RECORD_BSIZE
	totalRecBBs    = 8 * 256 * 1024 / bbSize // XLOG_TOTAL_REC_SHIFT: all in-flight iclogs
	maxActiveBBs   = 16 << 20 / bbSize       // a longer active log is not a covered one
	maxTransBytes  = 1 << 20
)

// Operation header (struct xlog_op_header).
const (
	opHdrSize      = 12
	clientTrans    = 0x69
	clientLog      = 0xaa
	opStart        = 0x01
	opCommit       = 0x02
	opContinue     = 0x04
	opWasCont      = 0x08
	opEnd          = 0x10
	opUnmount      = 0x20
	transMagic     = 0x5452414e // "TRAN", host-endian
	liBuf          = 0x123c     // XFS_LI_BUF
	blfCancel      = 1 << 1
	blftShift      = 11
	blftMask       = 0x1f << blftShift
	blftSB         = 18 // XFS_BLFT_SB_BUF
	blfChunk       = 128
	blfDataMapOff  = 20
	maxItemRegions = 64 // a superblock buffer item has a few
)

const (
	logClean   = "clean"
	logCovered = "covered"
)

// xlog reads the internal log.
type xlog struct {
	r     *reader
	s     *superblock
	start int64  // byte offset of the log
	n     uint64 // size in BBs
	buf   []byte // reused by all
}

// read returns cnt BBs from BB blk on, wrapping at the end of the log.
func (l *xlog) read(blk, cnt uint64) ([]byte, error) {
	return l.readInto(make([]byte, cnt*bbSize), blk, cnt)
}

// readInto is read into b, which holds cnt BBs.
func (l *xlog) readInto(b []byte, blk, cnt uint64) ([]byte, error) {
	blk %= l.n
	first := min(cnt, l.n-blk)
	if err := l.r.read(b[:first*bbSize], l.start+int64(blk*bbSize)); err != nil {
		return nil, err
	}
	if first < cnt {
		if err := l.r.read(b[first*bbSize:], l.start); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// cycleOf returns the cycle a BB was written in (xlog_get_cycle).
func cycleOf(bb []byte) uint32 {
	if be.Uint32(bb) == lrMagic {
		return be.Uint32(bb[4:])
	}
	return be.Uint32(bb)
}

func (l *xlog) cycle(blk uint64) (uint32, error) {
	b, err := l.read(blk, 1)
	if err != nil {
		return 0, err
	}
	return cycleOf(b), nil
}

// all checks that the cnt BBs from blk on (wrapping) were all written in
// cycle want.
func (l *xlog) all(blk, cnt uint64, want uint32) (bool, error) {
	if l.buf == nil {
		l.buf = make([]byte, 2048*bbSize)
	}
	for cnt > 0 {
		k := min(cnt, 2048)
		b, err := l.readInto(l.buf[:k*bbSize], blk, k)
		if err != nil {
			return false, err
		}
		for i := uint64(0); i < k; i++ {
			if cycleOf(b[i*bbSize:]) != want {
				return false, nil
			}
		}
		blk, cnt = blk+k, cnt-k
	}
	return true, nil
}

func dirty(format string, args ...any) error {
	return freemap.Unsafe("xfs: the log needs recovery ("+format+"); the free-space btrees may be stale until it is mounted once", args...)
}

// checkLog returns logClean or logCovered, or an error: ErrUnsafe for a log
// that needs recovery, ErrFormat for one that lies outside the volume.
func checkLog(r *reader, s *superblock) (string, error) {
	l := &xlog{r: r, s: s, start: s.agOff(s.logStartAG, s.logStartBN), n: s.logBlocks << (s.blockLog - 9)}
	head, err := l.findHead()
	if err != nil {
		return "", err
	}
	// The last record header: the nearest BB before the head that starts
	// with the magic (data BBs start with their cycle number).
	var hdrBlk uint64
	var hdr []byte
	found := false
	for back := uint64(1); back <= min(l.n, maxRecordSize/bbSize+cycleDataBBs); back++ {
		blk := (head + l.n - back) % l.n
		b, err := l.read(blk, 1)
		if err != nil {
			return "", err
		}
		if be.Uint32(b) == lrMagic {
			hdrBlk, hdr, found = blk, b, true
			break
		}
	}
	if !found {
		return "", dirty("no record header before the head at block %d", head)
	}
	rec, err := l.record(hdrBlk, hdr)
	if err != nil {
		return "", err
	}
	if rec.next != head {
		return "", dirty("the last record at block %d does not end at the head %d", hdrBlk, head)
	}
	if rec.numOps == 1 && len(rec.data) >= opHdrSize && rec.data[9]&opUnmount != 0 && rec.data[8] == clientLog {
		return logClean, nil
	}
	tailLSN := be.Uint64(rec.hdr[lrTailLSNOff:])
	tail := tailLSN & 0xffffffff
	if tail >= l.n {
		return "", dirty("tail block %d outside the log", tail)
	}
	if dist := (head + l.n - tail) % l.n; dist > maxActiveBBs {
		return "", dirty("%d blocks between tail and head", dist)
	}
	if err := l.covered(tail, head); err != nil {
		return "", err
	}
	return logCovered, nil
}

// findHead returns the first BB after the last one written, as
// xlog_find_head does, but accepts only a log whose cycles change in one
// clean step: no holes or stray blocks left by interrupted writes within
// reach of in-flight log buffers (those mean a crash, so recovery).
func (l *xlog) findHead() (uint64, error) {
	n := l.n
	first, err := l.cycle(0)
	if err != nil {
		return 0, err
	}
	last, err := l.cycle(n - 1)
	if err != nil {
		return 0, err
	}
	win := min(uint64(totalRecBBs), n)
	var head uint64
	var cur, old uint32 // cycles before and after the head
	if first == last {
		// Every block in the same cycle: the head is at block 0 (the last
		// write ended at the end of the log).
		head, cur, old = 0, first, first
	} else {
		if last+1 != first {
			return 0, dirty("cycles %d at the start and %d at the end of the log", first, last)
		}
		lo, hi := uint64(0), n-1 // cycle(lo) == first, cycle(hi) == last
		for hi-lo > 1 {
			mid := lo + (hi-lo)/2
			c, err := l.cycle(mid)
			if err != nil {
				return 0, err
			}
			switch c {
			case first:
				lo = mid
			case last:
				hi = mid
			default:
				return 0, dirty("cycle %d at block %d between %d and %d", c, mid, first, last)
			}
		}
		head, cur, old = hi, first, last
	}
	// Before the head: the current cycle back to block 0, then the old one.
	before := min(win, head)
	ok, err := l.all(head-before, before, cur)
	if err != nil || !ok {
		return 0, orDirty(err, "a hole before the head at block %d", head)
	}
	if before < win {
		wantWrap := old
		if head == 0 {
			wantWrap = cur
		}
		if ok, err := l.all(n-(win-before), win-before, wantWrap); err != nil || !ok {
			return 0, orDirty(err, "a hole before the head at block %d", head)
		}
	}
	// After the head: the old cycle to the end, then the current one.
	after := min(win, n-head)
	if ok, err := l.all(head, after, old); err != nil || !ok {
		return 0, orDirty(err, "stray blocks after the head at block %d", head)
	}
	if after < win && head > 0 {
		if ok, err := l.all(0, min(win-after, head), cur); err != nil || !ok {
			return 0, orDirty(err, "stray blocks after the head at block %d", head)
		}
	}
	return head, nil
}

func orDirty(err error, format string, args ...any) error {
	if err != nil {
		return err
	}
	return dirty(format, args...)
}

// record is one parsed log record.
type record struct {
	hdr    []byte
	numOps int
	data   []byte // h_len bytes, cycle words restored
	next   uint64 // the BB after it
}

// record reads and checks the record whose header is at BB blk.
func (l *xlog) record(blk uint64, hdr []byte) (*record, error) {
	cyc := be.Uint32(hdr[lrCycleOff:])
	if be.Uint64(hdr[lrLSNOff:]) != uint64(cyc)<<32|blk {
		return nil, dirty("record at block %d has a wrong lsn", blk)
	}
	if v := be.Uint32(hdr[lrVersionOff:]); v != 2 {
		return nil, dirty("record at block %d has version %d", blk, v)
	}
	hlen := uint64(be.Uint32(hdr[lrLenOff:]))
	hsize := uint64(be.Uint32(hdr[lrSizeOff:]))
	if hlen == 0 || hlen > maxRecordSize || hsize > maxRecordSize || hlen > max(hsize, headerCycle) {
		return nil, dirty("record at block %d has length %d (size %d)", blk, hlen, hsize)
	}
	hblks := uint64(1)
	if hsize > headerCycle {
		hblks = (hsize + headerCycle - 1) / headerCycle
	}
	dblks := (hlen + bbSize - 1) / bbSize
	if hblks+dblks > l.n {
		return nil, dirty("record at block %d is longer than the log", blk)
	}
	all, err := l.read(blk, hblks+dblks)
	if err != nil {
		return nil, err
	}
	hdrs, data := all[:hblks*bbSize], all[hblks*bbSize:]
	// Every data BB must carry this record's cycle (a torn write does not).
	for i := range dblks {
		if be.Uint32(data[i*bbSize:]) != cyc {
			return nil, dirty("record at block %d is torn", blk)
		}
	}
	for j := uint64(1); j < hblks; j++ {
		if be.Uint32(hdrs[j*bbSize:]) != cyc {
			return nil, dirty("record at block %d has a torn header", blk)
		}
	}
	if !l.recordCRC(hdrs, data[:hlen], hlen) {
		return nil, dirty("record at block %d fails its checksum", blk)
	}
	out := make([]byte, hlen)
	copy(out, data)
	for i := range dblks {
		var w []byte
		if i < cycleDataBBs {
			w = hdrs[lrCycleDataOff+4*i:]
		} else {
			j, k := i/cycleDataBBs, i%cycleDataBBs
			w = hdrs[j*bbSize+4+4*k:]
		}
		if i*bbSize+4 <= hlen {
			copy(out[i*bbSize:i*bbSize+4], w[:4])
		}
	}
	numOps := int(int32(be.Uint32(hdr[lrNumOpsOff:])))
	if numOps < 0 {
		return nil, dirty("record at block %d has %d operations", blk, numOps)
	}
	return &record{hdr: hdr, numOps: numOps, data: out, next: (blk + hblks + dblks) % l.n}, nil
}

// recordCRC verifies h_crc as xlog_cksum computes it, for either header
// size. A zero h_crc means none was written (mkfs writes its unmount
// record so, on v5 too).
func (l *xlog) recordCRC(hdrs, data []byte, hlen uint64) bool {
	want := binary.LittleEndian.Uint32(hdrs[lrCRCOff:])
	if want == 0 {
		return true
	}
	xheads := (hlen + headerCycle - 1) / headerCycle
	if xheads*bbSize > uint64(len(hdrs)) {
		return false
	}
	for _, size := range []int{lrRecSize, lrRecSizeI386} {
		var zero [4]byte
		c := crc32.Update(0, castagnoli, hdrs[:lrCRCOff])
		c = crc32.Update(c, castagnoli, zero[:])
		c = crc32.Update(c, castagnoli, hdrs[lrCRCOff+4:size])
		for i := uint64(1); i < xheads; i++ {
			c = crc32.Update(c, castagnoli, hdrs[i*bbSize:i*bbSize+lrExtSize])
		}
		c = crc32.Update(c, castagnoli, data)
		if c == want {
			return true
		}
	}
	return false
}

// trans is a transaction being reassembled, as xlog_recover_add_to_trans
// does: its regions, the continued ones joined.
type trans struct {
	regions [][]byte
	bytes   int
}

// covered walks the records from tail to head and checks that every
// committed transaction logs only the superblock, keeping its geometry.
func (l *xlog) covered(tail, head uint64) error {
	open := map[uint32]*trans{}
	blk := tail
	for steps := 0; blk != head; steps++ {
		if steps > maxActiveBBs {
			return dirty("too many records")
		}
		hdr, err := l.read(blk, 1)
		if err != nil {
			return err
		}
		if be.Uint32(hdr) != lrMagic {
			return dirty("no record header at block %d", blk)
		}
		rec, err := l.record(blk, hdr)
		if err != nil {
			return err
		}
		// The record must end at or before the head.
		dHead, dNext := (head+l.n-tail)%l.n, (rec.next+l.n-tail)%l.n
		if dNext == 0 || dNext > dHead {
			return dirty("record at block %d runs past the head", blk)
		}
		if err := l.ops(rec, open); err != nil {
			return err
		}
		blk = rec.next
	}
	if len(open) > 0 {
		return dirty("%d uncommitted transactions", len(open))
	}
	return nil
}

// ops feeds one record's operations to the open transactions.
func (l *xlog) ops(rec *record, open map[uint32]*trans) error {
	d := rec.data
	off := 0
	for i := 0; i < rec.numOps; i++ {
		if off+opHdrSize > len(d) {
			return dirty("operation header past the end of a record")
		}
		tid := be.Uint32(d[off:])
		n := int(be.Uint32(d[off+4:]))
		client, flags := d[off+8], d[off+9]
		off += opHdrSize
		if n < 0 || n > len(d)-off {
			return dirty("operation of %d bytes past the end of a record", n)
		}
		region := d[off : off+n]
		off += n
		if client != clientTrans && client != clientLog {
			return dirty("operation for unknown client %#x", client)
		}
		t := open[tid]
		if t == nil {
			// Recovery skips operations of transactions that started
			// before the tail, and unmount records.
			if flags&opStart != 0 {
				open[tid] = &trans{}
			}
			continue
		}
		f := flags &^ opEnd
		if f&opWasCont != 0 {
			f &^= opContinue
		}
		switch f {
		case 0, opContinue:
			t.regions = append(t.regions, append([]byte(nil), region...))
		case opWasCont:
			if len(t.regions) == 0 {
				return dirty("continued operation with nothing to continue")
			}
			k := len(t.regions) - 1
			t.regions[k] = append(t.regions[k], region...)
		case opCommit:
			if err := l.checkTrans(t); err != nil {
				return err
			}
			delete(open, tid)
		case opUnmount:
			delete(open, tid)
		default:
			return dirty("operation flags %#x", flags)
		}
		t.bytes += n
		if t.bytes > maxTransBytes {
			return dirty("a transaction of more than %d bytes", maxTransBytes)
		}
	}
	return nil
}

// checkTrans accepts a committed transaction only if every item in it is
// a superblock buffer whose logged geometry equals the on-disk one.
func (l *xlog) checkTrans(t *trans) error {
	le := binary.LittleEndian
	if len(t.regions) == 0 || len(t.regions[0]) != 16 || le.Uint32(t.regions[0]) != transMagic {
		return dirty("a transaction without a valid header")
	}
	rs := t.regions[1:]
	items := 0
	for len(rs) > 0 {
		f := rs[0]
		if len(f) < blfDataMapOff {
			return dirty("a short log item")
		}
		typ, size := le.Uint16(f), int(le.Uint16(f[2:]))
		if typ != liBuf {
			return dirty("the log holds items of type %#x, not only superblock updates", typ)
		}
		if size < 1 || size > maxItemRegions || size > len(rs) {
			return dirty("a buffer item with %d regions", size)
		}
		if err := l.checkSBItem(f, rs[1:size]); err != nil {
			return err
		}
		rs = rs[size:]
		items++
	}
	if items == 0 {
		return dirty("an empty transaction")
	}
	return nil
}

// checkSBItem checks one buffer item: it must log the primary superblock,
// and the superblock it would write back must keep the on-disk geometry.
func (l *xlog) checkSBItem(f []byte, data [][]byte) error {
	le := binary.LittleEndian
	s := l.s
	flags := le.Uint16(f[4:])
	blen := uint64(le.Uint16(f[6:]))
	blkno := int64(le.Uint64(f[8:]))
	words := uint64(le.Uint32(f[16:]))
	if blkno != 0 || blen*bbSize != uint64(s.sectSize) {
		return dirty("the log holds a buffer at daddr %d, not only superblock updates", blkno)
	}
	if flags&blfCancel != 0 {
		return dirty("a cancelled superblock buffer")
	}
	if t := (flags & blftMask) >> blftShift; t != 0 && t != blftSB {
		return dirty("a superblock buffer of type %d", t)
	}
	if blfDataMapOff+4*words > uint64(len(f)) || words*32*blfChunk < uint64(s.sectSize) {
		return dirty("a buffer item with a bad dirty map")
	}
	// Lay the logged chunks over the on-disk superblock.
	sb := append([]byte(nil), s.raw...)
	bit := func(i uint64) bool { return le.Uint32(f[blfDataMapOff+4*(i/32):])&(1<<(i%32)) != 0 }
	chunks := uint64(s.sectSize) / blfChunk
	r := 0
	for i := uint64(0); i < words*32; {
		if !bit(i) {
			i++
			continue
		}
		j := i
		for j < words*32 && bit(j) {
			j++
		}
		if j > chunks || r >= len(data) || uint64(len(data[r])) != (j-i)*blfChunk {
			return dirty("a superblock buffer item whose regions do not match its dirty map")
		}
		copy(sb[i*blfChunk:], data[r])
		r++
		i = j
	}
	if r != len(data) {
		return dirty("a superblock buffer item with %d regions for %d dirty runs", len(data), r)
	}
	if string(geometry(sb)) != string(geometry(s.raw)) {
		return dirty("the logged superblock changes the geometry")
	}
	return nil
}
