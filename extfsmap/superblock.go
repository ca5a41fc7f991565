package extfsmap

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"math/bits"
	"strings"

	"github.com/prezero/prezero/freemap"
)

// The primary superblock: 1024 bytes at byte 1024 of the volume.
const (
	sbOffset = 1024
	sbSize   = 1024
	sbMagic  = 0xEF53
)

// Superblock field offsets (struct ext2_super_block).
const (
	sbInodesCount      = 0x00
	sbBlocksCountLo    = 0x04
	sbFreeBlocksLo     = 0x0C
	sbFirstDataBlock   = 0x14
	sbLogBlockSize     = 0x18
	sbLogClusterSize   = 0x1C
	sbBlocksPerGroup   = 0x20
	sbClustersPerGroup = 0x24
	sbInodesPerGroup   = 0x28
	sbMagicOff         = 0x38
	sbState            = 0x3A
	sbRevLevel         = 0x4C
	sbInodeSize        = 0x58
	sbFeatureCompat    = 0x5C
	sbFeatureIncompat  = 0x60
	sbFeatureROCompat  = 0x64
	sbUUID             = 0x68
	sbReservedGDT      = 0xCE
	sbDescSize         = 0xFE
	sbFirstMetaBG      = 0x104
	sbBlocksCountHi    = 0x150
	sbFreeBlocksHi     = 0x158
	sbMMPBlock         = 0x168
	sbChecksumType     = 0x175
	sbBackupBGs        = 0x24C
	sbChecksumSeed     = 0x270
	sbChecksum         = 0x3FC
)

// s_state bits.
const (
	stateValid  = 0x1
	stateErrors = 0x2
)

// Feature bits.
const (
	compatHasJournal   = 0x0004
	compatSparseSuper2 = 0x0200

	incompatCompression = 0x0001
	incompatFiletype    = 0x0002
	incompatRecover     = 0x0004
	incompatJournalDev  = 0x0008
	incompatMetaBG      = 0x0010
	incompatExtents     = 0x0040
	incompat64Bit       = 0x0080
	incompatMMP         = 0x0100
	incompatFlexBG      = 0x0200
	incompatEAInode     = 0x0400
	incompatDirData     = 0x1000
	incompatCsumSeed    = 0x2000
	incompatLargeDir    = 0x4000
	incompatInlineData  = 0x8000
	incompatEncrypt     = 0x10000
	incompatCasefold    = 0x20000

	roCompatSparseSuper   = 0x0001
	roCompatLargeFile     = 0x0002
	roCompatBtreeDir      = 0x0004
	roCompatHugeFile      = 0x0008
	roCompatGDTCsum       = 0x0010
	roCompatDirNlink      = 0x0020
	roCompatExtraIsize    = 0x0040
	roCompatHasSnapshot   = 0x0080
	roCompatQuota         = 0x0100
	roCompatBigalloc      = 0x0200
	roCompatMetadataCsum  = 0x0400
	roCompatReplica       = 0x0800
	roCompatReadonly      = 0x1000
	roCompatProject       = 0x2000
	roCompatSharedBlocks  = 0x4000
	roCompatVerity        = 0x8000
	roCompatOrphanPresent = 0x10000
)

// knownIncompat and knownROCompat are the features whose effect on block
// allocation is understood: the ones e2fsprogs 1.47 supports. Anything else
// may change what a bitmap bit means, so the volume is passed through.
const (
	knownIncompat = incompatFiletype | incompatRecover | incompatJournalDev |
		incompatMetaBG | incompatExtents | incompat64Bit | incompatMMP |
		incompatFlexBG | incompatEAInode | incompatCsumSeed | incompatLargeDir |
		incompatInlineData | incompatEncrypt | incompatCasefold
	knownROCompat = roCompatSparseSuper | roCompatLargeFile | roCompatHugeFile |
		roCompatGDTCsum | roCompatDirNlink | roCompatExtraIsize | roCompatQuota |
		roCompatBigalloc | roCompatMetadataCsum | roCompatReadonly |
		roCompatProject | roCompatSharedBlocks | roCompatVerity |
		roCompatOrphanPresent
	// blkid calls a filesystem ext4 when it has features beyond these.
	ext3Incompat = incompatFiletype | incompatRecover | incompatMetaBG
	ext3ROCompat = roCompatSparseSuper | roCompatLargeFile | roCompatBtreeDir
)

