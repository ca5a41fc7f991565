package xfsmap

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"math/bits"

	"github.com/prezero/prezero/freemap"
)

var be = binary.BigEndian

// castagnoli is the CRC32C table of every v5 metadata checksum.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// cksumOK reports whether the little-endian CRC32C stored at b[off:off+4]
// matches b with that field taken as zero, as xfs_verify_cksum computes it.
func cksumOK(b []byte, off int) bool {
	if off < 0 || off+4 > len(b) {
		return false
	}
	var zero [4]byte
	c := crc32.Update(0, castagnoli, b[:off])
	c = crc32.Update(c, castagnoli, zero[:])
	c = crc32.Update(c, castagnoli, b[off+4:])
	return c == binary.LittleEndian.Uint32(b[off:])
}

// Superblock (struct xfs_dsb) field offsets, big-endian.
const (
	sbMagicOff        = 0
	sbBlockSizeOff    = 4
	sbDBlocksOff      = 8
	sbRBlocksOff      = 16
	sbUUIDOff         = 32
	sbLogStartOff     = 48
	sbAgBlocksOff     = 84
	sbAgCountOff      = 88
	sbLogBlocksOff    = 96
	sbVersionOff      = 100
	sbSectSizeOff     = 102
	sbBlockLogOff     = 120
	sbSectLogOff      = 121
	sbAgBlkLogOff     = 124
	sbInProgressOff   = 126
	sbLogSectLogOff   = 193
	sbLogSectSizeOff  = 194
	sbLogSunitOff     = 196
	sbFeatures2Off    = 200
	sbROCompatOff     = 212
	sbIncompatOff     = 216
	sbLogIncompatOff  = 220
	sbCRCOff          = 224
	sbMetaUUIDOff     = 248
	sbV5End           = 264        // end of the fields this parser reads
	sbMagic           = 0x58465342 // "XFSB"
	minSectSize       = 512
	maxSectSize       = 32768
	minBlockSize      = 512
	maxBlockSize      = 65536
	bbSize            = 512 // the basic block: daddr and log unit
	xfsMinAgBlocks    = 64
	xfsMaxAgBytes     = 1 << 40 // XFS_MAX_AG_BYTES
	xfsMaxAgBlocksCap = 1<<31 - 1
)

// Version bits of sb_versionnum.
const (
	versionNumMask  = 0x000f
	versionLogV2    = 0x0400
	versionMoreBits = 0x8000
	versionShared   = 0x0200 // never supported by Linux
	features2CRC    = 0x0100
)

// v5 feature bits this parser understands. None of them changes what the
// free-space btrees mean; a bit outside these lists passes the volume through.
const (
	incompatFtype       = 1 << 0
	incompatSpinodes    = 1 << 1
	incompatMetaUUID    = 1 << 2
	incompatBigtime     = 1 << 3
	incompatNeedsRepair = 1 << 4
	incompatNrext64     = 1 << 5
	knownIncompat       = incompatFtype | incompatSpinodes | incompatMetaUUID | incompatBigtime | incompatNeedsRepair | incompatNrext64

	roCompatFinobt   = 1 << 0
	roCompatRmapbt   = 1 << 1
	roCompatReflink  = 1 << 2
	roCompatInobtCnt = 1 << 3
	knownROCompat    = roCompatFinobt | roCompatRmapbt | roCompatReflink | roCompatInobtCnt

	logIncompatXattrs = 1 << 0
	knownLogIncompat  = logIncompatXattrs
)

// superblock is the validated geometry of the filesystem.
type superblock struct {
	raw        []byte // the primary superblock sector
	v5         bool   // version 5: CRCs, AB3B blocks, uuid/owner in headers
	blockSize  int64
	blockLog   uint
	sectSize   int64
	dblocks    uint64
	agblocks   uint64
	agcount    uint64
	agblklog   uint
	logStart   uint64 // fsblock (agno << agblklog | agbno)
	logBlocks  uint64
	logV2      bool
	incompat   uint32
	roCompat   uint32
	logInc     uint32
	metaUUID   [16]byte // what btree blocks and AGFs carry on v5
	logStartAG uint64
	logStartBN uint64
}

