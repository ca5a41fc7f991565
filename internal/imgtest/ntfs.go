package imgtest

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
)

// MakeNTFS fills path with size random bytes and formats it with mkntfs
// (quick format, so free clusters keep their random bytes). clusterSize and
// sectorSize are passed as -c and -s when non-zero.
func MakeNTFS(t testing.TB, path string, size int64, clusterSize, sectorSize int) {
	t.Helper()
	Need(t, "mkntfs")
	RandomFile(t, path, size)
	args := []string{"-F", "-f", "-q"}
	if clusterSize > 0 {
		args = append(args, "-c", strconv.Itoa(clusterSize))
	}
	if sectorSize > 0 {
		args = append(args, "-s", strconv.Itoa(sectorSize))
	}
	Run(t, "mkntfs", append(args, path)...)
}

// MountNTFS mounts the NTFS image img on the directory mnt with ntfs-3g
// (read-only if ro) and returns a function that unmounts it and waits until
// ntfs-3g has exited, so that every write has reached the image. The
// unmount also runs at test cleanup if it was not called.
func MountNTFS(t testing.TB, img, mnt string, ro bool) (unmount func()) {
	t.Helper()
	Need(t, "ntfs-3g", "fusermount")
	NeedRoot(t)
	opts := "no_detach"
	if ro {
		opts += ",ro"
	}
	return serveFUSE(t, exec.Command("ntfs-3g", "-o", opts, img, mnt), mnt, func() {})
}

// WriteRandomFiles creates each file (path relative to dir, parents made as
// needed) with the given number of random bytes.
func WriteRandomFiles(t testing.TB, dir string, files map[string]int64) {
	t.Helper()
	for name, size := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.CopyN(f, rand.Reader, size); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// HashTree returns the hex sha256 of every regular file under dir, keyed
// by slash-separated path relative to dir.
func HashTree(t testing.TB, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		h := sha256.New()
		if _, err := io.Copy(h, f); err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		out[filepath.ToSlash(rel)] = hex.EncodeToString(h.Sum(nil))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