// Limits. maxGroups bounds the work and the metadata extents kept in memory
// (512 TiB with 4 KiB blocks and 32768 blocks per group).
const (
	maxLogBlockSize   = 6  // 64 KiB blocks
	maxLogClusterSize = 20 // 1 GiB clusters, as the kernel allows
	maxGroups         = 1 << 22
	maxDescSize       = 1024
	descSize32        = 32
	descSize64        = 64
)

// superblock is the validated geometry of a filesystem.
type superblock struct {
	kind string

	blockSize        int64
	clusterSize      int64
	clusterBits      uint // log2(clusterSize / blockSize)
	blocksCount      uint64
	freeBlocks       uint64
	firstDataBlock   uint64
	blocksPerGroup   uint64
	clustersPerGroup uint64
	inodesPerGroup   uint64
	inodeSize        uint64
	itableBlocks     uint64 // inode table blocks per group
	groups           uint64
	descSize         int64
	descPerBlock     uint64
	descBlocks       uint64
	firstMetaBG      uint64
	reservedGDT      uint64
	backupBGs        [2]uint32
	state            uint16
	compat           uint32
	incompat         uint32
	roCompat         uint32
	uuid             [16]byte
	mmpBlock         uint64

	metadataCsum bool
	gdtCsum      bool // gdt_csum (uninit_bg) or metadata_csum: descriptors carry a checksum
	csumSeed     uint32
}

func (s *superblock) has64Bit() bool   { return s.incompat&incompat64Bit != 0 }
func (s *superblock) hasMetaBG() bool  { return s.incompat&incompatMetaBG != 0 }
func (s *superblock) hasSparse() bool  { return s.roCompat&roCompatSparseSuper != 0 }
func (s *superblock) hasSparse2() bool { return s.compat&compatSparseSuper2 != 0 }
func (s *superblock) bigalloc() bool   { return s.roCompat&roCompatBigalloc != 0 }
func (s *superblock) fsBytes() int64   { return int64(s.blocksCount) * s.blockSize }
func (s *superblock) ratio() uint64    { return 1 << s.clusterBits }
func (s *superblock) errorf(off int64, format string, args ...any) error {
	return freemap.Formatf(off, "%s: %s", s.kind, fmt.Sprintf(format, args...))
}

// kindOf names the filesystem as blkid does.
func kindOf(compat, incompat, roCompat uint32) string {
	switch {
	case incompat&^ext3Incompat != 0 || roCompat&^ext3ROCompat != 0:
		return "ext4"
	case compat&compatHasJournal != 0:
		return "ext3"
	}
	return "ext2"
}

