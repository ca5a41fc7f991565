package imgtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// loopSector attaches img to a new loop device (with sectorSize-byte logical
// sectors if not 0) and returns the device; it is detached at cleanup or
// by calling detach. Needs root.
func loopSector(t testing.TB, img string, sectorSize int) (dev string, detach func()) {
	t.Helper()
	NeedRoot(t)
	Need(t, "losetup")
	args := []string{"-f", "--show"}
	if sectorSize != 0 {
		args = append(args, "--sector-size", fmt.Sprint(sectorSize))
	}
	dev = strings.TrimSpace(Run(t, "losetup", append(args, img)...))
	detach = func() { Detach(t, dev, img) }
	t.Cleanup(detach)
	return dev, detach
}

// MountExFAT mounts the exFAT image img on mnt through a loop device and
// exfat-fuse (which works on a block device, not on a plain file),
// read-only if ro. The returned function unmounts, waits for exfat-fuse to
// exit (so every write has reached the image) and detaches the loop
// device; it also runs at cleanup.
func MountExFAT(t testing.TB, img, mnt string, sectorSize int, ro bool) (unmount func()) {
	t.Helper()
	Need(t, "mount.exfat-fuse", "fusermount")
	dev, detach := loopSector(t, img, sectorSize)
	args := []string{"-d"} // -d: stay in the foreground, so Wait tells when it is done
	if ro {
		args = append(args, "-o", "ro")
	}
	return serveFUSE(t, exec.Command("mount.exfat-fuse", append(args, dev, mnt)...), mnt, detach)
}

// ExFAT makes an exFAT filesystem the hard way in a new size-byte file: the
// file is filled with random bytes, mkfs.exfat formats it (through a loop
// device with sectorSize-byte sectors if sectorSize is not 0), exfat-fuse
// writes FATFiles(size) and deletes the "del" files again, leaving their
// data behind in free clusters. It returns the sha256 of every remaining
// file by path. Needs root.
func ExFAT(t testing.TB, img string, size int64, sectorSize int, mkfsArgs ...string) map[string]string {
	t.Helper()
	Need(t, "mkfs.exfat")
	RandomFile(t, img, size)
	dev, detach := loopSector(t, img, sectorSize)
	Run(t, "mkfs.exfat", append(append([]string{}, mkfsArgs...), dev)...)
	detach()
	mnt := t.TempDir()
	unmount := MountExFAT(t, img, mnt, sectorSize, false)
	files := map[string]int64{}
	for _, f := range FATFiles(size) {
		files[f.Path] = f.Size
	}
	WriteRandomFiles(t, mnt, files)
	for p := range files {
		if strings.HasPrefix(filepath.Base(p), "del") {
			if err := os.Remove(filepath.Join(mnt, p)); err != nil {
				t.Fatal(err)
			}
		}
	}
	hashes := HashTree(t, mnt)
	unmount()
	return hashes
}
