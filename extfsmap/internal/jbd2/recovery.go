package jbd2

import (
	"encoding/binary"
	"hash/crc32"
)

// walker runs the recovery passes over one Log.
//
// The scan pass walks the log block by block exactly as jbd2's do_one_pass
// does in PASS_SCAN and records what it walks through: every descriptor
// tag (a Copy) and every revoke block. The revoke and replay passes of jbd2
// walk the same blocks again and stop at the end the scan found; since the
// walk is a function of the log's bytes, they are run here over the
// recorded items, with the same checks and the same failures.
type walker struct {
	l        *Log
	endTrans uint32 // info->end_transaction; 0 means not yet known, as in jbd2
	revokes  []revokeBlock
}

type revokeBlock struct {
	pos uint32
	seq uint32
}

// wrap is jbd2's wrap(): a position past the log's end continues at First.
func (l *Log) wrap(pos uint32) uint32 {
	if pos >= l.Last {
		pos -= l.Last - l.First
		l.Wrapped = true
	}
	return pos
}

// tags calls f for each tag of descriptor block b with its flags, home
// block and checksum, in order: count_tags and the replay loop of jbd2.
func (l *Log) tags(b []byte, f func(flags uint16, home uint64, csum uint32)) {
	size := len(b)
	if l.csumV2or3() {
		size -= tailSize
	}
	be := binary.BigEndian
	tb := l.tagBytes()
	for p := 12; p+tb <= size; {
		flags := be.Uint16(b[p+6:])
		home := uint64(be.Uint32(b[p:]))
		if l.has64Bit() {
			home |= uint64(be.Uint32(b[p+8:])) << 32
		}
		var csum uint32
		switch {
		case l.Incompat&IncompatCsumV3 != 0:
			csum = be.Uint32(b[p+12:])
		case l.Incompat&IncompatCsumV2 != 0:
			csum = uint32(be.Uint16(b[p+4:]))
		}
		f(flags, home, csum)
		p += tb
		if flags&flagSameUUID == 0 {
			p += 16
		}
		if flags&flagLastTag != 0 {
			break
		}
	}
}

// tailCsumOK is jbd2_descriptor_block_csum_verify (descriptor and revoke
// blocks): true without csum v2/v3.
func (l *Log) tailCsumOK(b []byte) bool {
	if !l.csumV2or3() {
		return true
	}
	n := len(b) - tailSize
	c := crc32c(l.seed, b[:n])
	c = crc32c(c, []byte{0, 0, 0, 0})
	return c == binary.BigEndian.Uint32(b[n:])
}

// commitCsumOK is jbd2_commit_block_csum_verify.
func (l *Log) commitCsumOK(b []byte) bool {
	if !l.csumV2or3() {
		return true
	}
	c := crc32c(l.seed, b[:commitChksum0])
	c = crc32c(c, []byte{0, 0, 0, 0})
	c = crc32c(c, b[commitChksum0+4:])
	return c == binary.BigEndian.Uint32(b[commitChksum0:])
}

// commitCsumPartialOK is jbd2_commit_block_csum_verify_partial of recent
// kernels: a commit block torn after its header, whose checksum verifies
// over the header followed by zeros, is accepted. (e2fsck 1.47.0 and older
// kernels call such a transaction corrupt; extfsmap's union rule keeps the
// blocks of either outcome.)
func (l *Log) commitCsumPartialOK(b []byte) bool {
	if !l.csumV2or3() {
		return true
	}
	c := crc32c(l.seed, b[:commitChksum0])
	c = crc32c(c, []byte{0, 0, 0, 0})
	c = crc32c(c, b[commitChksum0+4:commitHeaderSize])
	c = crc32c(c, make([]byte, len(b)-commitHeaderSize))
	return c == binary.BigEndian.Uint32(b[commitChksum0:])
}

// revokeLimit is the most bytes a revoke block's r_count may claim.
func (l *Log) revokeLimit() int {
	if l.csumV2or3() {
		return l.BlockSize - tailSize
	}
	return l.BlockSize
}

// tagCsumOK is jbd2_block_tag_csum_verify for the data block b logged by
// transaction seq.
func (l *Log) tagCsumOK(csum uint32, b []byte, seq uint32) bool {
	if !l.csumV2or3() {
		return true
	}
	var s [4]byte
	binary.BigEndian.PutUint32(s[:], seq)
	c := crc32c(crc32c(l.seed, s[:]), b)
	if l.Incompat&IncompatCsumV3 != 0 {
		return c == csum
	}
	return uint16(c) == uint16(csum)
}

