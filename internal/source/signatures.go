package source

import (
	"bytes"
	"encoding/binary"
	"io"

	"github.com/prezero/prezero/freemap"
)

// Signatures of volumes prezero recognises only to name them: they always
// pass through, and map says what they are rather than "no supported
// filesystem". Offsets and magics as libblkid reads them.

// refuse returns a read function that always refuses, naming the volume.
func refuse(what string) func(io.ReaderAt, int64, Options) (*volume, error) {
	return func(io.ReaderAt, int64, Options) (*volume, error) {
		return nil, freemap.Unsupported("%s", what)
	}
}

// at reports whether magic is at off.
func at(r io.ReaderAt, size, off int64, magic string) bool {
	if off+int64(len(magic)) > size {
		return false
	}
	b := make([]byte, len(magic))
	n, _ := r.ReadAt(b, off)
	return n == len(b) && string(b) == magic
}

// luks2Secondary are the offsets where LUKS2 may keep its second header
// (after a primary header area of 16 KiB to 4 MiB).
var luks2Secondary = []int64{16 << 10, 32 << 10, 64 << 10, 128 << 10, 256 << 10, 512 << 10, 1 << 20, 2 << 20, 4 << 20}

// probeLUKS finds a LUKS1 or LUKS2 header, or LUKS2's secondary header
// alone (a wiped or damaged primary).
func probeLUKS(r io.ReaderAt, size int64) bool {
	if at(r, size, 0, "LUKS\xba\xbe") {
		return true
	}
	for _, off := range luks2Secondary {
		if at(r, size, off, "SKUL\xba\xbe") {
			return true
		}
	}
	return false
}

// luksVersion reads the version field after the magic (1 or 2), or 0.
func luksVersion(r io.ReaderAt, size int64) int {
	var b [8]byte
	if size < 8 {
		return 0
	}
	if n, _ := r.ReadAt(b[:], 0); n != 8 || !bytes.Equal(b[:6], []byte("LUKS\xba\xbe")) {
		return 2 // only the secondary (LUKS2) header is left
	}
	return int(binary.BigEndian.Uint16(b[6:]))
}

func readLUKS(r io.ReaderAt, size int64, _ Options) (*volume, error) {
	if v := luksVersion(r, size); v == 1 || v == 2 {
		return nil, freemap.Unsupported("LUKS%d (encrypted)", v)
	}
	return nil, freemap.Unsupported("LUKS (encrypted)")
}

// probeBitLocker finds the BitLocker boot sector's OEM name.
func probeBitLocker(r io.ReaderAt, size int64) bool {
	return at(r, size, 3, "-FVE-FS-")
}

// probeMD finds a Linux md RAID superblock: version 1.1 at 0, 1.2 at 4 KiB,
// 0.90 and 1.0 near the end.
func probeMD(r io.ReaderAt, size int64) bool {
	const magic = "\xfc\x4e\x2b\xa9" // 0xa92b4efc, little-endian
	if at(r, size, 0, magic) || at(r, size, 4096, magic) {
		return true
	}
	if size >= 128<<10 {
		if at(r, size, (size&^(64<<10-1))-64<<10, magic) { // 0.90
			return true
		}
	}
	if size >= 12<<10 {
		return at(r, size, (size-8<<10)&^(4<<10-1), magic) // 1.0
	}
	return false
}

// probeBtrfs finds the btrfs superblock magic at 64 KiB + 64.
func probeBtrfs(r io.ReaderAt, size int64) bool {
	return at(r, size, 65536+64, "_BHRfS_M")
}

// probeBcache finds a bcache superblock (its magic UUID at 4 KiB + 24).
func probeBcache(r io.ReaderAt, size int64) bool {
	return at(r, size, 4096+24, "\xc6\x85\x73\xf6\x4e\x1a\x45\xca\x82\x65\xf5\x7f\x48\xba\x6d\x81")
}
