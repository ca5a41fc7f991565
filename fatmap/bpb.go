package fatmap

import (
	"github.com/prezero/prezero/freemap"
)

// Offsets of the BIOS parameter block fields in the boot sector (Microsoft
// FAT specification, "FAT: General Overview of On-Disk Format").
const (
	offJump       = 0
	offBytsPerSec = 11 // uint16: 512, 1024, 2048 or 4096
	offSecPerClus = 13 // uint8: a power of two, 1..128
	offRsvdSecCnt = 14 // uint16: sectors before the first FAT, >= 1
	offNumFATs    = 16 // uint8: copies of the FAT
	offRootEntCnt = 17 // uint16: entries of the fixed FAT12/16 root directory; 0 on FAT32
	offTotSec16   = 19 // uint16: total sectors, or 0 (then TotSec32)
	offMedia      = 21 // uint8: 0xF0 or 0xF8..0xFF
	offFATSz16    = 22 // uint16: sectors per FAT, or 0 on FAT32
	offTotSec32   = 32 // uint32
	offFATSz32    = 36 // uint32 (FAT32 BPB)
	offExtFlags   = 40 // uint16 (FAT32): bit 7 mirroring disabled, bits 0-3 active FAT
	offFSVer      = 42 // uint16 (FAT32): must be 0
	offRootClus   = 44 // uint32 (FAT32): first cluster of the root directory
	offBkBootSec  = 50 // uint16 (FAT32): sector of the backup boot sector
	offState16    = 0x25
	offState32    = 0x41
	offSignature  = 510 // 0x55 0xAA
)

// FAT type limits by cluster count (Microsoft's rule).
const (
	maxFAT12Clusters = 4084
	maxFAT16Clusters = 65524
	maxFAT32Clusters = 0x0FFFFFF5 // cluster numbers 2..0x0FFFFFF6; 0x0FFFFFF7 marks a bad cluster
)

// geometry is the validated layout of a FAT volume, in sectors unless noted.
type geometry struct {
	bps       uint32 // bytes per sector
	spc       uint32 // sectors per cluster
	rsvd      uint32 // reserved sectors
	nfats     uint32
	rootEnt   uint32
	totSec    uint32
	fatSz     uint32 // sectors per FAT copy
	fat32BPB  bool   // FATSz16 == 0: the BPB has the FAT32 layout
	extFlags  uint32
	fsVer     uint32
	rootClus  uint32
	rootSecs  uint32 // sectors of the fixed root directory
	dataStart uint64 // first sector of cluster 2
	clusters  uint32 // data clusters, numbered 2..clusters+1
	bits      int    // 12, 16 or 32, from the cluster count
}

func isPow2(n uint32) bool { return n != 0 && n&(n-1) == 0 }

// parseBPB checks the fields of the boot sector b (at least 512 bytes) that
// every FAT has. It is what Probe runs, so it reads nothing else.
func parseBPB(b []byte) (*geometry, error) {
	if b[offJump] != 0xEB && b[offJump] != 0xE9 {
		return nil, freemap.Formatf(offJump, "vfat: no jump instruction at the start of the boot sector (%#x)", b[offJump])
	}
	if b[offSignature] != 0x55 || b[offSignature+1] != 0xAA {
		return nil, freemap.Formatf(offSignature, "vfat: no 0x55AA boot sector signature")
	}
	g := &geometry{
		bps:     le16(b, offBytsPerSec),
		spc:     uint32(b[offSecPerClus]),
		rsvd:    le16(b, offRsvdSecCnt),
		nfats:   uint32(b[offNumFATs]),
		rootEnt: le16(b, offRootEntCnt),
		totSec:  le16(b, offTotSec16),
		fatSz:   le16(b, offFATSz16),
	}
	if g.totSec == 0 {
		g.totSec = le32(b, offTotSec32)
	}
	if g.fatSz == 0 {
		g.fat32BPB = true
		g.fatSz = le32(b, offFATSz32)
		g.extFlags = le16(b, offExtFlags)
		g.fsVer = le16(b, offFSVer)
		g.rootClus = le32(b, offRootClus)
	}
	switch {
	case g.bps < 512 || g.bps > 4096 || !isPow2(g.bps):
		return nil, freemap.Formatf(offBytsPerSec, "vfat: %d bytes per sector (want 512, 1024, 2048 or 4096)", g.bps)
	case !isPow2(g.spc):
		return nil, freemap.Formatf(offSecPerClus, "vfat: %d sectors per cluster is not a power of two", g.spc)
	case g.rsvd == 0:
		return nil, freemap.Formatf(offRsvdSecCnt, "vfat: no reserved sectors")
	case g.nfats == 0 || g.nfats > 8:
		return nil, freemap.Formatf(offNumFATs, "vfat: %d FAT copies", g.nfats)
	case b[offMedia] != 0xF0 && b[offMedia] < 0xF8:
		return nil, freemap.Formatf(offMedia, "vfat: media descriptor %#x", b[offMedia])
	case g.totSec == 0:
		return nil, freemap.Formatf(offTotSec32, "vfat: zero total sectors")
	case g.fatSz == 0:
		return nil, freemap.Formatf(offFATSz32, "vfat: zero sectors per FAT")
	}
	return g, nil
}

