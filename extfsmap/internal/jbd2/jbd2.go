// Package jbd2 reads a jbd2 journal (the log of ext3 and ext4) and works out,
// without writing anything, what the kernel's and e2fsck's journal recovery
// would replay: which transactions, and which logged copy of which
// filesystem block.
//
// In prezero's pipeline it serves extfsmap when a filesystem has
// needs_recovery set: extfsmap reads the journal through the journal inode,
// hands it over as an io.ReaderAt (journal block i at byte i*BlockSize), and
// overlays the replayed blocks on the volume in memory.
//
// It runs the three passes of jbd2_journal_recover (fs/jbd2/recovery.c, which
// e2fsck shares): scan finds the end of the log, revoke collects the revoke
// records, replay keeps the latest non-revoked copy of each block. It stops
// where they stop: at the first block with a wrong magic or sequence, a torn
// transaction, or a checksum failure, with the same treatment of csum v2/v3,
// the legacy commit checksum, async_commit and stale blocks. Where jbd2 would
// fail the recovery (a checksum error it does not ignore, an I/O error, a
// malformed revoke block), Recover returns an error, and the caller must not
// trust the filesystem's bitmaps.
//
// It never panics on its input; every count is bounded by the journal's size.
package jbd2

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sort"
)

// Block header (journal_header_t), big-endian.
const (
	magic = 0xC03B3998

	typeDescriptor = 1
	typeCommit     = 2
	typeSuperV1    = 3
	typeSuperV2    = 4
	typeRevoke     = 5
)

// Journal superblock fields (journal_superblock_t).
const (
	jsbBlockSize   = 0x0C
	jsbMaxLen      = 0x10
	jsbFirst       = 0x14
	jsbSequence    = 0x18
	jsbStart       = 0x1C
	jsbErrno       = 0x20
	jsbCompat      = 0x24
	jsbIncompat    = 0x28
	jsbROCompat    = 0x2C
	jsbUUID        = 0x30
	jsbNrUsers     = 0x40
	jsbChecksumTyp = 0x50
	jsbNumFCBlocks = 0x54
	jsbChecksum    = 0xFC
	jsbSize        = 0x400
)

// Feature bits.
const (
	CompatChecksum = 0x1

	IncompatRevoke      = 0x1
	Incompat64Bit       = 0x2
	IncompatAsyncCommit = 0x4
	IncompatCsumV2      = 0x8
	IncompatCsumV3      = 0x10
	IncompatFastCommit  = 0x20

	knownIncompat = IncompatRevoke | Incompat64Bit | IncompatAsyncCommit |
		IncompatCsumV2 | IncompatCsumV3 | IncompatFastCommit
)

// Tag flags.
const (
	flagEscape   = 1
	flagSameUUID = 2
	flagDeleted  = 4 // ignored by recovery, as jbd2 ignores it
	flagLastTag  = 8
)

// Commit block fields (struct commit_header).
const (
	commitChksumType = 12
	commitChksumSize = 13
	commitChksum0    = 16
	commitSec        = 48
	commitHeaderSize = 60 // sizeof(struct commit_header)

	crc32ChksumType = 1
	crc32ChksumSize = 4
	csumTypeCRC32C  = 4
)

// Limits.
const (
	minBlocks         = 1024 // JBD2_MIN_JOURNAL_BLOCKS
	maxBlocks         = 1 << 24
	defaultFCBlocks   = 256
	fcTagHead         = 9
	readWindowBlocks  = 64
	maxSaneBlockSize  = 64 << 10
	minSaneBlockSize  = 1024
	tailSize          = 4 // struct jbd2_journal_block_tail
	revokeHeaderBytes = 16
)

// ErrUnsupported is matched by errors for journals this package does not
// understand (unknown features, an unexpected layout).
var ErrUnsupported = errors.New("jbd2: unsupported journal")

// ErrRecovery is matched by errors for journals whose recovery jbd2 itself
// would fail or refuse (bad journal superblock, checksum errors it does not
// ignore, unreadable blocks).
var ErrRecovery = errors.New("jbd2: journal recovery would fail")

// Error is an error of this package; errors.Is matches its Kind.
type Error struct {
	Kind error // ErrUnsupported or ErrRecovery
	Msg  string
}

func (e *Error) Error() string        { return e.Msg }
func (e *Error) Is(target error) bool { return target == e.Kind }

func unsupported(format string, args ...any) error {
	return &Error{Kind: ErrUnsupported, Msg: fmt.Sprintf(format, args...)}
}