// scan is PASS_SCAN: it finds the end of the log and records the tags and
// revoke blocks on the way.
func (w *walker) scan() error {
	l := w.l
	be := binary.BigEndian
	next := l.Sequence
	pos := l.Start
	crcSum := ^uint32(0)
	needCheckCommitTime := false
	var lastCommitTime uint64
	logLen := int(l.Last - l.First)
	v1Checksum := l.Version >= 2 && l.Compat&CompatChecksum != 0
	bs := l.BlockSize
	desc := make([]byte, bs)
loop:
	for {
		// A log can never hold more than itself: a walk longer than the log
		// is going round in circles (jbd2 would never end).
		if l.Walked > logLen {
			return failed("jbd2: the log from block %d never ends: one transaction spans the whole journal", l.Start)
		}
		b, err := l.block(pos)
		if err != nil {
			return err
		}
		here := pos
		pos = l.wrap(pos + 1)
		l.Walked++
		if be.Uint32(b[0:]) != magic {
			break
		}
		blocktype, seq := be.Uint32(b[4:]), be.Uint32(b[8:])
		if seq != next {
			break
		}
		switch blocktype {
		case typeDescriptor:
			copy(desc, b)
			if !l.tailCsumOK(desc) {
				// A stale block left by lazy journal init, or
				// corruption: the commit time decides below.
				needCheckCommitTime = true
			}
			n := 0
			l.tags(desc, func(flags uint16, home uint64, csum uint32) {
				l.Copies = append(l.Copies, Copy{
					Home: home, Seq: next,
					Escaped: flags&flagEscape != 0, csum: csum,
				})
				n++
			})
			// The copies' positions: each tag takes the next block,
			// wrapping one at a time, as jbd2 reads them.
			p := pos
			for i := len(l.Copies) - n; i < len(l.Copies); i++ {
				l.Copies[i].Pos = p
				p = l.wrap(p + 1)
			}
			if v1Checksum && !needCheckCommitTime && w.endTrans == 0 {
				// calc_chksums: crc32_be over the descriptor and every
				// block it describes.
				crcSum = crc32be(crcSum, desc)
				for range n {
					ob, err := l.block(pos)
					if err != nil {
						return err
					}
					crcSum = crc32be(crcSum, ob)
					pos = l.wrap(pos + 1)
					l.Walked++
				}
				continue
			}
			pos = l.wrap(pos + uint32(n))
			l.Walked += n
			continue
		case typeCommit:
			commitTime := be.Uint64(b[commitSec:])
			if needCheckCommitTime {
				if commitTime >= lastCommitTime {
					return failed("jbd2: invalid checksum in transaction %d (commit block at log block %d)", next, here)
				}
				break loop // stale blocks: the log ends here
			}
			bad := false
			if v1Checksum {
				if w.endTrans != 0 {
					// jbd2 records j_failed_commit and leaves the
					// switch; the next block ends the walk.
					return failed("jbd2: journal transaction %d is corrupt", w.endTrans)
				}
				found := be.Uint32(b[commitChksum0:])
				typ, size := b[commitChksumType], b[commitChksumSize]
				if !(crcSum == found && typ == crc32ChksumType && size == crc32ChksumSize) &&
					!(typ == 0 && size == 0 && found == 0) {
					bad = true
				} else {
					crcSum = ^uint32(0)
				}
			}
			if !bad && !l.commitCsumOK(b) && !l.commitCsumPartialOK(b) {
				bad = true
			}
			if bad {
				if commitTime < lastCommitTime {
					break loop // stale: ignored, the log ends here
				}
				w.endTrans = next
				if l.Incompat&IncompatAsyncCommit == 0 {
					// j_failed_commit: the kernel and e2fsck report the
					// transaction as corrupt.
					return failed("jbd2: commit block of transaction %d (log block %d) fails its checksum", next, here)
				}
			}
			lastCommitTime = commitTime
			next++
			continue
		case typeRevoke:
			if !l.tailCsumOK(b) {
				needCheckCommitTime = true
			}
			// scan_revoke_records runs in PASS_SCAN too: a revoke block
			// claiming more bytes than it holds fails the recovery,
			// wherever it is in the walked log.
			if rc := be.Uint32(b[12:]); rc > uint32(l.revokeLimit()) {
				return failed("jbd2: revoke block at log block %d claims %d bytes", here, rc)
			}
			w.revokes = append(w.revokes, revokeBlock{pos: here, seq: next})
			continue
		default:
			break loop
		}
	}
	if w.endTrans == 0 {
		w.endTrans = next
	}
	l.End = w.endTrans
	return nil
}

