package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prezero/prezero/internal/imgtest"
	"github.com/prezero/prezero/internal/mounttab"
)

// The GPT fixture: a random-filled disk with an ext4, an NTFS and an
// unrecognised partition. Each filesystem had files written and some
// deleted, so free space holds old data that must read as zeros.
const (
	gptSize   = 176 << 20
	extStart  = 1 << 20
	extSize   = 80 << 20
	ntfsStart = extStart + extSize
	ntfsSize  = 64 << 20
	rawStart  = ntfsStart + ntfsSize
	rawSize   = 16 << 20
)

var (
	gptOnce sync.Once
	gptPath string
)

// gptImage returns the fixture, built once per test run next to the test
// binary (removed by TestMain). Tests that change it must copy it.
func gptImage(t *testing.T) string {
	t.Helper()
	imgtest.NeedRoot(t) // ntfs-3g mount to write the NTFS files
	imgtest.Need(t, "sfdisk", "mkfs.ext4", "debugfs", "mkntfs", "ntfs-3g")
	gptOnce.Do(func() {
		dir := filepath.Join(filepath.Dir(prezeroBin(t)), "gpt")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		buildGPT(t, dir) // a failure ends this test and leaves gptPath empty
		gptPath = filepath.Join(dir, "disk.img")
	})
	if gptPath == "" {
		t.Fatal("the GPT fixture could not be built: see the first test that needed it")
	}
	return gptPath
}

func buildGPT(t *testing.T, dir string) {
	img := filepath.Join(dir, "disk.img")
	imgtest.RandomFile(t, img, gptSize)
	imgtest.Partition(t, img, 512, fmt.Sprintf(
		"label: gpt\nstart=%d,size=%d,type=L\nstart=%d,size=%d,type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7\nstart=%d,size=%d,type=0FC63DAF-8483-4772-8E79-3D69D8477DE5\n",
		extStart/512, extSize/512, ntfsStart/512, ntfsSize/512, rawStart/512, rawSize/512))

	ext := filepath.Join(t.TempDir(), "ext.img")
	imgtest.Ext(t, ext, extSize)
	imgtest.WriteAt(t, img, extStart, ext)

	ntfs := filepath.Join(t.TempDir(), "ntfs.img")
	imgtest.MakeNTFS(t, ntfs, ntfsSize, 0, 0)
	mnt := t.TempDir()
	unmount := imgtest.MountNTFS(t, ntfs, mnt, false)
	files := map[string]int64{"keep/a.bin": 3 << 20, "keep/b.bin": 12345, "c.bin": 700 << 10, "gone/big.bin": 20 << 20, "gone/d.bin": 1 << 20}
	imgtest.WriteRandomFiles(t, mnt, files)
	if err := os.RemoveAll(filepath.Join(mnt, "gone")); err != nil {
		t.Fatal(err)
	}
	unmount()
	imgtest.WriteAt(t, img, ntfsStart, ntfs)
}

// pz runs the prezero binary with extra environment variables and returns
// its stdout, stderr and exit code.
func pz(t *testing.T, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	o, e, code := runPrezeroEnv(t, env, args...)
	return string(o), string(e), code
}

// catFile writes "prezero cat IMG WHAT" to a file and returns its path.
func catFile(t *testing.T, img, what string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), what+".cat")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command(prezeroBin(t), "cat", img, what)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = f, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("prezero cat %s %s: %v\n%s", img, what, err, stderr.String())
	}
	return out
}

// mountedAt returns the filesystem type mounted on dir, or "".
func mountedAt(t *testing.T, dir string) string {
	t.Helper()
	ms, err := mounttab.Read(mounttab.Path)
	if err != nil {
		t.Fatal(err)
	}
	m, _ := mounttab.Top(ms, dir)
	return m.FSType
}

// mountsUnder returns the mount points under dir (or equal to it).
func mountsUnder(t *testing.T, dir string) []string {
	t.Helper()
	ms, err := mounttab.Read(mounttab.Path)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range ms {
		if m.Point == dir || strings.HasPrefix(m.Point, dir+"/") {
			out = append(out, m.Point)
		}
	}
	return out
}

func serverPIDs(dir string) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		var pid int
		if _, err := fmt.Sscan(e.Name(), &pid); err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		for _, arg := range bytes.Split(b, []byte{0}) {
			if string(arg) == dir {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

// eventually polls cond until it holds, for up to a minute: what it waits
// for takes well under a second on an idle machine, but the test packages
// run in parallel on two cores.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	waitFor(t, time.Minute, what, cond)
}

// waitFor polls cond until it holds, for up to d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting: %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// publicDir returns a new directory that every user may enter, for tests
// that run prezero as another user (t.TempDir is 0700).
func publicDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "prezero-test-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// as returns SysProcAttr running a command as uid/gid.
func as(uid, gid uint32) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid}}
}
