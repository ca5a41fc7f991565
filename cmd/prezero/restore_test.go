package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/prezero/prezero/internal/imgtest"
	"github.com/prezero/prezero/internal/restore"
)

// The restore fixture: a GPT disk, zero-filled before sfdisk so that the
// gaps between partitions are zero, with an ext4 and an NTFS partition made
// the hard way (random free space, files written then deleted). It is backed
// up with 'prezero backup' twice: as disk.img ("whole") and with
// --partitions ("parts").
const (
	rsExtStart  = 1 << 20
	rsExtSize   = 40 << 20
	rsNTFSStart = rsExtStart + rsExtSize + 1<<20 // a 1 MiB gap
	rsNTFSSize  = 40 << 20
	rsDiskSize  = rsNTFSStart + rsNTFSSize + 3<<20 // room after: a gap, then the backup GPT
)

type restoreFixture struct {
	dir        string
	img        string // the disk
	stream     string // prezero cat IMG disk
	repo       string // borg repository with archives "whole" and "parts"
	env        []string
	extHashes  map[string]string
	ntfsHashes map[string]string
}

var (
	rsOnce sync.Once
	rsFix  *restoreFixture
	rsErr  string
)

// restoreFix builds the fixture once per test run, next to the test binary
// (TestMain removes it).
func restoreFix(t *testing.T) *restoreFixture {
	t.Helper()
	imgtest.NeedRoot(t)
	imgtest.Need(t, "borg", "sfdisk", "mkfs.ext4", "debugfs", "e2fsck", "mkntfs", "ntfs-3g", "losetup", "mount", "umount")
	rsOnce.Do(func() {
		// Built in the first test that needs it, not in a subtest, so
		// that -run filters cannot skip the build. If it fails, that test
		// fails with the reason and the others with rsErr.
		rsErr = "building the restore fixture failed (see the first restore test)"
		f := &restoreFixture{dir: filepath.Join(filepath.Dir(prezeroBin(t)), "restore")}
		f.build(t)
		rsFix, rsErr = f, ""
	})
	if rsErr != "" {
		t.Fatal(rsErr)
	}
	return rsFix
}