func failed(format string, args ...any) error {
	return &Error{Kind: ErrRecovery, Msg: fmt.Sprintf(format, args...)}
}

// Copy is one block logged in the journal: a copy of filesystem block Home
// stored at journal block Pos by transaction Seq.
type Copy struct {
	Home    uint64 // filesystem block number the copy belongs to
	Pos     uint32 // journal block holding the copy
	Seq     uint32 // transaction ID
	Escaped bool   // its first 4 bytes must be put back to the jbd2 magic
	// Replay is true when recovery writes this copy home: its transaction
	// is committed (before End) and no revoke record of a committed
	// transaction cancels it. A later Replay copy of the same Home
	// overwrites it.
	Replay bool
	// Revoked is true when any revoke record in the walked log (committed or
	// not) names Home with a transaction ID at or after Seq.
	Revoked bool

	csum uint32 // the tag's checksum (csum v2: low 16 bits)
}

// Log is what Recover found.
type Log struct {
	BlockSize int
	Version   int    // journal superblock version: 1 or 2
	MaxLen    uint32 // s_maxlen: journal blocks, superblock included
	First     uint32 // s_first: first log block
	Last      uint32 // the log wraps here (MaxLen, less the fast-commit area)
	Start     uint32 // s_start: where the log begins; 0 if clean
	Sequence  uint32 // s_sequence: the first transaction to replay
	End       uint32 // the first transaction not replayed
	Compat    uint32
	Incompat  uint32
	ROCompat  uint32

	// Copies lists every block tagged by a descriptor block of the walked
	// log, in log order: the committed transactions and the uncommitted
	// tail, revoked or not.
	Copies []Copy
	// Revokes counts revoke records in the committed transactions.
	Revokes int
	// Walked counts the journal blocks the scan went through.
	Walked int
	// Wrapped is true when the walked log runs past Last back to First.
	Wrapped bool

	// FCBlocks is the size of the fast-commit area (0 without fast_commit),
	// which is the last FCBlocks blocks of the journal.
	FCBlocks uint32
	// FastCommit is true when the fast-commit area begins with a head for a
	// transaction at or after Sequence: fast-commit replay would add to the
	// replayed state, in ways the logged blocks do not show.
	FastCommit    bool
	FastCommitTID uint32

	seed  uint32 // crc32c seed for csum v2/v3: crc32c(~0, journal UUID)
	r     io.ReaderAt
	win   []byte
	winAt uint32
	winN  uint32
}

// Clean reports whether there is nothing to replay (s_start == 0).
func (l *Log) Clean() bool { return l.Start == 0 }

// Transactions returns the number of transactions recovery replays.
func (l *Log) Transactions() int { return int(l.End - l.Sequence) }

// Replayed returns the number of block copies recovery writes home.
func (l *Log) Replayed() int {
	n := 0
	for _, c := range l.Copies {
		if c.Replay {
			n++
		}
	}
	return n
}

// Recover reads the journal in r, size bytes long, whose filesystem uses
// fsBlockSize-byte blocks, and runs the scan, revoke and replay passes in
// memory. The journal's own blocks are read through r at i*fsBlockSize.
func Recover(r io.ReaderAt, size int64, fsBlockSize int) (*Log, error) {
	if fsBlockSize < minSaneBlockSize || fsBlockSize > maxSaneBlockSize || fsBlockSize&(fsBlockSize-1) != 0 {
		return nil, unsupported("jbd2: filesystem block size %d out of range", fsBlockSize)
	}
	l := &Log{BlockSize: fsBlockSize, r: r}
	if err := l.readSuper(size); err != nil {
		return nil, err
	}
	if l.Clean() {
		l.End = l.Sequence
		return l, nil
	}
	if l.Start < l.First || l.Start >= l.Last {
		return nil, failed("jbd2: log start %d outside the log [%d, %d)", l.Start, l.First, l.Last)
	}
	w := &walker{l: l}
	if err := w.scan(); err != nil {
		return nil, err
	}
	if err := w.revoke(); err != nil {
		return nil, err
	}
	if err := w.replay(); err != nil {
		return nil, err
	}
	if l.Incompat&IncompatFastCommit != 0 {
		if err := l.checkFastCommit(); err != nil {
			return nil, err
		}
	}
	l.win = nil
	return l, nil
}

