package ntfsmap

import (
	"encoding/binary"
	"io"
)

// Boot sector layout (offsets into sector 0).
const (
	bootSize = 512

	offOEMID             = 0x03 // [8]byte "NTFS    "
	offBytesPerSector    = 0x0B // u16
	offSectorsPerCluster = 0x0D // u8; > 0x80 encodes 1 << (256 - v)
	offReservedSectors   = 0x0E // u16, zero
	offFATs              = 0x10 // u8, zero
	offRootEntries       = 0x11 // u16, zero
	offSectors16         = 0x13 // u16, zero
	offSectorsPerFAT     = 0x16 // u16, zero
	offLargeSectors      = 0x20 // u32, zero
	offTotalSectors      = 0x28 // i64: sectors in the volume, excluding the backup boot sector
	offMFTLCN            = 0x30 // i64: first cluster of $MFT
	offMFTMirrLCN        = 0x38 // i64: first cluster of $MFTMirr
	offClustersPerRecord = 0x40 // i8: > 0 clusters, <= 0 means 1 << -v bytes
	offClustersPerIndex  = 0x44 // i8: same encoding, for index blocks

	oemID = "NTFS    "

	maxClusterSize = 2 << 20 // 2 MiB, the largest NTFS cluster
	minRecordSize  = 512
	maxRecordSize  = 64 << 10
)

// boot holds the validated geometry of a volume.
type boot struct {
	sectorSize   int
	clusterSize  int
	totalSectors int64
	clusters     int64
	mftLCN       int64
	mftMirrLCN   int64
	recordSize   int // bytes per MFT record
	indexSize    int // bytes per index block
}

// readBoot reads and validates the boot sector at the start of r.
func readBoot(r io.ReaderAt, size int64) (*boot, error) {
	if size < bootSize {
		return nil, formatErr(0, "volume of %d bytes is too small for NTFS", size)
	}
	b := make([]byte, bootSize)
	if n, err := r.ReadAt(b, 0); n != bootSize {
		return nil, formatErr(0, "cannot read boot sector: %v", err)
	}
	return parseBoot(b, size)
}

// parseBoot validates the boot sector b (at least 512 bytes) of a volume of
// size bytes.
func parseBoot(b []byte, size int64) (*boot, error) {
	if len(b) < bootSize {
		return nil, formatErr(0, "boot sector of %d bytes is too short", len(b))
	}
	le := binary.LittleEndian
	if string(b[offOEMID:offOEMID+8]) != oemID {
		return nil, formatErr(offOEMID, "no NTFS signature (OEM id %q)", b[offOEMID:offOEMID+8])
	}
	bs := &boot{}
	bps := int(le.Uint16(b[offBytesPerSector:]))
	if bps < 256 || bps > 4096 || bps&(bps-1) != 0 {
		return nil, formatErr(offBytesPerSector, "bytes per sector %d is not a power of two in 256..4096", bps)
	}
	bs.sectorSize = bps
	spc := int(b[offSectorsPerCluster])
	switch {
	case spc == 0:
		return nil, formatErr(offSectorsPerCluster, "sectors per cluster is zero")
	case spc > 0x80:
		shift := 256 - spc
		if shift > 12 {
			return nil, formatErr(offSectorsPerCluster, "sectors per cluster 2^%d is too large", shift)
		}
		spc = 1 << shift
	case spc&(spc-1) != 0:
		return nil, formatErr(offSectorsPerCluster, "sectors per cluster %d is not a power of two", spc)
	}
	bs.clusterSize = bps * spc
	if bs.clusterSize > maxClusterSize {
		return nil, formatErr(offSectorsPerCluster, "cluster size %d exceeds %d", bs.clusterSize, maxClusterSize)
	}
	// Fields inherited from FAT that NTFS requires to be zero; ntfs-3g
	// checks them too, and they tell NTFS apart from look-alikes.
	if le.Uint16(b[offReservedSectors:]) != 0 || b[offFATs] != 0 ||
		le.Uint16(b[offRootEntries:]) != 0 || le.Uint16(b[offSectors16:]) != 0 ||
		le.Uint16(b[offSectorsPerFAT:]) != 0 || le.Uint32(b[offLargeSectors:]) != 0 {
		return nil, formatErr(offReservedSectors, "FAT fields of the boot sector are not zero")
	}
	total := int64(le.Uint64(b[offTotalSectors:]))
	if total <= 0 || total > size/int64(bps) {
		return nil, formatErr(offTotalSectors, "total sectors %d does not fit in a volume of %d bytes", total, size)
	}
	bs.totalSectors = total
	bs.clusters = total / int64(spc)
	if bs.clusters == 0 {
		return nil, formatErr(offTotalSectors, "volume has no whole cluster")
	}
	bs.mftLCN = int64(le.Uint64(b[offMFTLCN:]))
	if bs.mftLCN <= 0 || bs.mftLCN >= bs.clusters {
		return nil, formatErr(offMFTLCN, "$MFT cluster %d outside the volume's %d clusters", bs.mftLCN, bs.clusters)
	}
	bs.mftMirrLCN = int64(le.Uint64(b[offMFTMirrLCN:]))
	if bs.mftMirrLCN <= 0 || bs.mftMirrLCN >= bs.clusters {
		return nil, formatErr(offMFTMirrLCN, "$MFTMirr cluster %d outside the volume's %d clusters", bs.mftMirrLCN, bs.clusters)
	}
	var err error
	if bs.recordSize, err = recordSize(int8(b[offClustersPerRecord]), bs.clusterSize); err != nil {
		return nil, formatErr(offClustersPerRecord, "MFT record size: %v", err)
	}
	if bs.indexSize, err = recordSize(int8(b[offClustersPerIndex]), bs.clusterSize); err != nil {
		return nil, formatErr(offClustersPerIndex, "index block size: %v", err)
	}
	return bs, nil
}

// recordSize decodes a clusters-per-record field: positive is a number of
// clusters, negative is log2 of a number of bytes.
func recordSize(v int8, clusterSize int) (int, error) {
	var n int
	switch {
	case v > 0:
		n = int(v) * clusterSize
	case v < -30 || v == 0:
		return 0, errorString("invalid encoding")
	default:
		n = 1 << -int(v)
	}
	if n < minRecordSize || n > maxRecordSize || n&(n-1) != 0 {
		return 0, errorString("size is not a power of two in 512..65536")
	}
	return n, nil
}

type errorString string

func (e errorString) Error() string { return string(e) }
