package imgtest

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// Loop attaches a loop device over img (from byte off, n bytes if n > 0,
// read-only if ro) and returns it with a function that detaches it; the
// detach also runs at cleanup. Needs root.
func Loop(t testing.TB, img string, off, n int64, ro bool) (dev string, detach func()) {
	t.Helper()
	NeedRoot(t)
	Need(t, "losetup")
	args := []string{"-f", "--show"}
	if off > 0 {
		args = append(args, "-o", strconv.FormatInt(off, 10))
	}
	if n > 0 {
		args = append(args, "--sizelimit", strconv.FormatInt(n, 10))
	}
	if ro {
		args = append(args, "-r")
	}
	dev = strings.TrimSpace(Run(t, "losetup", append(args, img)...))
	detach = func() { Detach(t, dev, img) }
	t.Cleanup(detach)
	return dev, detach
}

// Detach detaches the loop device dev if it is still attached to the file
// backing, and does nothing if it is not. A device detached once is free
// for any test, in any package running at the same time, to attach; a
// second plain "losetup -d" would take it from under that test.
func Detach(t testing.TB, dev, backing string) {
	t.Helper()
	if !attachedTo(dev, backing) {
		return
	}
	if out, err := Output("losetup", "-d", dev); err != nil {
		t.Errorf("losetup -d %s: %v\n%s", dev, err, out)
	}
}

// attachedTo reports whether the loop device dev is attached to backing,
// as the kernel names the backing file in sysfs.
func attachedTo(dev, backing string) bool {
	b, err := os.ReadFile(filepath.Join("/sys/block", filepath.Base(dev), "loop", "backing_file"))
	if err != nil {
		return false // not a bound loop device
	}
	got := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), " (deleted)")
	want, err := filepath.Abs(backing)
	if err != nil {
		return false
	}
	if w, err := filepath.EvalSymlinks(want); err == nil {
		want = w
	}
	return got == want
}