// parseSuperblock validates the primary superblock b (1024 bytes) of a
// volume of size bytes. Errors match freemap.ErrFormat (corrupt), ErrUnsupported
// (valid, not understood) or ErrUnsafe (valid, state not trustworthy).
func parseSuperblock(b []byte, size int64) (*superblock, error) {
	le := binary.LittleEndian
	u32 := func(off int) uint32 { return le.Uint32(b[off:]) }
	u16 := func(off int) uint16 { return le.Uint16(b[off:]) }
	at := func(off int) int64 { return sbOffset + int64(off) }

	s := &superblock{
		compat:   u32(sbFeatureCompat),
		incompat: u32(sbFeatureIncompat),
		roCompat: u32(sbFeatureROCompat),
		state:    u16(sbState),
	}
	s.kind = kindOf(s.compat, s.incompat, s.roCompat)
	if m := u16(sbMagicOff); m != sbMagic {
		return nil, freemap.Formatf(at(sbMagicOff), "ext: bad superblock magic %#04x", m)
	}
	copy(s.uuid[:], b[sbUUID:sbUUID+16])

	// Features first: an unknown feature or a journal needing replay makes
	// every other field's meaning uncertain.
	if s.incompat&incompatJournalDev != 0 {
		return nil, s.unsupported("this is an external journal device, not a filesystem: it has no free-space bitmaps")
	}
	if x := s.incompat &^ knownIncompat; x != 0 {
		return nil, s.unsupported("unknown INCOMPAT feature %#x (%s)", x, incompatNames(x))
	}
	if x := s.roCompat &^ knownROCompat; x != 0 {
		return nil, s.unsupported("unknown RO_COMPAT feature %#x (%s)", x, roCompatNames(x))
	}
	if s.incompat&incompatRecover != 0 {
		return nil, s.unsafe("needs_recovery set: the journal holds transactions not yet applied to the bitmaps (mounted, or not cleanly unmounted); mount and unmount it, or run e2fsck, first")
	}
	s.metadataCsum = s.roCompat&roCompatMetadataCsum != 0
	s.gdtCsum = s.metadataCsum || s.roCompat&roCompatGDTCsum != 0
	if s.metadataCsum {
		if t := b[sbChecksumType]; t != 1 {
			return nil, s.errorf(at(sbChecksumType), "metadata_csum with unknown checksum type %d", t)
		}
		if !superChecksumOK(b) {
			return nil, s.errorf(at(sbChecksum), "superblock checksum mismatch")
		}
		if s.incompat&incompatCsumSeed != 0 {
			s.csumSeed = u32(sbChecksumSeed)
		} else {
			s.csumSeed = crc32c(^uint32(0), s.uuid[:])
		}
	}
	if rev := u32(sbRevLevel); rev > 1 {
		return nil, s.errorf(at(sbRevLevel), "revision level %d is newer than 1", rev)
	}
	if s.state&stateValid == 0 {
		return nil, s.unsafe("not cleanly unmounted (s_state %#x): it is mounted or crashed, so its bitmaps may be stale; unmount it or run e2fsck first", s.state)
	}

	// Block and cluster size.
	logBlock := u32(sbLogBlockSize)
	if logBlock > maxLogBlockSize {
		return nil, s.errorf(at(sbLogBlockSize), "s_log_block_size %d out of range 0..%d", logBlock, maxLogBlockSize)
	}
	s.blockSize = 1024 << logBlock
	logCluster := u32(sbLogClusterSize)
	if s.bigalloc() {
		if logCluster < logBlock || logCluster > maxLogClusterSize {
			return nil, s.errorf(at(sbLogClusterSize), "s_log_cluster_size %d out of range %d..%d", logCluster, logBlock, maxLogClusterSize)
		}
	} else if logCluster != logBlock {
		return nil, s.errorf(at(sbLogClusterSize), "s_log_cluster_size %d differs from s_log_block_size %d without bigalloc", logCluster, logBlock)
	}
	s.clusterBits = uint(logCluster - logBlock)
	s.clusterSize = s.blockSize << s.clusterBits

	// Group geometry.
	s.blocksPerGroup = uint64(u32(sbBlocksPerGroup))
	s.clustersPerGroup = uint64(u32(sbClustersPerGroup))
	maxPerGroup := uint64(s.blockSize) * 8 // one bitmap block
	if s.clustersPerGroup == 0 || s.clustersPerGroup%8 != 0 || s.clustersPerGroup > maxPerGroup {
		return nil, s.errorf(at(sbClustersPerGroup), "s_clusters_per_group %d not a multiple of 8 in 8..%d", s.clustersPerGroup, maxPerGroup)
	}
	if s.blocksPerGroup == 0 || s.blocksPerGroup != s.clustersPerGroup<<s.clusterBits {
		return nil, s.errorf(at(sbBlocksPerGroup), "s_blocks_per_group %d is not s_clusters_per_group %d times %d blocks per cluster", s.blocksPerGroup, s.clustersPerGroup, s.ratio())
	}
	s.inodesPerGroup = uint64(u32(sbInodesPerGroup))
	if s.inodesPerGroup == 0 || s.inodesPerGroup > maxPerGroup {
		return nil, s.errorf(at(sbInodesPerGroup), "s_inodes_per_group %d out of range 1..%d", s.inodesPerGroup, maxPerGroup)
	}
	s.inodeSize = 128
	if u32(sbRevLevel) >= 1 {
		s.inodeSize = uint64(u16(sbInodeSize))
		if s.inodeSize < 128 || s.inodeSize > uint64(s.blockSize) || bits.OnesCount64(s.inodeSize) != 1 {
			return nil, s.errorf(at(sbInodeSize), "s_inode_size %d not a power of two in 128..%d", s.inodeSize, s.blockSize)
		}
	}
	s.itableBlocks = (s.inodesPerGroup*s.inodeSize + uint64(s.blockSize) - 1) / uint64(s.blockSize)

	// Size of the filesystem.
	s.blocksCount = uint64(u32(sbBlocksCountLo))
	s.freeBlocks = uint64(u32(sbFreeBlocksLo))
	if s.has64Bit() {
		s.blocksCount |= uint64(u32(sbBlocksCountHi)) << 32
		s.freeBlocks |= uint64(u32(sbFreeBlocksHi)) << 32
	}
	if s.blocksCount == 0 || s.blocksCount > uint64(math.MaxInt64/s.blockSize) {
		return nil, s.errorf(at(sbBlocksCountLo), "s_blocks_count %d out of range", s.blocksCount)
	}
	if s.fsBytes() > size {
		return nil, s.errorf(at(sbBlocksCountLo), "filesystem claims %d blocks of %d bytes (%d bytes) but the volume holds only %d bytes: truncated image or wrong partition size", s.blocksCount, s.blockSize, s.fsBytes(), size)
	}

	// First data block: 1 for 1 KiB blocks (block 0 is the boot block),
	// else 0; bigalloc always starts at 0.
	s.firstDataBlock = uint64(u32(sbFirstDataBlock))
	wantFirst := uint64(0)
	if s.blockSize == 1024 && !s.bigalloc() {
		wantFirst = 1
	}
	if s.firstDataBlock != wantFirst {
		return nil, s.errorf(at(sbFirstDataBlock), "s_first_data_block %d, want %d for %d-byte blocks", s.firstDataBlock, wantFirst, s.blockSize)
	}
	if s.blocksCount <= s.firstDataBlock {
		return nil, s.errorf(at(sbBlocksCountLo), "s_blocks_count %d leaves no data blocks", s.blocksCount)
	}
	s.groups = (s.blocksCount - s.firstDataBlock + s.blocksPerGroup - 1) / s.blocksPerGroup
	if s.groups > maxGroups {
		return nil, s.unsupported("%d block groups, more than the %d this tool maps", s.groups, maxGroups)
	}
	if ic := uint64(u32(sbInodesCount)); ic != s.groups*s.inodesPerGroup {
		return nil, s.errorf(at(sbInodesCount), "s_inodes_count %d is not %d groups times %d inodes", ic, s.groups, s.inodesPerGroup)
	}

	// Group descriptors.
	s.descSize = descSize32
	if s.has64Bit() {
		s.descSize = int64(u16(sbDescSize))
		if s.descSize < descSize64 || s.descSize > maxDescSize || s.descSize > s.blockSize || bits.OnesCount64(uint64(s.descSize)) != 1 {
			return nil, s.errorf(at(sbDescSize), "s_desc_size %d not a power of two in %d..%d", s.descSize, descSize64, min(maxDescSize, s.blockSize))
		}
	}
	s.descPerBlock = uint64(s.blockSize / s.descSize)
	s.descBlocks = (s.groups + s.descPerBlock - 1) / s.descPerBlock
	s.reservedGDT = uint64(u16(sbReservedGDT))
	if s.reservedGDT > uint64(s.blockSize/4) {
		return nil, s.errorf(at(sbReservedGDT), "s_reserved_gdt_blocks %d more than %d", s.reservedGDT, s.blockSize/4)
	}
	if s.hasMetaBG() {
		s.firstMetaBG = uint64(u32(sbFirstMetaBG))
		if s.firstMetaBG > s.descBlocks {
			return nil, s.errorf(at(sbFirstMetaBG), "s_first_meta_bg %d beyond the %d descriptor blocks", s.firstMetaBG, s.descBlocks)
		}
	}
	if s.hasSparse2() {
		s.backupBGs[0] = u32(sbBackupBGs)
		s.backupBGs[1] = u32(sbBackupBGs + 4)
	}
	if s.incompat&incompatMMP != 0 {
		s.mmpBlock = le.Uint64(b[sbMMPBlock:])
		if s.mmpBlock < s.firstDataBlock || s.mmpBlock >= s.blocksCount {
			return nil, s.errorf(at(sbMMPBlock), "s_mmp_block %d outside the filesystem", s.mmpBlock)
		}
	}
	return s, nil
}