// check validates the layout against itself and the volume size, and
// computes the derived fields.
func (g *geometry) check(size int64) error {
	if uint64(g.totSec)*uint64(g.bps) > uint64(size) {
		return freemap.Formatf(offTotSec32, "vfat: filesystem of %d sectors of %d bytes is larger than its %d-byte volume", g.totSec, g.bps, size)
	}
	g.rootSecs = (g.rootEnt*32 + g.bps - 1) / g.bps
	g.dataStart = uint64(g.rsvd) + uint64(g.nfats)*uint64(g.fatSz) + uint64(g.rootSecs)
	if g.dataStart >= uint64(g.totSec) {
		return freemap.Formatf(offTotSec32, "vfat: %d total sectors leave no room for data (data starts at sector %d)", g.totSec, g.dataStart)
	}
	n := (uint64(g.totSec) - g.dataStart) / uint64(g.spc)
	switch {
	case n == 0:
		return freemap.Formatf(offTotSec32, "vfat: no data clusters")
	case n <= maxFAT12Clusters:
		g.bits = 12
	case n <= maxFAT16Clusters:
		g.bits = 16
	case n <= maxFAT32Clusters:
		g.bits = 32
	default:
		return freemap.Formatf(offTotSec32, "vfat: %d clusters is more than FAT32 can address", n)
	}
	g.clusters = uint32(n)
	// The type comes from the cluster count; a BPB laid out for another
	// type is ambiguous (Linux would go by the layout, Windows by the
	// count), so nothing can be proven about it.
	if (g.bits == 32) != g.fat32BPB {
		layout := "FAT12/16"
		if g.fat32BPB {
			layout = "FAT32"
		}
		return freemap.Formatf(offFATSz16, "vfat: %d clusters make this %s, but its boot sector has the %s layout", n, g.typeName(), layout)
	}
	if g.bits == 32 {
		if g.rootEnt != 0 {
			return freemap.Formatf(offRootEntCnt, "vfat: FAT32 with %d fixed root directory entries", g.rootEnt)
		}
		if g.fsVer != 0 {
			return freemap.Unsupported("vfat: FAT32 version %#x (only version 0 is defined)", g.fsVer)
		}
		if g.rootClus < 2 || uint64(g.rootClus) >= uint64(g.clusters)+2 {
			return freemap.Formatf(offRootClus, "vfat: root directory cluster %d outside clusters 2..%d", g.rootClus, g.clusters+1)
		}
		if g.extFlags&0x80 != 0 && g.extFlags&0x0f >= g.nfats {
			return freemap.Formatf(offExtFlags, "vfat: active FAT %d of %d", g.extFlags&0x0f, g.nfats)
		}
	} else if g.rootEnt == 0 || g.rootEnt*32%g.bps != 0 {
		// Every formatter fills whole sectors; an odd count is a
		// corrupt field that would shift every cluster.
		return freemap.Formatf(offRootEntCnt, "vfat: %d root directory entries do not fill whole %d-byte sectors", g.rootEnt, g.bps)
	}
	// Every cluster needs an entry in the FAT (Linux refuses a volume
	// whose FAT is too short, too).
	if last := g.entryOffset(g.clusters+1) + uint64(g.entryBytes()); last > uint64(g.fatSz)*uint64(g.bps) {
		return freemap.Formatf(offFATSz16, "vfat: a FAT of %d sectors cannot hold %d clusters", g.fatSz, g.clusters)
	}
	// Formatters size the FAT for the clusters (Microsoft's formula
	// overshoots FAT12 by a third; mkfs.fat pads each FAT to whole
	// clusters). One much larger means the cluster size or the sector
	// counts are not what the FAT was made for.
	perSector := uint64(g.bps) * 8 / uint64(g.bits)
	if g.capacity() > (uint64(g.clusters)+2)*3/2+perSector*uint64(g.spc) {
		return freemap.Formatf(offFATSz16, "vfat: a FAT of %d sectors (%d entries) is far larger than %d clusters need", g.fatSz, g.capacity(), g.clusters)
	}
	return nil
}