func (f *restoreFixture) build(t *testing.T) {
	if err := os.MkdirAll(f.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	f.img = filepath.Join(f.dir, "disk.img")
	if err := os.WriteFile(f.img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(f.img, rsDiskSize); err != nil {
		t.Fatal(err)
	}
	imgtest.Partition(t, f.img, 512, fmt.Sprintf("label: gpt\nstart=%d,size=%d,type=L\nstart=%d,size=%d,type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7\n",
		rsExtStart/512, rsExtSize/512, rsNTFSStart/512, rsNTFSSize/512))

	ext := filepath.Join(t.TempDir(), "ext.img")
	imgtest.Ext(t, ext, rsExtSize)
	f.extHashes = rsMountedHashes(t, ext, 0, rsExtSize, "ext4")
	imgtest.WriteAt(t, f.img, rsExtStart, ext)

	ntfs := filepath.Join(t.TempDir(), "ntfs.img")
	imgtest.MakeNTFS(t, ntfs, rsNTFSSize, 0, 0)
	mnt := t.TempDir()
	unmount := imgtest.MountNTFS(t, ntfs, mnt, false)
	imgtest.WriteRandomFiles(t, mnt, map[string]int64{"keep/a.bin": 3 << 20, "keep/b.bin": 12345, "c.bin": 700 << 10, "gone/big.bin": 12 << 20, "gone/d.bin": 1 << 20})
	if err := os.RemoveAll(filepath.Join(mnt, "gone")); err != nil {
		t.Fatal(err)
	}
	f.ntfsHashes = imgtest.HashTree(t, mnt)
	unmount()
	imgtest.WriteAt(t, f.img, rsNTFSStart, ntfs)

	f.stream = filepath.Join(f.dir, "stream.img")
	out, errb, code := runPrezero(t, "cat", f.img, "disk")
	if code != 0 {
		t.Fatalf("prezero cat: %d %s", code, errb)
	}
	writeFile(t, f.stream, out)

	f.repo = filepath.Join(f.dir, "repo")
	f.env = []string{
		"BORG_BASE_DIR=" + filepath.Join(f.dir, "borg-base"),
		"BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes",
		"BORG_RELOCATED_REPO_ACCESS_IS_OK=yes",
		"BORG_PASSPHRASE=",
	}
	f.mustRun(t, "borg", "init", "-e", "none", f.repo)
	f.mustRun(t, prezeroBin(t), "backup", f.img, f.repo+"::whole")
	f.mustRun(t, prezeroBin(t), "backup", "--partitions", f.img, f.repo+"::parts")
}

// run runs a command with the fixture's borg environment and stdin, and
// returns its stdout, stderr and exit code.
func (f *restoreFixture) run(t *testing.T, stdin io.Reader, name string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(append(os.Environ(), "LC_ALL=C"), f.env...)
	cmd.Stdin = stdin
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return o.String(), e.String(), ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return o.String(), e.String(), 0
}

func (f *restoreFixture) mustRun(t *testing.T, name string, args ...string) string {
	t.Helper()
	o, e, code := f.run(t, nil, name, args...)
	if code != 0 {
		t.Fatalf("%s %q: exit %d\n%s%s", name, args, code, o, e)
	}
	return o
}

// restore runs prezero restore ARGS and fails the test unless it succeeds.
func (f *restoreFixture) restore(t *testing.T, stdin io.Reader, args ...string) string {
	t.Helper()
	o, e, code := f.run(t, stdin, prezeroBin(t), append([]string{"restore"}, args...)...)
	if code != 0 {
		t.Fatalf("prezero restore %q: exit %d\n%s%s", args, code, o, e)
	}
	return e
}

// rsLoop attaches size bytes at off of img to a loop device (read-only if ro).
func rsLoop(t *testing.T, img string, off, size int64, ro bool) string {
	t.Helper()
	args := []string{"-f", "--show"}
	if ro {
		args = append(args, "-r")
	}
	if size > 0 {
		args = append(args, "-o", strconv.FormatInt(off, 10), "--sizelimit", strconv.FormatInt(size, 10))
	}
	dev := strings.TrimSpace(imgtest.Run(t, "losetup", append(args, img)...))
	t.Cleanup(func() { imgtest.Detach(t, dev, img) })
	return dev
}

// rsMountedHashes mounts the filesystem at off in img read-only and hashes
// every file in it.
func rsMountedHashes(t *testing.T, img string, off, size int64, fstype string) map[string]string {
	t.Helper()
	dev := rsLoop(t, img, off, size, true)
	mnt := t.TempDir()
	if fstype == "ntfs" {
		unmount := imgtest.MountNTFS(t, dev, mnt, true)
		defer unmount()
		return imgtest.HashTree(t, mnt)
	}
	imgtest.Run(t, "mount", "-t", fstype, "-o", "ro,noload", dev, mnt)
	defer imgtest.Umount(t, mnt)
	h := imgtest.HashTree(t, mnt)
	return h
}

func rsSameHashes(t *testing.T, what string, got, want map[string]string) {
	t.Helper()
	if len(want) == 0 {
		t.Fatalf("%s: no files to compare", what)
	}
	for name, h := range want {
		if got[name] != h {
			t.Errorf("%s: %s has hash %.12s, want %.12s", what, name, got[name], h)
		}
	}
	if len(got) != len(want) {
		t.Errorf("%s: %d files, want %d", what, len(got), len(want))
	}
}

// rsNonZero counts the stream's bytes in 4 KiB blocks that are not all zero.
func rsNonZero(b []byte) int64 {
	var n int64
	zero := make([]byte, 4096)
	for off := 0; off < len(b); off += 4096 {
		blk := b[off:min(off+4096, len(b))]
		if !bytes.Equal(blk, zero[:len(blk)]) {
			n += int64(len(blk))
		}
	}
	return n
}

func rsAllocated(t *testing.T, p string) int64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

// rsRandomDevice makes a loop device of size random bytes and returns it.
func rsRandomDevice(t *testing.T, size int64) (dev, backing string) {
	t.Helper()
	backing = filepath.Join(t.TempDir(), "dev.img")
	imgtest.RandomFile(t, backing, size)
	return rsLoop(t, backing, 0, 0, false), backing
}

func TestRestoreFromBorgToNewFile(t *testing.T) {
	f := restoreFix(t)
	out := filepath.Join(t.TempDir(), "restored.img")
	summary := f.restore(t, nil, "--from", f.repo+"::whole", out)
	stream := readFile(t, f.stream)
	got := readFile(t, out)
	if d := firstDiff(got, stream); d >= 0 {
		t.Fatalf("restored file (%d bytes) differs from 'prezero cat disk' (%d bytes) at %d", len(got), len(stream), d)
	}
	nz, alloc := rsNonZero(stream), rsAllocated(t, out)
	t.Logf("stream %d bytes, non-zero %d, allocated %d", len(stream), nz, alloc)
	if alloc < nz || alloc > nz+nz/50+1<<20 {
		t.Errorf("allocated %d bytes for %d non-zero bytes", alloc, nz)
	}
	for _, w := range []string{"bytes in:", "bytes written:", "zeroed by ioctl:", "holes:"} {
		if !strings.Contains(summary, w) {
			t.Errorf("summary lacks %q:\n%s", w, summary)
		}
	}

	extDev := rsLoop(t, out, rsExtStart, rsExtSize, true)
	if o, err := imgtest.Output("e2fsck", "-fn", extDev); err != nil {
		t.Errorf("e2fsck -fn on the restored ext4 partition: %v\n%s", err, o)
	}
	rsSameHashes(t, "ext4", rsMountedHashes(t, out, rsExtStart, rsExtSize, "ext4"), f.extHashes)
	rsSameHashes(t, "ntfs", rsMountedHashes(t, out, rsNTFSStart, rsNTFSSize, "ntfs"), f.ntfsHashes)
}

func TestRestoreOntoRandomDevice(t *testing.T) {
	f := restoreFix(t)
	stream := readFile(t, f.stream)
	tests := []struct {
		name  string
		stdin func() io.Reader
		args  []string
	}{
		{"from borg", nil, []string{"--from", f.repo + "::whole"}},
		{"pipe with --expect-size", func() io.Reader { return io.MultiReader(bytes.NewReader(stream)) }, []string{"--expect-size", strconv.Itoa(len(stream))}},
		{"input file, 512-byte blocks", nil, []string{"--input", f.stream, "--block-size", "512"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dev, backing := rsRandomDevice(t, int64(len(stream))+5<<20)
			before := readFile(t, backing)
			var stdin io.Reader
			if tc.stdin != nil {
				stdin = tc.stdin()
			}
			summary := f.restore(t, stdin, append(tc.args, dev)...)
			imgtest.Detach(t, dev, backing)
			got := readFile(t, backing)
			if d := firstDiff(got[:len(stream)], stream); d >= 0 {
				t.Fatalf("device differs from the stream at %d: stale bytes", d)
			}
			if !bytes.Equal(got[len(stream):], before[len(stream):]) {
				t.Errorf("bytes after the stream's end changed")
			}
			if !strings.Contains(summary, "left untouched:    5242880") {
				t.Errorf("summary does not report the untouched 5 MiB:\n%s", summary)
			}
		})
	}
}

func TestRestoreOntoExistingFile(t *testing.T) {
	f := restoreFix(t)
	stream := readFile(t, f.stream)
	out := filepath.Join(t.TempDir(), "old.img")
	imgtest.RandomFile(t, out, int64(len(stream))+7<<20) // non-sparse, longer
	o, e, code := f.run(t, nil, prezeroBin(t), "restore", "--json", "--input", f.stream, out)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, e)
	}
	var sum restore.Summary
	if err := json.Unmarshal([]byte(o), &sum); err != nil {
		t.Fatalf("--json printed %q: %v", o, err)
	}
	if sum.StreamBytes != int64(len(stream)) || sum.Covered != int64(len(stream)) || sum.Holes == 0 || sum.Kind != "regular file" ||
		sum.Written+sum.Zeroed+sum.ZerosWritten+sum.Holes+sum.Skipped != int64(len(stream)) {
		t.Errorf("--json summary %+v does not add up to the %d-byte stream", sum, len(stream))
	}
	got := readFile(t, out)
	if d := firstDiff(got, stream); d >= 0 {
		t.Fatalf("restored file (%d bytes) differs from the stream (%d) at %d", len(got), len(stream), d)
	}
	nz, alloc := rsNonZero(stream), rsAllocated(t, out)
	if alloc > nz+1<<20 {
		t.Errorf("allocated %d bytes for %d non-zero bytes: zero runs were not punched", alloc, nz)
	}
	// Every whole zero block is a hole.
	fd, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close()
	zero := make([]byte, 4096)
	for off := 0; off+4096 <= len(stream); off += 4096 {
		if bytes.Equal(stream[off:off+4096], zero) {
			if d, err := unix.Seek(int(fd.Fd()), int64(off), unix.SEEK_DATA); err == nil && d == int64(off) {
				t.Fatalf("zero block at %d is not a hole", off)
			}
		}
	}
}