// readSuper validates the journal superblock, as jbd2's
// journal_check_superblock and load_superblock do.
func (l *Log) readSuper(size int64) error {
	bs := int64(l.BlockSize)
	if size < bs*minBlocks {
		// e2fsck: EXT2_ET_JOURNAL_TOO_SMALL
		return failed("jbd2: journal of %d bytes is too small", size)
	}
	b := make([]byte, jsbSize)
	if _, err := l.r.ReadAt(b, 0); err != nil {
		return failed("jbd2: reading the journal superblock: %v", err)
	}
	be := binary.BigEndian
	if m := be.Uint32(b[0:]); m != magic {
		return failed("jbd2: bad journal superblock magic %#x", m)
	}
	switch t := be.Uint32(b[4:]); t {
	case typeSuperV1:
		l.Version = 1
	case typeSuperV2:
		l.Version = 2
	default:
		return failed("jbd2: journal superblock of unknown type %d", t)
	}
	if got := be.Uint32(b[jsbBlockSize:]); int64(got) != bs {
		return failed("jbd2: journal block size %d differs from the filesystem's %d", got, bs)
	}
	l.MaxLen = be.Uint32(b[jsbMaxLen:])
	total := size / bs
	if int64(l.MaxLen) > total {
		return failed("jbd2: journal claims %d blocks but its inode holds %d", l.MaxLen, total)
	}
	if l.MaxLen < minBlocks {
		// journal_check_superblock: "journal file too short"
		return failed("jbd2: journal of %d blocks is shorter than jbd2's minimum %d", l.MaxLen, minBlocks)
	}
	if l.MaxLen > maxBlocks {
		return unsupported("jbd2: journal of %d blocks out of range", l.MaxLen)
	}
	l.First = be.Uint32(b[jsbFirst:])
	if l.First == 0 || l.First >= l.MaxLen {
		return failed("jbd2: s_first %d outside the journal's %d blocks", l.First, l.MaxLen)
	}
	l.Sequence = be.Uint32(b[jsbSequence:])
	l.Start = be.Uint32(b[jsbStart:])
	if e := be.Uint32(b[jsbErrno:]); e != 0 {
		return failed("jbd2: the journal recorded an error (s_errno %d): it was aborted", int32(e))
	}
	l.Last = l.MaxLen
	if l.Version == 1 {
		return nil // a v1 superblock has no feature fields
	}
	l.Compat = be.Uint32(b[jsbCompat:])
	l.Incompat = be.Uint32(b[jsbIncompat:])
	l.ROCompat = be.Uint32(b[jsbROCompat:])
	if x := l.Incompat &^ knownIncompat; x != 0 {
		return unsupported("jbd2: unknown journal INCOMPAT feature %#x", x)
	}
	if l.ROCompat != 0 {
		return unsupported("jbd2: unknown journal RO_COMPAT feature %#x", l.ROCompat)
	}
	v2, v3 := l.Incompat&IncompatCsumV2 != 0, l.Incompat&IncompatCsumV3 != 0
	if v2 && v3 {
		return failed("jbd2: journal has both csum v2 and v3")
	}
	if (v2 || v3) && l.Compat&CompatChecksum != 0 {
		return failed("jbd2: journal has both the v1 checksum and csum v2/v3")
	}
	if v2 || v3 {
		if t := b[jsbChecksumTyp]; t != csumTypeCRC32C {
			return failed("jbd2: journal checksum type %d is not crc32c", t)
		}
		want := be.Uint32(b[jsbChecksum:])
		c := crc32c(^uint32(0), b[:jsbChecksum])
		c = crc32c(c, []byte{0, 0, 0, 0})
		c = crc32c(c, b[jsbChecksum+4:])
		if c != want {
			return failed("jbd2: journal superblock checksum mismatch")
		}
		l.seed = crc32c(^uint32(0), b[jsbUUID:jsbUUID+16])
	}
	if l.Incompat&IncompatFastCommit != 0 {
		n := be.Uint32(b[jsbNumFCBlocks:])
		if n == 0 {
			n = defaultFCBlocks
		}
		if n >= l.MaxLen || l.MaxLen-n < minBlocks {
			return failed("jbd2: fast-commit area of %d blocks leaves too small a log in %d blocks", n, l.MaxLen)
		}
		l.FCBlocks = n
		l.Last = l.MaxLen - n
	}
	if l.First >= l.Last {
		return failed("jbd2: s_first %d beyond the log end %d", l.First, l.Last)
	}
	return nil
}

