package imgtest

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
)

// xfsEnv lets mkfs.xfs make filesystems below its 300 MB floor (xfsprogs
// 5.19+ waive it for fstests when these are set), so test images stay small.
var xfsEnv = []string{"TEST_DIR=1", "TEST_DEV=1", "QA_CHECK_FS=1", "LC_ALL=C"}

// MakeXFS fills path with size random bytes and formats it with mkfs.xfs
// -K (no discard, so free blocks keep their random bytes) and the given
// arguments.
func MakeXFS(t testing.TB, path string, size int64, mkfsArgs ...string) {
	t.Helper()
	Need(t, "mkfs.xfs")
	RandomFile(t, path, size)
	RunXFS(t, "mkfs.xfs", append(append([]string{"-q", "-f", "-K"}, mkfsArgs...), path)...)
}

// RunXFS runs an xfsprogs tool with the small-filesystem environment and
// returns its stdout; it fails the test if the tool fails.
func RunXFS(t testing.TB, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Env = append(os.Environ(), xfsEnv...)
	if name == "xfs_copy" {
		// xfs_copy leaves a log in /var/tmp on every run: remove ours.
		before := xfsCopyLogs()
		defer func() {
			for _, l := range xfsCopyLogs() {
				if !slices.Contains(before, l) {
					os.Remove(l)
				}
			}
		}()
	}
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %q: %v\n%s%s", name, args, err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

func xfsCopyLogs() []string {
	l, _ := filepath.Glob("/var/tmp/xfs_copy.log.*")
	return l
}

// MountXFS mounts the XFS image img on mnt through a loop device of its
// own, with mount options opts ("" for none), and returns a function that
// unmounts it and detaches the device (also run at cleanup).
func MountXFS(t testing.TB, img, mnt, opts string, ro bool) (unmount func()) {
	t.Helper()
	dev, detach := Loop(t, img, 0, 0, ro)
	args := []string{"-t", "xfs"}
	if opts != "" {
		args = append(args, "-o", opts)
	}
	Run(t, "mount", append(args, dev, mnt)...)
	done := false
	unmount = func() {
		if !done {
			done = true
			Umount(t, mnt)
			detach()
		}
	}
	t.Cleanup(unmount)
	return unmount
}
