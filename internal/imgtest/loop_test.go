package imgtest

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
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

// TestUnmountWaitsForOtherNamespaces: a umount while another process's
// mount namespace still holds a copy of the mount leaves the filesystem
// unwritten until that process goes. Umount, and Detach after a plain
// umount, must wait for it, so that the image a test reads next holds what
// the test wrote through the mount. (A parallel package's "unshare
// --mount" once made xfsmap read an XFS image as freshly made, while
// xfs_db, a second later, read it populated.)
func TestUnmountWaitsForOtherNamespaces(t *testing.T) {
	NeedRoot(t)
	Need(t, "mkfs.ext4", "mount", "unshare", "sh")
	for _, tc := range []struct {
		name    string
		unmount func(t *testing.T, mnt string, detach func())
	}{
		{"Umount", func(t *testing.T, mnt string, detach func()) { Umount(t, mnt) }},
		{"umount then Detach", func(t *testing.T, mnt string, detach func()) { Run(t, "umount", mnt); detach() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := filepath.Join(t.TempDir(), "fs.img")
			ZeroFile(t, img, 16<<20)
			Run(t, "mkfs.ext4", "-q", "-F", "-E", "nodiscard", img)
			dev, detach := Loop(t, img, 0, 0, false)
			mnt := t.TempDir()
			Run(t, "mount", "-o", "commit=600", dev, mnt)
			t.Cleanup(func() { Output("umount", mnt) })
			marker := make([]byte, 64<<10)
			rand.Read(marker)
			if err := os.WriteFile(filepath.Join(mnt, "f"), marker, 0o644); err != nil {
				t.Fatal(err)
			}

			holder := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c", "echo ready; exec sleep 1")
			out, err := holder.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := holder.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { holder.Process.Kill(); holder.Wait() })
			if line, err := bufio.NewReader(out).ReadString('\n'); line != "ready\n" {
				t.Fatalf("unshare: %q %v", line, err)
			}
			start := time.Now()
			tc.unmount(t, mnt, detach)
			waited := time.Since(start)
			data, err := os.ReadFile(img)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Contains(data, marker) {
				t.Fatalf("after unmounting (%v), the image does not hold the file written through the mount", waited)
			}
		})
	}
}