func (s *superblock) unsupported(format string, args ...any) error {
	return freemap.Unsupported("%s: %s", s.kind, fmt.Sprintf(format, args...))
}

func (s *superblock) unsafe(format string, args ...any) error {
	return freemap.Unsafe("%s: %s", s.kind, fmt.Sprintf(format, args...))
}

var incompatNameList = []struct {
	bit  uint32
	name string
}{
	{incompatCompression, "compression"}, {incompatDirData, "dirdata"},
}

var roCompatNameList = []struct {
	bit  uint32
	name string
}{
	{roCompatBtreeDir, "btree_dir"}, {roCompatHasSnapshot, "snapshot"},
	{roCompatReplica, "replica"},
}

func featureNames(x uint32, list []struct {
	bit  uint32
	name string
}) string {
	var names []string
	for _, f := range list {
		if x&f.bit != 0 {
			names = append(names, f.name)
			x &^= f.bit
		}
	}
	for x != 0 {
		bit := x & -x
		names = append(names, fmt.Sprintf("FEATURE_%#x", bit))
		x &^= bit
	}
	return strings.Join(names, " ")
}

func incompatNames(x uint32) string { return featureNames(x, incompatNameList) }
func roCompatNames(x uint32) string { return featureNames(x, roCompatNameList) }