// geometry returns the fields that define where everything is and how
// to read it. The covered log check compares them between the on-disk and
// the logged superblock. The v4 feature bits of sb_versionnum and
// sb_features2 are left out: the kernel sets some of them at run time
// (ATTRBIT on the first extended attribute), and none changes the
// free-space btrees.
func geometry(b []byte) []byte {
	var g []byte
	for _, f := range [][2]int{
		{sbMagicOff, 4}, {sbBlockSizeOff, 4}, {sbDBlocksOff, 8}, {sbRBlocksOff, 8},
		{sbUUIDOff, 16}, {sbLogStartOff, 8}, {sbAgBlocksOff, 4}, {sbAgCountOff, 4},
		{sbLogBlocksOff, 4}, {sbSectSizeOff, 2}, {sbBlockLogOff, 1}, {sbSectLogOff, 1},
		{sbAgBlkLogOff, 1}, {sbInProgressOff, 1}, {sbROCompatOff, 12}, {sbMetaUUIDOff, 16},
	} {
		g = append(g, b[f[0]:f[0]+f[1]]...)
	}
	return append(g, b[sbVersionOff+1]&versionNumMask)
}

// readSuper reads and validates the primary superblock of a volume of
// size bytes.
func readSuper(r *reader, size int64) (*superblock, error) {
	head := make([]byte, minSectSize)
	if err := r.read(head, 0); err != nil {
		return nil, err
	}
	if be.Uint32(head[sbMagicOff:]) != sbMagic {
		return nil, freemap.Formatf(sbMagicOff, "xfs: no superblock magic")
	}
	s := &superblock{}
	s.sectSize = int64(be.Uint16(head[sbSectSizeOff:]))
	if s.sectSize < minSectSize || s.sectSize > maxSectSize || !pow2(s.sectSize) ||
		uint(head[sbSectLogOff]) != log2(s.sectSize) {
		return nil, freemap.Formatf(sbSectSizeOff, "xfs: bad sector size %d (log %d)", s.sectSize, head[sbSectLogOff])
	}
	b := head
	if s.sectSize > minSectSize {
		b = make([]byte, s.sectSize)
		if err := r.read(b, 0); err != nil {
			return nil, err
		}
	}
	s.raw = b
	ver := be.Uint16(b[sbVersionOff:])
	switch ver & versionNumMask {
	case 4:
		if ver&versionShared != 0 {
			return nil, freemap.Unsupported("xfs: shared v4 superblock (versionnum %#x)", ver)
		}
		if ver&versionMoreBits != 0 && be.Uint32(b[sbFeatures2Off:])&features2CRC != 0 {
			return nil, freemap.Formatf(sbFeatures2Off, "xfs: v4 superblock claims CRCs")
		}
	case 5:
		s.v5 = true
		if !cksumOK(b, sbCRCOff) {
			return nil, freemap.Formatf(sbCRCOff, "xfs: superblock checksum mismatch")
		}
	default:
		return nil, freemap.Unsupported("xfs: superblock version %d is not 4 or 5", ver&versionNumMask)
	}
	s.logV2 = s.v5 || ver&versionLogV2 != 0

	s.blockSize = int64(be.Uint32(b[sbBlockSizeOff:]))
	if s.blockSize < minBlockSize || s.blockSize > maxBlockSize || !pow2(s.blockSize) ||
		uint(b[sbBlockLogOff]) != log2(s.blockSize) || s.blockSize < s.sectSize {
		return nil, freemap.Formatf(sbBlockSizeOff, "xfs: bad block size %d (log %d, sector %d)", s.blockSize, b[sbBlockLogOff], s.sectSize)
	}
	if s.v5 && s.blockSize < 1024 {
		return nil, freemap.Formatf(sbBlockSizeOff, "xfs: v5 block size %d below 1024", s.blockSize)
	}
	s.blockLog = log2(s.blockSize)
	s.dblocks = be.Uint64(b[sbDBlocksOff:])
	s.agblocks = uint64(be.Uint32(b[sbAgBlocksOff:]))
	s.agcount = uint64(be.Uint32(b[sbAgCountOff:]))
	s.agblklog = uint(b[sbAgBlkLogOff])
	if s.agblocks < xfsMinAgBlocks || s.agblocks > xfsMaxAgBlocksCap || s.agblocks<<s.blockLog > xfsMaxAgBytes {
		return nil, freemap.Formatf(sbAgBlocksOff, "xfs: bad AG size %d blocks", s.agblocks)
	}
	if s.agblklog != uint(bits.Len64(s.agblocks-1)) {
		return nil, freemap.Formatf(sbAgBlkLogOff, "xfs: agblklog %d does not match AG size %d", s.agblklog, s.agblocks)
	}
	if s.agcount == 0 || s.dblocks == 0 || s.dblocks > (s.agcount)*s.agblocks ||
		s.dblocks <= (s.agcount-1)*s.agblocks {
		return nil, freemap.Formatf(sbDBlocksOff, "xfs: %d blocks do not make %d AGs of %d blocks", s.dblocks, s.agcount, s.agblocks)
	}
	if last := s.dblocks - (s.agcount-1)*s.agblocks; last < xfsMinAgBlocks && s.agcount > 1 {
		return nil, freemap.Formatf(sbDBlocksOff, "xfs: last AG of %d blocks is too small", last)
	}
	if s.dblocks > uint64(size)>>s.blockLog {
		return nil, freemap.Formatf(sbDBlocksOff, "xfs: filesystem of %d blocks of %d bytes is larger than its %d-byte volume", s.dblocks, s.blockSize, size)
	}
	if b[sbInProgressOff] != 0 {
		return nil, freemap.Unsafe("xfs: mkfs did not finish (sb_inprogress is set)")
	}
	if rb := be.Uint64(b[sbRBlocksOff:]); rb != 0 {
		return nil, freemap.Unsupported("xfs: realtime section of %d blocks", rb)
	}
	copy(s.metaUUID[:], b[sbUUIDOff:sbUUIDOff+16])
	if s.v5 {
		s.incompat = be.Uint32(b[sbIncompatOff:])
		s.roCompat = be.Uint32(b[sbROCompatOff:])
		s.logInc = be.Uint32(b[sbLogIncompatOff:])
		if x := s.incompat &^ knownIncompat; x != 0 {
			return nil, freemap.Unsupported("xfs: unknown incompatible features %#x", x)
		}
		if x := s.roCompat &^ knownROCompat; x != 0 {
			return nil, freemap.Unsupported("xfs: unknown read-only-compatible features %#x", x)
		}
		if x := s.logInc &^ knownLogIncompat; x != 0 {
			return nil, freemap.Unsupported("xfs: unknown log-incompatible features %#x", x)
		}
		if s.incompat&incompatNeedsRepair != 0 {
			return nil, freemap.Unsafe("xfs: the filesystem is marked as needing xfs_repair")
		}
		if s.incompat&incompatMetaUUID != 0 {
			copy(s.metaUUID[:], b[sbMetaUUIDOff:sbMetaUUIDOff+16])
		}
	}

	s.logStart = be.Uint64(b[sbLogStartOff:])
	s.logBlocks = uint64(be.Uint32(b[sbLogBlocksOff:]))
	if s.logStart == 0 {
		return nil, freemap.Unsupported("xfs: external log (its device is not part of this volume)")
	}
	if !s.logV2 {
		return nil, freemap.Unsupported("xfs: version 1 log")
	}
	s.logStartAG = s.logStart >> s.agblklog
	s.logStartBN = s.logStart & (1<<s.agblklog - 1)
	if s.logStartAG >= s.agcount || s.logBlocks < 64 || s.logStartBN+s.logBlocks > s.agLen(s.logStartAG) {
		return nil, freemap.Formatf(sbLogStartOff, "xfs: internal log at fsblock %d (%d blocks) lies outside its AG", s.logStart, s.logBlocks)
	}
	if ls := b[sbLogSectLogOff]; ls != 0 {
		lss := int64(be.Uint16(b[sbLogSectSizeOff:]))
		if lss < bbSize || lss > maxSectSize || !pow2(lss) || uint(ls) != log2(lss) {
			return nil, freemap.Formatf(sbLogSectSizeOff, "xfs: bad log sector size %d", lss)
		}
	}
	return s, nil
}

// agLen returns the number of blocks of AG agno (the last one may be short).
func (s *superblock) agLen(agno uint64) uint64 {
	if agno+1 < s.agcount {
		return s.agblocks
	}
	return s.dblocks - agno*s.agblocks
}

// agOff returns the byte offset of block agbno of AG agno.
func (s *superblock) agOff(agno, agbno uint64) int64 {
	return int64((agno*s.agblocks + agbno) << s.blockLog)
}

// headerBlocks returns how many blocks the AG headers (SB, AGF, AGI, AGFL
// sectors) occupy at the start of every AG.
func (s *superblock) headerBlocks() uint64 {
	return uint64((4*s.sectSize + s.blockSize - 1) >> s.blockLog)
}

// uuidOK reports whether a v5 header's uuid is the filesystem's.
func (s *superblock) uuidOK(u []byte) bool { return bytes.Equal(u, s.metaUUID[:]) }

func pow2(n int64) bool { return n > 0 && n&(n-1) == 0 }

func log2(n int64) uint { return uint(bits.Len64(uint64(n)) - 1) }
