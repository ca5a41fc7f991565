package jbd2

import (
	"encoding/binary"
	"fmt"
)

// A writer of synthetic journals, for tests: every format variant that
// mke2fs and the kernel do not make on demand (v1 superblocks, csum v2,
// 32-bit tags, async_commit, the legacy commit checksum, revokes, escapes,
// wrap-around, sequence numbers about to wrap), and every kind of damage.

// jopts is the journal superblock.
type jopts struct {
	bs       int
	nblocks  uint32
	version  int // 1 or 2
	compat   uint32
	incompat uint32
	start    uint32 // where the first transaction goes; 0 = clean
	seq      uint32
	fcBlocks uint32 // s_num_fc_blks
	uuid     [16]byte
}

// jblk is one logged block.
type jblk struct {
	home uint64
	data []byte
}

// jtx is one transaction as written.
type jtx struct {
	revokes    []uint64
	blocks     []jblk
	perDesc    int  // tags per descriptor block (0: as many as fit)
	noCommit   bool // torn: no commit block
	commitTime uint64
	// damage hooks, applied to the written blocks of this transaction
	badDescCsum   bool
	badCommitCsum bool
	badTagCsum    bool
	badRevokeCsum bool
	badV1Csum     bool
	tornCommit    bool // the commit block holds garbage after its header (a torn write)
	badRcount     bool // the revoke block claims more bytes than a block holds
}

type journalImage struct {
	o    jopts
	buf  []byte
	last uint32
	seed uint32
	// where things went, for tests that damage them
	descPos, commitPos, revokePos []uint32
}

func (j *journalImage) blk(i uint32) []byte {
	bs := uint32(j.o.bs)
	return j.buf[i*bs : (i+1)*bs]
}

func (j *journalImage) csum23() bool { return j.o.incompat&(IncompatCsumV2|IncompatCsumV3) != 0 }

func (j *journalImage) tagBytes() int {
	l := &Log{Incompat: j.o.incompat}
	return l.tagBytes()
}

func newJournal(o jopts) *journalImage {
	if o.bs == 0 {
		o.bs = 1024
	}
	if o.nblocks == 0 {
		o.nblocks = 1024
	}
	if o.version == 0 {
		o.version = 2
	}
	if o.uuid == ([16]byte{}) {
		o.uuid = [16]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	}
	j := &journalImage{o: o, buf: make([]byte, int(o.nblocks)*o.bs), last: o.nblocks}
	if o.incompat&IncompatFastCommit != 0 {
		n := o.fcBlocks
		if n == 0 {
			n = defaultFCBlocks
		}
		j.last = o.nblocks - n
	}
	j.seed = crc32c(^uint32(0), o.uuid[:])
	j.writeSuper()
	return j
}

func (j *journalImage) writeSuper() {
	be := binary.BigEndian
	b := j.blk(0)
	clear(b)
	be.PutUint32(b[0:], magic)
	if j.o.version == 1 {
		be.PutUint32(b[4:], typeSuperV1)
	} else {
		be.PutUint32(b[4:], typeSuperV2)
	}
	be.PutUint32(b[jsbBlockSize:], uint32(j.o.bs))
	be.PutUint32(b[jsbMaxLen:], j.o.nblocks)
	be.PutUint32(b[jsbFirst:], 1)
	be.PutUint32(b[jsbSequence:], j.o.seq)
	be.PutUint32(b[jsbStart:], j.o.start)
	if j.o.version == 2 {
		be.PutUint32(b[jsbCompat:], j.o.compat)
		be.PutUint32(b[jsbIncompat:], j.o.incompat)
		copy(b[jsbUUID:], j.o.uuid[:])
		be.PutUint32(b[jsbNrUsers:], 1)
		be.PutUint32(b[jsbNumFCBlocks:], j.o.fcBlocks)
		if j.csum23() {
			b[jsbChecksumTyp] = csumTypeCRC32C
			be.PutUint32(b[jsbChecksum:], crc32c(^uint32(0), b[:jsbSize]))
		}
	}
}

func (j *journalImage) wrap(p uint32) uint32 {
	if p >= j.last {
		p -= j.last - 1
	}
	return p
}

func (j *journalImage) header(b []byte, typ, seq uint32) {
	clear(b)
	be := binary.BigEndian
	be.PutUint32(b[0:], magic)
	be.PutUint32(b[4:], typ)
	be.PutUint32(b[8:], seq)
}

func (j *journalImage) setTail(b []byte) {
	if !j.csum23() {
		return
	}
	n := len(b) - tailSize
	binary.BigEndian.PutUint32(b[n:], 0)
	binary.BigEndian.PutUint32(b[n:], crc32c(j.seed, b))
}

