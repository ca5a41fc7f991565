package imgtest

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FATFile is a file written to a FAT or exFAT test image.
type FATFile struct {
	Path string // inside the filesystem, with forward slashes, no leading slash
	Size int64
}

// FATFiles returns the files FAT writes for a volume of size bytes: up to
// a third of it in at most 24 files, in the root and in nested directories
// (an ESP's layout). Deleted (every third) file names start with "del".
func FATFiles(size int64) []FATFile {
	var out []FATFile
	sizes := []int64{1, 700, 4096, 9000, 70_000, 300_000, 1 << 20}
	dirs := []string{"", "EFI/BOOT/", "EFI/debian/", "data/sub/deep/"}
	var total int64
	for i := 0; (total < size/3 && i < 24) || i < 8; i++ {
		n := sizes[i%len(sizes)]
		if n > size/8 {
			n = size / 8
		}
		name := fmt.Sprintf("f%02d.bin", i)
		if i%3 == 2 {
			name = fmt.Sprintf("del%02d.bin", i)
		}
		out = append(out, FATFile{Path: dirs[i%len(dirs)] + name, Size: n})
		total += n
	}
	return out
}

// FAT makes a FAT filesystem the hard way in a new size-byte file: the file
// is filled with random bytes, mkfs.vfat formats it with mkfsArgs, mtools
// writes FATFiles(size) (making the directories) and deletes the "del"
// files again, leaving their data behind in free clusters. It returns the
// sha256 of every remaining file by path.
func FAT(t testing.TB, img string, size int64, mkfsArgs ...string) map[string]string {
	t.Helper()
	Need(t, "mkfs.vfat", "mmd", "mcopy", "mdel")
	os.Setenv("MTOOLS_SKIP_CHECK", "1") // mtools checks geometry against the old floppy tables
	RandomFile(t, img, size)
	Run(t, "mkfs.vfat", append(append([]string{}, mkfsArgs...), img)...)
	return fillFAT(t, img, FATFiles(size))
}

func fillFAT(t testing.TB, img string, files []FATFile) map[string]string {
	t.Helper()
	src := t.TempDir()
	made := map[string]bool{}
	hashes := map[string]string{}
	for _, f := range files {
		dir := filepath.Dir(f.Path)
		for d, parts := "", strings.Split(dir, "/"); dir != "." && len(parts) > 0; parts = parts[1:] {
			d += "/" + parts[0]
			if !made[d] {
				Run(t, "mmd", "-i", img, "::"+d)
				made[d] = true
			}
		}
		local := filepath.Join(src, strings.ReplaceAll(f.Path, "/", "_"))
		b := make([]byte, f.Size)
		rand.Read(b)
		if err := os.WriteFile(local, b, 0o644); err != nil {
			t.Fatal(err)
		}
		Run(t, "mcopy", "-i", img, local, "::/"+f.Path)
		sum := sha256.Sum256(b)
		hashes[f.Path] = hex.EncodeToString(sum[:])
	}
	for _, f := range files {
		if strings.HasPrefix(filepath.Base(f.Path), "del") {
			Run(t, "mdel", "-i", img, "::/"+f.Path)
			delete(hashes, f.Path)
		}
	}
	return hashes
}

// CheckFATFiles reads every file of hashes from the FAT image img with
// mtype and fails the test if a content differs.
func CheckFATFiles(t testing.TB, img string, hashes map[string]string) {
	t.Helper()
	os.Setenv("MTOOLS_SKIP_CHECK", "1")
	for p, want := range hashes {
		out := Run(t, "mtype", "-i", img, "::/"+p)
		sum := sha256.Sum256([]byte(out))
		if got := hex.EncodeToString(sum[:]); got != want {
			t.Errorf("%s: %s differs from the file written (%d bytes read)", img, p, len(out))
		}
	}
}