func TestRestorePartitionsArchive(t *testing.T) {
	f := restoreFix(t)
	stream := readFile(t, f.stream)
	if int64(len(stream)) != rsDiskSize {
		t.Fatalf("stream is %d bytes", len(stream))
	}
	for _, extra := range []int64{0, 8 << 20} {
		t.Run(fmt.Sprintf("device %d MiB larger", extra>>20), func(t *testing.T) {
			dev, backing := rsRandomDevice(t, rsDiskSize+extra)
			before := readFile(t, backing)
			f.restore(t, nil, "--from", f.repo+"::parts", "--disk", dev)
			if extra == 0 {
				if o, err := imgtest.Output("sfdisk", "--verify", dev); err != nil || !strings.Contains(o, "No errors detected") {
					t.Errorf("sfdisk --verify: %v\n%s", err, o)
				}
			}
			imgtest.Detach(t, dev, backing)
			got := readFile(t, backing)
			// Compared: all of disk.img. The archive holds the header,
			// the partitions; the gaps and the space before the backup GPT
			// are zeroed by restore (and zero in this image), and the backup
			// GPT is regenerated: so every byte must match.
			if d := firstDiff(got[:rsDiskSize], stream); d >= 0 {
				t.Fatalf("restored disk differs from the disk.img stream at byte %d", d)
			}
			if !bytes.Equal(got[rsDiskSize:], before[rsDiskSize:]) {
				t.Errorf("bytes after the original disk's end changed")
			}
		})
	}
}

