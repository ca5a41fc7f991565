package extfsmap

import (
	"encoding/binary"
	"hash/crc32"
)

// ext4 checksums, as e2fsprogs lib/ext2fs/csum.c computes them.

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// crc32c is ext4's ext2fs_crc32c_le: CRC-32C without the pre- and
// post-inversion that hash/crc32 applies.
func crc32c(seed uint32, p []byte) uint32 {
	return ^crc32.Update(^seed, castagnoli, p)
}

// crc16Table is the reflected CRC-16 (polynomial 0x8005, "CRC-16/ARC")
// table used by e2fsprogs' ext2fs_crc16 and the kernel's crc16.
var crc16Table = func() (t [256]uint16) {
	for i := range t {
		c := uint16(i)
		for range 8 {
			if c&1 != 0 {
				c = c>>1 ^ 0xA001
			} else {
				c >>= 1
			}
		}
		t[i] = c
	}
	return t
}()

// crc16 is ext2fs_crc16: no inversion, the caller passes the seed.
func crc16(crc uint16, p []byte) uint16 {
	for _, b := range p {
		crc = crc>>8 ^ crc16Table[byte(crc)^b]
	}
	return crc
}

// superChecksumOK verifies s_checksum (metadata_csum): crc32c(~0) over the
// superblock's first 1020 bytes.
func superChecksumOK(sb []byte) bool {
	return crc32c(^uint32(0), sb[:sbChecksum]) == binary.LittleEndian.Uint32(sb[sbChecksum:])
}

// descChecksum computes bg_checksum of descriptor d (len(d) == descriptor
// size) of group g, as ext2fs_group_desc_csum does.
func (s *superblock) descChecksum(g uint32, d []byte) uint16 {
	var gb [4]byte
	binary.LittleEndian.PutUint32(gb[:], g)
	if s.metadataCsum {
		c := crc32c(s.csumSeed, gb[:])
		c = crc32c(c, d[:bgChecksum])
		c = crc32c(c, []byte{0, 0}) // the checksum field itself, zeroed
		c = crc32c(c, d[bgChecksum+2:])
		return uint16(c)
	}
	c := crc16(0xFFFF, s.uuid[:])
	c = crc16(c, gb[:])
	c = crc16(c, d[:bgChecksum])
	return crc16(c, d[bgChecksum+2:])
}

// bitmapChecksumOK verifies a block bitmap against the descriptor's
// bg_block_bitmap_csum_lo/hi (metadata_csum only), over clusters_per_group/8
// bytes as ext2fs_block_bitmap_csum_verify does.
func (s *superblock) bitmapChecksumOK(d, bitmap []byte) bool {
	want := uint32(binary.LittleEndian.Uint16(d[bgBlockBitmapCsumLo:]))
	got := crc32c(s.csumSeed, bitmap[:s.clustersPerGroup/8])
	if len(d) >= bgBlockBitmapCsumHi+2 {
		want |= uint32(binary.LittleEndian.Uint16(d[bgBlockBitmapCsumHi:])) << 16
	} else {
		got &= 0xFFFF
	}
	return got == want
}
