package imgtest

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prezero/prezero/internal/mounttab"
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
	waitReleased(t, dev)
	if out, err := Output("losetup", "-d", dev); err != nil && !detachedSoon(dev, backing) {
		t.Errorf("losetup -d %s: %v\n%s", dev, err, out)
	}
}

// detachedSoon reports whether dev stops serving backing within 5 s. The
// kernel defers a detach while another opener (udev probing the device
// after a write) holds it, and a second detach during that rundown fails
// with "No such device or address" although the device is going.
func detachedSoon(dev, backing string) bool {
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if !attachedTo(dev, backing) {
			return true
		}
	}
	return false
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

// waitReleased waits, for up to a minute, until no filesystem holds dev.
// umount returns as soon as the mount leaves this mount namespace, but a
// process that made its own namespace while the mount existed (a test's
// "unshare --mount", a service starting) holds a copy of it: the kernel
// writes the filesystem back and lets go of the device only when the last
// copy goes. Until then the backing file may still read as before the
// mount, and a test that reads it finds a filesystem that is not yet
// written.
//
// If dev is still mounted in this namespace (a unmount that failed and
// said so), there is nothing to wait for.
func waitReleased(t testing.TB, dev string) {
	t.Helper()
	if mountedHere(dev) {
		return
	}
	deadline := time.Now().Add(time.Minute)
	for {
		// A block device opened with O_EXCL is refused while mounted.
		f, err := os.OpenFile(dev, os.O_RDONLY|syscall.O_EXCL, 0)
		if err == nil {
			f.Close()
			return
		}
		if !errors.Is(err, syscall.EBUSY) {
			return // not ours to judge: losetup -d reports what is wrong
		}
		if time.Now().After(deadline) {
			t.Errorf("%s is still in use a minute after its unmount (mounted in these processes' namespaces: %s)", dev, mountedIn(dev))
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// mountedIn lists the processes whose mount namespace has dev mounted.
func mountedIn(dev string) string {
	var pids []string
	infos, _ := filepath.Glob("/proc/[0-9]*/mountinfo")
	for _, p := range infos {
		if lists(p, dev) {
			pids = append(pids, filepath.Base(filepath.Dir(p)))
		}
	}
	if len(pids) == 0 {
		return "none found"
	}
	if len(pids) > 10 {
		pids = append(pids[:10], "...")
	}
	return strings.Join(pids, " ")
}

// mountedHere reports whether dev is mounted in this process's namespace.
func mountedHere(dev string) bool { return lists(mounttab.Path, dev) }

// lists reports whether the mount table at path has dev mounted.
func lists(path, dev string) bool {
	ms, err := mounttab.Read(path)
	if err != nil {
		return false
	}
	for _, m := range ms {
		if m.Source == dev {
			return true
		}
	}
	return false
}

// mountedDevice returns the block device mounted on top at dir in this
// namespace, or "" if what is mounted there is not a /dev node.
func mountedDevice(dir string) string {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return ""
	}
	ms, err := mounttab.Read(mounttab.Path)
	if err != nil {
		return ""
	}
	m, ok := mounttab.Top(ms, abs)
	if !ok || !strings.HasPrefix(m.Source, "/dev/") {
		return ""
	}
	if fi, err := os.Stat(m.Source); err != nil || fi.Mode()&os.ModeDevice == 0 || fi.Mode()&os.ModeCharDevice != 0 {
		return ""
	}
	return m.Source
}
