package exfatmap

import (
	"github.com/prezero/prezero/freemap"
)

// Main Boot Sector fields (Microsoft exFAT specification, section 3.1).
const (
	fsName             = "EXFAT   "
	offMustBeZero      = 11  // 53 bytes
	offVolumeLength    = 72  // uint64, sectors
	offFatOffset       = 80  // uint32, sectors
	offFatLength       = 84  // uint32, sectors
	offClusterHeap     = 88  // uint32, sectors
	offClusterCount    = 92  // uint32
	offRootCluster     = 96  // uint32
	offRevision        = 104 // uint16: minor, major
	offVolumeFlags     = 106 // uint16
	offBytesPerSecSh   = 108 // uint8: 9..12
	offSecPerClusSh    = 109 // uint8: bytes per cluster at most 32 MiB
	offNumberOfFats    = 110 // uint8: 1, or 2 with TexFAT
	offPercentInUse    = 112
	offBootSignature   = 510
	flagActiveFat      = 1 << 0
	flagDirty          = 1 << 1
	flagMediaFailure   = 1 << 2
	bootRegionSectors  = 12
	checksumSector     = 11
	maxClusterCount    = 0xFFFFFFF5
	fatEOC             = 0xFFFFFFFF
	fatBad             = 0xFFFFFFF7
	minVolumeBytes     = 1 << 20
	maxClusterBytesLog = 25
)

// boot is the validated main boot sector.
type boot struct {
	bps       uint32 // bytes per sector
	spcShift  uint32
	volLen    uint64 // sectors
	fatOff    int64  // sectors
	fatLen    int64  // sectors per FAT
	heap      int64  // first sector of the cluster heap
	clusters  uint32 // ClusterCount
	rootClus  uint32
	flags     uint32 // VolumeFlags
	nfats     uint32
	activeFAT uint32
}

func (b *boot) clusterBytes() int64 { return int64(b.bps) << b.spcShift }

// readBoot reads and checks the main boot region: the boot sector's fields
// and the checksum over its first eleven sectors.
func (v *volume) readBoot() error {
	if v.size < 512 {
		return freemap.Formatf(0, "exfat: volume of %d bytes is too small for a boot sector", v.size)
	}
	s := make([]byte, 512)
	if err := v.readAt(s, 0); err != nil {
		return err
	}
	if s[0] != 0xEB || s[1] != 0x76 || s[2] != 0x90 || string(s[3:11]) != fsName {
		return freemap.Formatf(0, "exfat: no exFAT boot sector signature")
	}
	for i := offMustBeZero; i < offMustBeZero+53; i++ {
		if s[i] != 0 {
			return freemap.Formatf(int64(i), "exfat: nonzero byte in the boot sector's MustBeZero field")
		}
	}
	if s[offBootSignature] != 0x55 || s[offBootSignature+1] != 0xAA {
		return freemap.Formatf(offBootSignature, "exfat: no 0x55AA boot signature")
	}
	bpsShift, spcShift := uint32(s[offBytesPerSecSh]), uint32(s[offSecPerClusSh])
	if bpsShift < 9 || bpsShift > 12 {
		return freemap.Formatf(offBytesPerSecSh, "exfat: BytesPerSectorShift %d (want 9..12)", bpsShift)
	}
	if spcShift > maxClusterBytesLog-bpsShift {
		return freemap.Formatf(offSecPerClusSh, "exfat: SectorsPerClusterShift %d makes clusters larger than 32 MiB", spcShift)
	}
	b := &boot{
		bps:      1 << bpsShift,
		spcShift: spcShift,
		volLen:   le64(s, offVolumeLength),
		fatOff:   int64(le32(s, offFatOffset)),
		fatLen:   int64(le32(s, offFatLength)),
		heap:     int64(le32(s, offClusterHeap)),
		clusters: le32(s, offClusterCount),
		rootClus: le32(s, offRootCluster),
		flags:    le16(s, offVolumeFlags),
		nfats:    uint32(s[offNumberOfFats]),
	}
	if major := s[offRevision+1]; major != 1 {
		return freemap.Unsupported("exfat: file system revision %d.%02d (only 1.x is known)", major, s[offRevision])
	}
	spc := uint64(1) << spcShift
	switch {
	case b.volLen < minVolumeBytes/uint64(b.bps) || b.volLen > uint64(v.size)/uint64(b.bps):
		return freemap.Formatf(offVolumeLength, "exfat: volume of %d sectors of %d bytes does not fit its %d-byte partition", b.volLen, b.bps, v.size)
	case b.nfats != 1 && b.nfats != 2:
		return freemap.Formatf(offNumberOfFats, "exfat: %d FATs", b.nfats)
	case b.fatOff < 24:
		return freemap.Formatf(offFatOffset, "exfat: FAT at sector %d, inside the boot regions", b.fatOff)
	case b.clusters == 0 || b.clusters > maxClusterCount:
		return freemap.Formatf(offClusterCount, "exfat: %d clusters", b.clusters)
	case uint64(b.fatLen)*uint64(b.bps) < (uint64(b.clusters)+2)*4:
		return freemap.Formatf(offFatLength, "exfat: a FAT of %d sectors cannot hold %d clusters", b.fatLen, b.clusters)
	case b.fatOff+b.fatLen*int64(b.nfats) > b.heap:
		return freemap.Formatf(offClusterHeap, "exfat: cluster heap at sector %d overlaps the FATs", b.heap)
	case uint64(b.heap)+uint64(b.clusters)*spc > b.volLen:
		return freemap.Formatf(offClusterCount, "exfat: %d clusters from sector %d do not fit %d sectors", b.clusters, b.heap, b.volLen)
	case b.rootClus < 2 || uint64(b.rootClus) >= uint64(b.clusters)+2:
		return freemap.Formatf(offRootCluster, "exfat: root directory cluster %d outside clusters 2..%d", b.rootClus, uint64(b.clusters)+1)
	}
	if b.nfats == 2 && b.flags&flagActiveFat != 0 {
		b.activeFAT = 1
	}
	v.boot = b

	// The checksum of sectors 0-10 (without VolumeFlags and
	// PercentInUse) fills sector 11.
	region := make([]byte, bootRegionSectors*int(b.bps))
	if err := v.readAt(region, 0); err != nil {
		return err
	}
	var sum uint32
	for i, c := range region[:checksumSector*int(b.bps)] {
		if i == offVolumeFlags || i == offVolumeFlags+1 || i == offPercentInUse {
			continue
		}
		sum = (sum>>1 | sum<<31) + uint32(c)
	}
	cs := region[checksumSector*int(b.bps):]
	for i := 0; i+4 <= len(cs); i += 4 {
		if le32(cs, i) != sum {
			return freemap.Formatf(int64(checksumSector*int(b.bps)+i), "exfat: boot region checksum %#08x does not match the computed %#08x", le32(cs, i), sum)
		}
	}
	return nil
}