func TestRestoreRefusals(t *testing.T) {
	f := restoreFix(t)
	stream := readFile(t, f.stream)
	small, smallBacking := rsRandomDevice(t, 32<<20)
	smallHash := imgtest.SHA256File(t, smallBacking)
	unchanged := func(t *testing.T) {
		t.Helper()
		if imgtest.SHA256File(t, smallBacking) != smallHash {
			t.Errorf("the refused target changed")
		}
	}
	dir := t.TempDir()
	tests := []struct {
		name  string
		stdin []byte
		args  []string
		code  int
		want  string
	}{
		{"from borg onto a smaller device", nil, []string{"--from", f.repo + "::whole", small}, 2, "longer than the target"},
		{"partitions onto a smaller device", nil, []string{"--from", f.repo + "::parts", "--disk", small}, 2, "longer than the target"},
		{"input onto a smaller device", nil, []string{"--input", f.stream, small}, 2, "nothing was written"},
		{"pipe of unknown length onto a device", stream[:1<<20], []string{small}, 2, "--expect-size"},
		{"pipe with --expect-size too big", stream, []string{"--expect-size", strconv.Itoa(len(stream)), small}, 2, "longer than the target"},
		{"empty pipe", []byte{}, []string{filepath.Join(dir, "x.img")}, 2, "is empty"},
		{"expect-size mismatch", nil, []string{"--input", f.stream, "--expect-size", "1M", filepath.Join(dir, "x.img")}, 2, "--expect-size is 1048576"},
		{"no such archive", nil, []string{"--from", f.repo + "::nope", filepath.Join(dir, "y.img")}, 2, "Archive nope does not exist"},
		{"no such repository", nil, []string{"--from", filepath.Join(dir, "norepo") + "::whole", filepath.Join(dir, "y.img")}, 2, "does not exist"},
		{"no such path", nil, []string{"--from", f.repo + "::whole", "--path", "nope.img", filepath.Join(dir, "y.img")}, 2, `has no item "nope.img"`},
		{"partitions archive without --disk", nil, []string{"--from", f.repo + "::parts", filepath.Join(dir, "y.img")}, 2, "--disk"},
		{"--disk with --path", nil, []string{"--from", f.repo + "::whole", "--disk", "--path", "x", small}, 2, "no --path"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var stdin io.Reader
			if tc.stdin != nil {
				stdin = bytes.NewReader(tc.stdin)
			}
			_, e, code := f.run(t, stdin, prezeroBin(t), append([]string{"restore"}, tc.args...)...)
			if code != tc.code || !strings.Contains(e, tc.want) {
				t.Errorf("exit %d, stderr:\n%s\nwant exit %d and %q", code, e, tc.code, tc.want)
			}
			unchanged(t)
			for _, p := range []string{"x.img", "y.img"} {
				if _, err := os.Stat(filepath.Join(dir, p)); err == nil {
					t.Errorf("a refused restore created %s", p)
				}
			}
		})
	}

	t.Run("mounted target", func(t *testing.T) {
		work := filepath.Join(t.TempDir(), "work.img")
		imgtest.CopyFile(t, work, f.img)
		dev := rsLoop(t, work, rsExtStart, rsExtSize, false)
		mnt := t.TempDir()
		imgtest.Run(t, "mount", "-o", "ro,noload", dev, mnt)
		defer imgtest.Umount(t, mnt)
		for _, target := range []string{dev, work} {
			_, e, code := f.run(t, nil, prezeroBin(t), "restore", "--force", "--input", f.stream, target)
			if code != 2 || !strings.Contains(e, "is mounted") || !strings.Contains(e, mnt) {
				t.Errorf("restore onto mounted %s: exit %d\n%s", target, code, e)
			}
		}
	})
}