// revoke is PASS_REVOKE over the recorded revoke blocks, plus the looser
// record of every revoke in the walked log (Copy.Revoked). Only blocks that
// have a logged copy matter, so only those are remembered.
func (w *walker) revoke() error {
	l := w.l
	homes := make(map[uint64]int, len(l.Copies))
	for i, c := range l.Copies {
		homes[c.Home] = i
	}
	committed := map[uint64]uint32{}
	any := map[uint64]uint32{}
	csumSize := 0
	if l.csumV2or3() {
		csumSize = tailSize
	}
	recLen := 4
	if l.has64Bit() {
		recLen = 8
	}
	be := binary.BigEndian
	for _, rb := range w.revokes {
		inLog := !tidGEQ(rb.seq, l.End)
		b, err := l.block(rb.pos)
		if err != nil {
			return err
		}
		rcount := be.Uint32(b[12:])
		if rcount > uint32(len(b)-csumSize) {
			// scan() has refused it already
			return failed("jbd2: revoke block at log block %d claims %d bytes", rb.pos, rcount)
		}
		for off := revokeHeaderBytes; off+recLen <= int(rcount); off += recLen {
			var blk uint64
			if recLen == 4 {
				blk = uint64(be.Uint32(b[off:]))
			} else {
				blk = be.Uint64(b[off:])
			}
			if inLog {
				l.Revokes++
			}
			if _, ok := homes[blk]; !ok {
				continue
			}
			if s, ok := any[blk]; !ok || tidGT(rb.seq, s) {
				any[blk] = rb.seq
			}
			if inLog {
				if s, ok := committed[blk]; !ok || tidGT(rb.seq, s) {
					committed[blk] = rb.seq
				}
			}
		}
	}
	for i := range l.Copies {
		c := &l.Copies[i]
		if s, ok := any[c.Home]; ok && !tidGT(c.Seq, s) {
			c.Revoked = true
		}
		if !tidGEQ(c.Seq, l.End) {
			// Replay candidates; replay() decides.
			c.Replay = true
			if s, ok := committed[c.Home]; ok && !tidGT(c.Seq, s) {
				c.Replay = false // jbd2_journal_test_revoke
			}
		}
	}
	return nil
}

// replay is PASS_REPLAY: jbd2 reads every block the committed transactions
// tag (an unreadable one fails the recovery), and every copy that recovery
// writes must pass its tag checksum (csum v2/v3), or jbd2 skips it and fails
// the recovery.
func (w *walker) replay() error {
	l := w.l
	for _, c := range l.Copies {
		if tidGEQ(c.Seq, l.End) {
			continue
		}
		b, err := l.block(c.Pos)
		if err != nil {
			return err
		}
		if c.Replay && !l.tagCsumOK(c.csum, b, c.Seq) {
			return failed("jbd2: logged copy of block %d at log block %d (transaction %d) fails its checksum", c.Home, c.Pos, c.Seq)
		}
	}
	return nil
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// crc32c is the kernel's crc32c(): CRC-32C without pre- and post-inversion.
func crc32c(seed uint32, p []byte) uint32 {
	return ^crc32.Update(^seed, castagnoli, p)
}

// crc32beTable is the MSB-first CRC-32 table (polynomial 0x04C11DB7).
var crc32beTable = func() (t [256]uint32) {
	for i := range t {
		c := uint32(i) << 24
		for range 8 {
			if c&0x80000000 != 0 {
				c = c<<1 ^ 0x04C11DB7
			} else {
				c <<= 1
			}
		}
		t[i] = c
	}
	return t
}()

// crc32be is the kernel's crc32_be(): no inversion, the caller seeds.
func crc32be(crc uint32, p []byte) uint32 {
	for _, b := range p {
		crc = crc<<8 ^ crc32beTable[byte(crc>>24)^b]
	}
	return crc
}