// Layout-defining fields that a backup superblock must share with the
// primary. The kernel updates only the primary for the features it turns on
// by itself (large_file, huge_file, dir_nlink, extra_isize, ...), and
// tune2fs may too, so only the bits that say where metadata lies are
// compared (e2fsck -f brings the backups in line with the primary).
const (
	layoutCompat   = compatSparseSuper2
	layoutIncompat = incompatMetaBG | incompat64Bit
	layoutROCompat = roCompatSparseSuper | roCompatBigalloc
	sbBlockGroupNr = 0x5A
)

// checkBackup compares the primary superblock p with the backup copy in
// group 1. Without metadata_csum nothing else protects the superblock, and
// one flipped bit in, say, sparse_super2 or s_reserved_gdt_blocks would move
// where BLOCK_UNINIT groups keep their metadata. A missing or disagreeing
// backup fails the volume: unknown means allocated.
func (s *superblock) checkBackup(r io.ReaderAt, p []byte) error {
	if s.groups < 2 {
		return nil
	}
	off := int64(s.groupFirstBlock(1)) * s.blockSize
	b := make([]byte, sbSize)
	if _, err := r.ReadAt(b, off); err != nil {
		return fmt.Errorf("%s: reading the backup superblock of group 1 at byte %d: %w", s.kind, off, err)
	}
	le := binary.LittleEndian
	present := le.Uint16(b[sbMagicOff:]) == sbMagic && bytes.Equal(b[sbUUID:sbUUID+16], s.uuid[:])
	if !present {
		if s.hasSuper(1) {
			return s.errorf(off, "no backup superblock in group 1 where the primary says there is one: the primary's geometry or features are wrong")
		}
		return nil
	}
	if nr := le.Uint16(b[sbBlockGroupNr:]); nr != 1 {
		return s.errorf(off+sbBlockGroupNr, "backup superblock in group 1 says it belongs to group %d", nr)
	}
	fields := []struct {
		name      string
		off, size int
		mask      uint32
	}{
		{"s_log_block_size", sbLogBlockSize, 4, ^uint32(0)},
		{"s_log_cluster_size", sbLogClusterSize, 4, ^uint32(0)},
		{"s_blocks_per_group", sbBlocksPerGroup, 4, ^uint32(0)},
		{"s_clusters_per_group", sbClustersPerGroup, 4, ^uint32(0)},
		{"s_inodes_per_group", sbInodesPerGroup, 4, ^uint32(0)},
		{"s_first_data_block", sbFirstDataBlock, 4, ^uint32(0)},
		{"s_rev_level", sbRevLevel, 4, ^uint32(0)},
		{"s_inode_size", sbInodeSize, 2, ^uint32(0)},
		{"s_reserved_gdt_blocks", sbReservedGDT, 2, ^uint32(0)},
		{"s_desc_size", sbDescSize, 2, ^uint32(0)},
		{"s_first_meta_bg", sbFirstMetaBG, 4, ^uint32(0)},
		{"s_backup_bgs[0]", sbBackupBGs, 4, ^uint32(0)},
		{"s_backup_bgs[1]", sbBackupBGs + 4, 4, ^uint32(0)},
		{"COMPAT features", sbFeatureCompat, 4, layoutCompat},
		{"INCOMPAT features", sbFeatureIncompat, 4, layoutIncompat},
		{"RO_COMPAT features", sbFeatureROCompat, 4, layoutROCompat},
	}
	for _, f := range fields {
		get := func(x []byte) uint32 {
			if f.size == 2 {
				return uint32(le.Uint16(x[f.off:]))
			}
			return le.Uint32(x[f.off:])
		}
		if a, c := get(p)&f.mask, get(b)&f.mask; a != c {
			return s.errorf(sbOffset+int64(f.off), "primary and group 1 backup superblocks disagree on %s (%#x, backup %#x): the primary may be corrupt; e2fsck -f resolves it", f.name, a, c)
		}
	}
	return nil
}
