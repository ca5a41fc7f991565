package imgtest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDetachLeavesAnothersDevice: once a loop device is detached, its
// number is free for another test; detaching it again by number must not
// take it from that test.
func TestDetachLeavesAnothersDevice(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.img"), filepath.Join(dir, "b.img")
	ZeroFile(t, a, 1<<20)
	ZeroFile(t, b, 1<<20)
	// Take a's number for b once a is detached, as another test would.
	// A test in another package may take it first: then try again.
	var devA, devB string
	for try := 0; devB == ""; try++ {
		var detachA func()
		devA, detachA = Loop(t, a, 0, 0, true)
		detachA()
		if attachedTo(devA, a) {
			t.Fatalf("%s still serves %s after detach", devA, a)
		}
		out, err := Output("losetup", "--show", "-r", devA, b)
		if err == nil {
			devB = strings.TrimSpace(out)
		} else if try == 10 {
			t.Fatalf("losetup %s %s: %v\n%s", devA, b, err, out)
		}
	}
	t.Cleanup(func() { Detach(t, devB, b) })
	Detach(t, devA, a) // a's cleanup, late
	if !attachedTo(devB, b) {
		t.Fatalf("detaching %s for %s took it from %s", devA, a, b)
	}
	// Through a symlinked directory, and after the file is deleted.
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(dir, link); err != nil {
		t.Fatal(err)
	}
	if !attachedTo(devB, filepath.Join(link, "b.img")) {
		t.Errorf("%s is not seen as b's through a symlink", devB)
	}
	if err := os.Remove(b); err != nil {
		t.Fatal(err)
	}
	if !attachedTo(devB, b) {
		t.Errorf("%s is not seen as b's once b is deleted", devB)
	}
}