func (g *geometry) typeName() string {
	switch g.bits {
	case 12:
		return "FAT12"
	case 16:
		return "FAT16"
	}
	return "FAT32"
}

// entryOffset is the byte offset of entry n inside a FAT copy.
func (g *geometry) entryOffset(n uint32) uint64 {
	switch g.bits {
	case 12:
		return uint64(n) * 3 / 2
	case 16:
		return uint64(n) * 2
	}
	return uint64(n) * 4
}

// entryBytes is how many bytes hold one entry (FAT12: 2, shared).
func (g *geometry) entryBytes() int {
	if g.bits == 32 {
		return 4
	}
	return 2
}

// capacity is the number of entries one FAT copy holds.
func (g *geometry) capacity() uint64 {
	return uint64(g.fatSz) * uint64(g.bps) * 8 / uint64(g.bits)
}

// clusterBytes is the cluster size in bytes.
func (g *geometry) clusterBytes() int64 { return int64(g.spc) * int64(g.bps) }

// clusterOffset is the byte offset of cluster n (n >= 2).
func (g *geometry) clusterOffset(n uint32) int64 {
	return int64(g.dataStart+uint64(n-2)*uint64(g.spc)) * int64(g.bps)
}

// fatOffset is the byte offset of FAT copy i.
func (g *geometry) fatOffset(i uint32) int64 {
	return (int64(g.rsvd) + int64(i)*int64(g.fatSz)) * int64(g.bps)
}

// eoc reports whether a FAT entry value ends a chain.
func (g *geometry) eoc(val uint32) bool {
	switch g.bits {
	case 12:
		return val >= 0xFF8
	case 16:
		return val >= 0xFFF8
	}
	return val&0x0FFFFFFF >= 0x0FFFFFF8
}

// activeFAT is the copy the drivers read: 0, or with FAT32 mirroring
// disabled the one ExtFlags names.
func (g *geometry) activeFAT() uint32 {
	if g.bits == 32 && g.extFlags&0x80 != 0 {
		return g.extFlags & 0x0f
	}
	return 0
}

// checkBackup compares a FAT32 boot sector's geometry with its backup copy
// (BkBootSec, usually sector 6): FAT12/16 have no backup, so nothing else
// guards their boot sector. A BkBootSec of 0 or 0xFFFF means none.
func (v *volume) checkBackup(boot []byte) error {
	g := v.g
	if g.bits != 32 {
		return nil
	}
	bk := le16(boot, offBkBootSec)
	if bk == 0 || bk == 0xFFFF {
		v.note("no backup boot sector to check the boot sector against")
		return nil
	}
	if bk >= g.rsvd {
		return freemap.Formatf(offBkBootSec, "vfat: backup boot sector %d outside the %d reserved sectors", bk, g.rsvd)
	}
	b := make([]byte, 512)
	if err := v.readAt(b, int64(bk)*int64(g.bps)); err != nil {
		return err
	}
	// The fields that define the layout: sector and cluster size, reserved
	// sectors, FATs, root entries, total sectors, media, FAT size, FSVer
	// and RootClus. Not ExtFlags (a driver may change it in the primary
	// only), the geometry hints, hidden sectors (a partition move may
	// update the primary only) or the state byte (Linux sets it in the
	// primary only).
	for _, r := range [][2]int{{offBytsPerSec, 24}, {offTotSec32, offExtFlags}, {offFSVer, offRootClus + 4}} {
		for i := r[0]; i < r[1]; i++ {
			if b[i] != boot[i] {
				return freemap.Formatf(int64(i), "vfat: boot sector and its backup in sector %d differ at byte %d", bk, i)
			}
		}
	}
	return nil
}
