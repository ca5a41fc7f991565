// Command fragment turns a freshly made, empty filesystem image into the
// worst case for a free map: every other block allocated. It edits the
// allocation bitmaps in place (never the data), so a multi-TiB sparse image
// stays sparse. For the benchmarks only.
//
//	fragment ext4 IMAGE            # mkfs.ext4 -O ^metadata_csum,^uninit_bg
//	fragment bytes IMAGE OFF LEN   # OR 0xAA into a byte range (NTFS $Bitmap)
package main

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"os"
	"strconv"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "fragment:", err)
		os.Exit(2)
	}
}

func run(args []string) error {
	if len(args) < 2 {
		return fmt.Errorf("usage: fragment ext4 IMAGE | fragment bytes IMAGE OFF LEN")
	}
	f, err := os.OpenFile(args[1], os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	switch args[0] {
	case "ext4":
		return ext4(f)
	case "bytes":
		if len(args) != 4 {
			return fmt.Errorf("bytes needs OFF and LEN")
		}
		off, err1 := strconv.ParseInt(args[2], 0, 64)
		n, err2 := strconv.ParseInt(args[3], 0, 64)
		if err1 != nil || err2 != nil {
			return fmt.Errorf("bad OFF or LEN")
		}
		return orRange(f, off, n)
	}
	return fmt.Errorf("unknown kind %q", args[0])
}

// orRange ORs 0xAA into every byte of [off, off+n): every other unit used.
func orRange(f *os.File, off, n int64) error {
	buf := make([]byte, 1<<20)
	for n > 0 {
		k := min(int64(len(buf)), n)
		if _, err := f.ReadAt(buf[:k], off); err != nil {
			return err
		}
		for i := range buf[:k] {
			buf[i] |= 0xAA
		}
		if _, err := f.WriteAt(buf[:k], off); err != nil {
			return err
		}
		off, n = off+k, n-k
	}
	return nil
}

// ext4 marks every odd block of every group used and fixes the groups'
// free counts. It refuses checksummed or uninit_bg filesystems, whose
// descriptors it would have to re-checksum.
func ext4(f *os.File) error {
	sb := make([]byte, 1024)
	if _, err := f.ReadAt(sb, 1024); err != nil {
		return err
	}
	le := binary.LittleEndian
	if le.Uint16(sb[0x38:]) != 0xEF53 {
		return fmt.Errorf("not ext2/3/4")
	}
	roCompat, incompat := le.Uint32(sb[0x64:]), le.Uint32(sb[0x60:])
	if roCompat&(0x10|0x400) != 0 {
		return fmt.Errorf("make it with -O ^metadata_csum,^uninit_bg")
	}
	bs := int64(1024) << le.Uint32(sb[0x18:])
	blocks := int64(le.Uint32(sb[0x04:]))
	descSize := int64(32)
	if incompat&0x80 != 0 {
		blocks |= int64(le.Uint32(sb[0x150:])) << 32
		descSize = int64(le.Uint16(sb[0xFE:]))
	}
	first := int64(le.Uint32(sb[0x14:]))
	perGroup := int64(le.Uint32(sb[0x20:]))
	groups := (blocks - first + perGroup - 1) / perGroup
	gdt := (first + 1) * bs
	desc := make([]byte, descSize)
	bm := make([]byte, bs)
	for g := int64(0); g < groups; g++ {
		if _, err := f.ReadAt(desc, gdt+g*descSize); err != nil {
			return err
		}
		at := int64(le.Uint32(desc[0:]))
		if descSize >= 64 {
			at |= int64(le.Uint32(desc[0x20:])) << 32
		}
		if _, err := f.ReadAt(bm, at*bs); err != nil {
			return err
		}
		n := min(perGroup, blocks-first-g*perGroup)
		free := int64(0)
		for i := int64(0); i < n; i++ {
			if i&1 == 1 {
				bm[i>>3] |= 1 << (i & 7)
			}
		}
		for i := int64(0); i < n/8; i++ {
			free += int64(8 - bits.OnesCount8(bm[i]))
		}
		for i := n &^ 7; i < n; i++ {
			if bm[i>>3]&(1<<(i&7)) == 0 {
				free++
			}
		}
		if _, err := f.WriteAt(bm, at*bs); err != nil {
			return err
		}
		le.PutUint16(desc[0x0C:], uint16(free))
		if descSize >= 64 {
			le.PutUint16(desc[0x2C:], uint16(free>>16))
		}
		if _, err := f.WriteAt(desc, gdt+g*descSize); err != nil {
			return err
		}
	}
	return nil
}