// write lays the transactions out from o.start with sequence o.seq and
// returns where the log ends.
func (j *journalImage) write(txs ...jtx) uint32 {
	be := binary.BigEndian
	pos, seq := j.o.start, j.o.seq
	bs := j.o.bs
	for _, tx := range txs {
		v1sum := ^uint32(0)
		// revoke blocks
		rec := 4
		if j.o.incompat&Incompat64Bit != 0 {
			rec = 8
		}
		for len(tx.revokes) > 0 {
			b := j.blk(pos)
			j.header(b, typeRevoke, seq)
			off := revokeHeaderBytes
			limit := bs
			if j.csum23() {
				limit -= tailSize
			}
			for len(tx.revokes) > 0 && off+rec <= limit {
				if rec == 4 {
					be.PutUint32(b[off:], uint32(tx.revokes[0]))
				} else {
					be.PutUint64(b[off:], tx.revokes[0])
				}
				off += rec
				tx.revokes = tx.revokes[1:]
			}
			be.PutUint32(b[12:], uint32(off))
			if tx.badRcount {
				be.PutUint32(b[12:], uint32(bs+8))
			}
			j.setTail(b)
			if tx.badRevokeCsum {
				b[20] ^= 0xFF
			}
			j.revokePos = append(j.revokePos, pos)
			pos = j.wrap(pos + 1)
		}
		blocks := tx.blocks
		for len(blocks) > 0 {
			d := j.blk(pos)
			descAt := pos
			j.header(d, typeDescriptor, seq)
			pos = j.wrap(pos + 1)
			off := 12
			limit := bs
			if j.csum23() {
				limit -= tailSize
			}
			tb := j.tagBytes()
			n := 0
			for len(blocks) > 0 && off+tb+16 <= limit && (tx.perDesc == 0 || n < tx.perDesc) {
				bl := blocks[0]
				blocks = blocks[1:]
				var flags uint16
				data := make([]byte, bs)
				copy(data, bl.data)
				if be.Uint32(data) == magic {
					flags |= flagEscape
					be.PutUint32(data, 0)
				}
				if n > 0 {
					flags |= flagSameUUID
				}
				last := len(blocks) == 0 || off+tb+16+tb+16 > limit || (tx.perDesc != 0 && n+1 == tx.perDesc)
				if last {
					flags |= flagLastTag
				}
				t := d[off:]
				be.PutUint32(t[0:], uint32(bl.home))
				be.PutUint16(t[6:], flags)
				if j.o.incompat&Incompat64Bit != 0 || j.o.incompat&IncompatCsumV3 != 0 {
					be.PutUint32(t[8:], uint32(bl.home>>32))
				}
				var sq [4]byte
				be.PutUint32(sq[:], seq)
				c := crc32c(crc32c(j.seed, sq[:]), data)
				if tx.badTagCsum {
					c ^= 1
				}
				switch {
				case j.o.incompat&IncompatCsumV3 != 0:
					be.PutUint32(t[12:], c)
				case j.o.incompat&IncompatCsumV2 != 0:
					be.PutUint16(t[4:], uint16(c))
				}
				off += tb
				if flags&flagSameUUID == 0 {
					copy(d[off:], j.o.uuid[:])
					off += 16
				}
				copy(j.blk(pos), data)
				pos = j.wrap(pos + 1)
				n++
				if last {
					break
				}
			}
			j.setTail(d)
			if tx.badDescCsum {
				d[len(d)-1] ^= 0xFF
			}
			j.descPos = append(j.descPos, descAt)
			// legacy checksum over the descriptor and its blocks
			v1sum = crc32be(v1sum, d)
			p := j.wrap(descAt + 1)
			for range n {
				v1sum = crc32be(v1sum, j.blk(p))
				p = j.wrap(p + 1)
			}
		}
		if tx.noCommit {
			return pos
		}
		c := j.blk(pos)
		j.header(c, typeCommit, seq)
		be.PutUint64(c[commitSec:], tx.commitTime)
		if j.o.version == 2 && j.o.compat&CompatChecksum != 0 {
			c[commitChksumType] = crc32ChksumType
			c[commitChksumSize] = crc32ChksumSize
			if tx.badV1Csum {
				v1sum ^= 1
			}
			be.PutUint32(c[commitChksum0:], v1sum)
		}
		if j.csum23() {
			be.PutUint32(c[commitChksum0:], crc32c(j.seed, c))
			if tx.badCommitCsum {
				c[commitChksum0] ^= 0xFF
			}
		}
		if tx.tornCommit {
			for i := commitHeaderSize; i < bs; i++ {
				c[i] = byte(i*7 + 1)
			}
		}
		j.commitPos = append(j.commitPos, pos)
		pos = j.wrap(pos + 1)
		seq++
	}
	return pos
}

// pattern is a block whose bytes name the transaction and block.
func pattern(bs int, tx, blk int) []byte {
	b := make([]byte, bs)
	s := fmt.Sprintf("tx%03d-blk%03d;", tx, blk)
	for i := 0; i < bs; i += len(s) {
		copy(b[i:], s)
	}
	return b
}