// rsFakeBorg writes a script that answers like borg: version, a one-item
// list, and an extract that writes half its item, then fails with code.
func rsFakeBorg(t *testing.T, extractCode int, full bool) string {
	t.Helper()
	n := 4096
	if !full {
		n = 2048
	}
	p := filepath.Join(t.TempDir(), "borg")
	script := fmt.Sprintf(`#!/bin/sh
case "$1" in
--version) echo "borg 1.2.4" ;;
list) echo "4096 disk.img" ;;
extract) head -c %d /dev/urandom; echo "borg: the repository lock is stale, or the chunk is missing" >&2; exit %d ;;
esac
`, n, extractCode)
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestRestoreBorgExitCodes(t *testing.T) {
	tests := []struct {
		name      string
		code      int
		full      bool
		wantExit  int
		wantInErr string
	}{
		{"error mid-stream", 2, false, 2, "chunk is missing"},
		{"killed", 137, false, 137, "exited with code 137"},
		{"warning after a full stream", 1, true, 1, "borg warned"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "out.img")
			_, eb, code := runPrezero(t, "restore", "--borg", rsFakeBorg(t, tc.code, tc.full), "--from", "repo::a", out)
			e := string(eb)
			if code != tc.wantExit || !strings.Contains(e, tc.wantInErr) {
				t.Errorf("exit %d, stderr:\n%s\nwant exit %d and %q", code, e, tc.wantExit, tc.wantInErr)
			}
			if tc.wantExit != 1 && !strings.Contains(e, "incomplete") {
				t.Errorf("stderr does not say the target is incomplete:\n%s", e)
			}
		})
	}
}

func TestRestoreInterrupt(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out.img")
	cmd := exec.Command(prezeroBin(t), "restore", out)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	chunk := bytes.Repeat([]byte{7}, 1<<20)
	for range 20 {
		stdin.Write(chunk)
	}
	eventually(t, "the first bytes written", func() bool {
		fi, err := os.Stat(out)
		return err == nil && fi.Size() > 0
	})
	cmd.Process.Signal(os.Interrupt)
	err = cmd.Wait()
	stdin.Close()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 130 {
		t.Fatalf("exit: %v, want 130\n%s", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "interrupted") || !strings.Contains(stderr.String(), "incomplete") {
		t.Errorf("stderr does not say the restore was interrupted and the target incomplete:\n%s", stderr.String())
	}
}