func (l *Log) csumV2or3() bool { return l.Incompat&(IncompatCsumV2|IncompatCsumV3) != 0 }
func (l *Log) has64Bit() bool  { return l.Incompat&Incompat64Bit != 0 }

// tagBytes is journal_tag_bytes.
func (l *Log) tagBytes() int {
	if l.Incompat&IncompatCsumV3 != 0 {
		return 16
	}
	n := 12
	if l.Incompat&IncompatCsumV2 != 0 {
		n += 2
	}
	if l.has64Bit() {
		return n
	}
	return n - 4
}

// block returns journal block i (valid until the next call). Reads go a
// window of blocks at a time: recovery is one long sequential read.
func (l *Log) block(i uint32) ([]byte, error) {
	if i >= l.MaxLen {
		return nil, failed("jbd2: log block %d beyond the journal's %d blocks", i, l.MaxLen)
	}
	bs := uint32(l.BlockSize)
	if l.win == nil || i < l.winAt || i >= l.winAt+l.winN {
		n := min(uint32(readWindowBlocks), l.MaxLen-i)
		if l.win == nil {
			l.win = make([]byte, readWindowBlocks*l.BlockSize)
		}
		if _, err := l.r.ReadAt(l.win[:n*bs], int64(i)*int64(bs)); err != nil {
			l.winN = 0
			return nil, failed("jbd2: reading log block %d: %v", i, err)
		}
		l.winAt, l.winN = i, n
	}
	off := (i - l.winAt) * bs
	return l.win[off : off+bs], nil
}

// ReadCopy reads the logged copy c into buf (len >= BlockSize), with the
// escaped magic put back, as replay writes it.
func (l *Log) ReadCopy(c Copy, buf []byte) error {
	if c.Pos >= l.MaxLen {
		return failed("jbd2: log block %d beyond the journal", c.Pos)
	}
	buf = buf[:l.BlockSize]
	if _, err := l.r.ReadAt(buf, int64(c.Pos)*int64(l.BlockSize)); err != nil {
		return failed("jbd2: reading log block %d: %v", c.Pos, err)
	}
	if c.Escaped {
		binary.BigEndian.PutUint32(buf, magic)
	}
	return nil
}

// ReadBlock reads journal block i into buf (len >= BlockSize): for the
// fast-commit area, whose records this package does not interpret.
func (l *Log) ReadBlock(i uint32, buf []byte) error {
	if i >= l.MaxLen {
		return failed("jbd2: block %d beyond the journal's %d blocks", i, l.MaxLen)
	}
	if _, err := l.r.ReadAt(buf[:l.BlockSize], int64(i)*int64(l.BlockSize)); err != nil {
		return failed("jbd2: reading journal block %d: %v", i, err)
	}
	return nil
}

// Final returns, for each filesystem block that recovery writes, the copy it
// ends with, sorted by Home.
func (l *Log) Final() []Copy {
	var out []Copy
	for _, c := range l.Copies {
		if c.Replay {
			out = append(out, c)
		}
	}
	// A stable sort by Home keeps log order among copies of one block: the
	// last one wins.
	sort.SliceStable(out, func(i, j int) bool { return out[i].Home < out[j].Home })
	k := 0
	for i := range out {
		if k > 0 && out[k-1].Home == out[i].Home {
			out[k-1] = out[i]
			continue
		}
		out[k] = out[i]
		k++
	}
	return out[:k]
}

// checkFastCommit looks for a fast-commit head in the fast-commit area. The
// area starts right after Last (the kernel's j_fc_first is j_last + 1; the
// block at j_last is checked too, in case a writer counts differently).
func (l *Log) checkFastCommit() error {
	le := binary.LittleEndian
	for _, i := range []uint32{l.Last, l.Last + 1} {
		if i >= l.MaxLen {
			continue
		}
		b, err := l.block(i)
		if err != nil {
			return err
		}
		if le.Uint16(b[0:]) != fcTagHead || le.Uint16(b[2:]) < 8 {
			continue
		}
		tid := le.Uint32(b[8:])
		if tidGEQ(tid, l.Sequence) {
			l.FastCommit, l.FastCommitTID = true, tid
			return nil
		}
	}
	return nil
}

// tidGT and tidGEQ compare transaction IDs modulo 2^32, as jbd2 does.
func tidGT(x, y uint32) bool  { return int32(x-y) > 0 }
func tidGEQ(x, y uint32) bool { return int32(x-y) >= 0 }
