package imgtest

import (
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Tree writes a directory of files with random content (sizes from a few
// bytes to a few MiB, some in subdirectories) and returns the directory and
// the files' paths relative to it, in a stable order.
func Tree(t testing.TB, totalMiB int) (string, []string) {
	t.Helper()
	dir := t.TempDir()
	var names []string
	sizes := []int{17, 900, 4096, 5000, 65536, 300 << 10, 1 << 20, 3<<20 + 123}
	written := 0
	for i := 0; written < totalMiB<<20 || i < 8; i++ {
		name := fmt.Sprintf("f%03d.bin", i)
		if i%3 == 1 {
			name = filepath.Join(fmt.Sprintf("d%d", i%4), name)
		}
		n := sizes[i%len(sizes)]
		b := make([]byte, n)
		rand.Read(b)
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
		names = append(names, name)
		written += n
	}
	return dir, names
}

// Ext makes an ext2/3/4 filesystem the hard way in a new size-byte file:
// the file is filled with random bytes, mkfs.ext4 -E nodiscard -d populates
// it from a random tree, and debugfs deletes every other file, leaving their
// data behind in free blocks. It returns the files that remain.
func Ext(t testing.TB, img string, size int64, mkfsArgs ...string) []string {
	t.Helper()
	Need(t, "mkfs.ext4", "debugfs")
	RandomFile(t, img, size)
	dir, names := Tree(t, int(size>>20)/3)
	args := append([]string{"-F", "-q", "-E", "nodiscard"}, mkfsArgs...)
	args = append(args, "-d", dir, img)
	Run(t, "mkfs.ext4", args...)
	var cmds strings.Builder
	var kept []string
	for i, n := range names {
		if i%2 == 0 {
			fmt.Fprintf(&cmds, "rm /%s\n", n)
		} else {
			kept = append(kept, n)
		}
	}
	script := filepath.Join(t.TempDir(), "rm.debugfs")
	if err := os.WriteFile(script, []byte(cmds.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	Run(t, "debugfs", "-w", "-f", script, img)
	return kept
}

// Zerofree returns the path of a copy of the ext image img on which
// zerofree has zeroed every free block: the oracle for extfsmap.
//
// zerofree opens the filesystem read-write through libext2fs, which on close
// stamps the primary superblock's s_wtime (offset 0x30, 4 bytes, and its
// high byte s_wtime_hi at 0x274), bumps s_kbytes_written (0x178, 8 bytes)
// and so its s_checksum (0x3FC, 4 bytes). prezero never writes, so those 17
// bytes are put back from img; every other byte is zerofree's own.
func Zerofree(t testing.TB, img string) string {
	t.Helper()
	Need(t, "zerofree")
	out := filepath.Join(t.TempDir(), filepath.Base(img)+".zerofree")
	CopyFile(t, out, img)
	Run(t, "zerofree", out)
	src, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(out, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	for _, f := range [][2]int64{{1024 + 0x30, 4}, {1024 + 0x274, 1}, {1024 + 0x178, 8}, {1024 + 0x3FC, 4}} {
		b := make([]byte, f[1])
		if _, err := src.ReadAt(b, f[0]); err != nil {
			t.Fatal(err)
		}
		if _, err := dst.WriteAt(b, f[0]); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// WriteAt copies the whole file src into dst at byte offset off.
func WriteAt(t testing.TB, dst string, off int64, src string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(dst, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// Partition partitions the image with an sfdisk script. sector 4096 goes
// through a loop device with 4096-byte logical sectors (needs root).
func Partition(t testing.TB, img string, sector int, script string) {
	t.Helper()
	Need(t, "sfdisk")
	dev := img
	if sector != 512 {
		NeedRoot(t)
		Need(t, "losetup")
		dev = strings.TrimSpace(Run(t, "losetup", "-f", "--show", "--sector-size", fmt.Sprint(sector), img))
		defer Detach(t, dev, img)
	}
	// sfdisk cannot make the kernel re-read a loop device without
	// partition scanning; that warning is harmless.
	out, err := OutputStdin(script, "sfdisk", "-q", "--no-reread", "--no-tell-kernel", dev)
	if err != nil {
		t.Fatalf("sfdisk %s: %v\n%s", img, err, out)
	}
}
