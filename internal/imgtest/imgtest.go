// Package imgtest builds test images with the real tools (mkfs.ext4, mkntfs,
// sfdisk, ...) for prezero's tests. It is imported only from _test.go files.
//
// A missing tool skips the test on a developer box, but fails it when CI=true:
// in CI no integration test may skip.
package imgtest

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// InCI reports whether the tests run under CI (CI=true).
func InCI() bool { return os.Getenv("CI") == "true" }

// Need skips the test (or fails it under CI) unless every tool is on PATH.
func Need(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			if InCI() {
				t.Fatalf("required tool %q is missing under CI=true: %v", tool, err)
			}
			t.Skipf("tool %q not installed: %v", tool, err)
		}
	}
}

// NeedRoot skips the test (or fails it under CI) unless it runs as root.
func NeedRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		if InCI() {
			t.Fatalf("test needs root under CI=true")
		}
		t.Skip("test needs root")
	}
}

// Run runs a command and fails the test with its output if it fails.
// It returns the command's stdout.
func Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := Output(name, args...)
	if err != nil {
		t.Fatalf("%s %q: %v\n%s", name, args, err, out)
	}
	return out
}

// Output runs a command and returns its stdout, or stdout and stderr on error.
func Output(name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	if err := cmd.Run(); err != nil {
		return stdout.String() + stderr.String(), err
	}
	return stdout.String(), nil
}

// RandomFile creates path as a file of size random bytes, so that every
// mapping mistake (a used block zeroed, a free block kept) is visible.
func RandomFile(t testing.TB, path string, size int64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := io.CopyN(f, rand.Reader, size); err != nil {
		t.Fatal(err)
	}
}

// SHA256File returns the hex sha256 of a file.
func SHA256File(t testing.TB, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// ZeroFile creates path as a sparse file of size zero bytes.
func ZeroFile(t testing.TB, path string, size int64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// CopyFile copies src to dst.
func CopyFile(t testing.TB, dst, src string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// OutputStdin runs a command with stdin as its input and returns its stdout,
// or stdout and stderr on error.
func OutputStdin(stdin, name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdin = strings.NewReader(stdin)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	if err := cmd.Run(); err != nil {
		return stdout.String() + stderr.String(), err
	}
	return stdout.String(), nil
}

// Umount unmounts the kernel mount at dir. While the mount is busy it
// retries for up to a minute: a process that another test goroutine forks
// holds copies of the test's open files until it execs, and parallel tests
// fork often. If it still fails, it detaches the mount lazily, so that no
// mount outlives the test, and fails the test.
//
// Once unmounted, it waits for the block device the mount was of to be
// released (see waitReleased): a mount copied into another mount namespace
// outlives the umount, unwritten.
func Umount(t testing.TB, dir string) {
	t.Helper()
	dev := mountedDevice(dir)
	deadline := time.Now().Add(time.Minute)
	for {
		out, err := Output("umount", dir)
		if err == nil {
			if dev != "" {
				waitReleased(t, dev)
			}
			return
		}
		if !strings.Contains(out, "busy") || time.Now().After(deadline) {
			lazy, lerr := Output("umount", "--lazy", dir)
			t.Errorf("umount %s: %v: %s (lazy unmount: %v %s)", dir, err, strings.TrimSpace(out), lerr, strings.TrimSpace(lazy))
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}
