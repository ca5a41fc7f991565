package extfsmap

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/prezero/prezero/internal/imgtest"
	"github.com/prezero/prezero/stream"
)

// TestCrossCheckBitmapSwap corrupts one bitmap byte the way that keeps the
// group's free count right: a block of a live file is marked free and a
// free block used. Without bitmap checksums nothing else notices; zerofree
// zeroes the file's block, and so does prezero without the cross-check.
// With it (the default there), the block stays served and the file
// survives the round trip.
func TestCrossCheckBitmapSwap(t *testing.T) {
	imgtest.Need(t, "mkfs.ext4", "debugfs", "zerofree")
	for _, v := range []struct {
		name string
		mkfs []string
	}{
		{"ext2", []string{"-t", "ext2", "-b", "4096"}},
		{"ext3", []string{"-t", "ext3"}},
		{"ext4-nocsum", []string{"-t", "ext4", "-O", "^metadata_csum"}},
		{"ext2-1k", []string{"-t", "ext2", "-b", "1024"}},
	} {
		t.Run(v.name, func(t *testing.T) {
			dir := t.TempDir()
			img := filepath.Join(dir, "fs.img")
			kept := imgtest.Ext(t, img, 24<<20, v.mkfs...)
			// A kept file with data, and its first block.
			var name string
			var blk uint64
			for _, n := range kept {
				out := imgtest.Run(t, "debugfs", "-R", "blocks /"+n, img)
				if f := strings.Fields(out); len(f) > 0 {
					b, err := strconv.ParseUint(f[0], 10, 64)
					if err == nil && b > 0 {
						name, blk = n, b
						break
					}
				}
			}
			if name == "" {
				t.Fatal("no kept file has data blocks")
			}
			want := imgtest.Run(t, "debugfs", "-R", "cat /"+name, img)

			f, err := os.OpenFile(img, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			sbb := make([]byte, sbSize)
			if _, err := f.ReadAt(sbb, sbOffset); err != nil {
				t.Fatal(err)
			}
			fi, _ := f.Stat()
			s, err := parseSuperblock(sbb, fi.Size())
			if err != nil {
				t.Fatal(err)
			}
			if s.metadataCsum {
				t.Fatal("variant has metadata_csum")
			}
			g := (blk - s.firstDataBlock) / s.blocksPerGroup
			gd, err := newDescReader(f, s).desc(g)
			if err != nil {
				t.Fatal(err)
			}
			bm := make([]byte, s.blockSize)
			bmOff := int64(gd.blockBitmap) * s.blockSize
			if _, err := f.ReadAt(bm, bmOff); err != nil {
				t.Fatal(err)
			}
			bit := blk - s.firstDataBlock - g*s.blocksPerGroup
			if bm[bit/8]&(1<<(bit%8)) == 0 {
				t.Fatalf("block %d of /%s is free in its bitmap before the corruption", blk, name)
			}
			// The nearest free block of the same group takes its place.
			free := uint64(0)
			for i := uint64(1); i < s.blocksPerGroup; i++ {
				if c := bit + i; c < s.blocksPerGroup && bm[c/8]&(1<<(c%8)) == 0 {
					free = c
					break
				}
			}
			if free == 0 {
				t.Fatal("no free block after the file's block in its group")
			}
			bm[bit/8] &^= 1 << (bit % 8)
			bm[free/8] |= 1 << (free % 8)
			if _, err := f.WriteAt(bm, bmOff); err != nil {
				t.Fatal(err)
			}
			f.Close()
			t.Logf("/%s block %d marked free, block %d marked used", name, blk, free+s.firstDataBlock+g*s.blocksPerGroup)

			src, err := os.Open(img)
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			size := fi.Size()
			off := int64(blk) * s.blockSize

			plain, err := ReadWith(src, size, Options{CrossCheck: CrossCheckOff})
			if err != nil {
				t.Fatal(err)
			}
			if !plain.Free.IsFree(off) {
				t.Fatal("without the cross-check the corrupted bitmap should free the file's block (the test would prove nothing)")
			}
			vol, err := Read(src, size)
			if err != nil {
				t.Fatal(err)
			}
			if vol.Free.IsFree(off) {
				t.Fatalf("the cross-check left block %d of /%s free", blk, name)
			}
			if !vol.CrossCheck.Done || vol.CrossCheck.Conflicts < 1 {
				t.Fatalf("cross-check result %+v, want at least one conflict", vol.CrossCheck)
			}
			if !strings.Contains(strings.Join(vol.Notes, "\n"), "e2fsck") {
				t.Errorf("notes %q do not say to run e2fsck", vol.Notes)
			}
			if d := plain.Free.FreeBytes() - vol.Free.FreeBytes(); d != vol.CrossCheck.Conflicts*s.blockSize {
				t.Errorf("the cross-check kept %d bytes, reports %d blocks", d, vol.CrossCheck.Conflicts)
			}

			// The round trip: the file survives prezero's stream and not
			// zerofree.
			out := filepath.Join(dir, "stream.img")
			o, err := os.Create(out)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.Copy(o, io.NewSectionReader(stream.New(src, size, vol.Free), 0, size)); err != nil {
				t.Fatal(err)
			}
			o.Close()
			if got := imgtest.Run(t, "debugfs", "-R", "cat /"+name, out); got != want {
				t.Fatalf("/%s differs after the round trip", name)
			}
			zf := imgtest.Zerofree(t, img)
			if got := imgtest.Run(t, "debugfs", "-R", "cat /"+name, zf); got == want {
				t.Errorf("zerofree kept /%s intact: the corruption did not bite", name)
			} else {
				t.Logf("zerofree lost /%s, as expected: %s", name, firstDiff(got, want))
			}
		})
	}
}

func firstDiff(a, b string) string {
	for i := 0; i < min(len(a), len(b)); i++ {
		if a[i] != b[i] {
			return fmt.Sprintf("first difference at byte %d", i)
		}
	}
	return fmt.Sprintf("lengths %d and %d", len(a), len(b))
}
