package main

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prezero/prezero/borg"
	"github.com/prezero/prezero/internal/imgtest"
)

// borgRepo makes an unencrypted repository for the borg binary name and
// returns it with the environment every borg and prezero run of the test
// uses: its own BORG_BASE_DIR, so caches and keys stay in the test.
func borgRepo(t *testing.T, name string) (*borg.Borg, string, []string) {
	t.Helper()
	return borgRepoEncrypted(t, name, "none")
}

// borgRepoEncrypted is borgRepo with an encryption mode (-e). env, such as
// BORG_PASSPHRASE for an encrypted one, is added to every run and returned.
func borgRepoEncrypted(t *testing.T, name, mode string, env ...string) (*borg.Borg, string, []string) {
	t.Helper()
	imgtest.Need(t, name)
	b, err := borg.Find(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	env = append([]string{
		"BORG_BASE_DIR=" + t.TempDir(),
		"BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes",
		"BORG_RELOCATED_REPO_ACCESS_IS_OK=yes",
	}, env...)
	repo := filepath.Join(t.TempDir(), "repo")
	if b.Major == 1 {
		runEnv(t, env, b.Path, "init", "-e", mode, repo)
	} else {
		// borg 2 betas call it rcreate, later ones repo-create.
		create := "repo-create"
		if help, _ := exec.Command(b.Path, "--help").CombinedOutput(); !strings.Contains(string(help), "repo-create") {
			create = "rcreate"
		}
		runEnv(t, env, b.Path, "-r", repo, create, "-e", mode)
	}
	return b, repo, env
}

func runEnv(t *testing.T, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %q: %v\n%s", name, args, err, out)
	}
	return string(out)
}

// extract writes path of repo::archive to a file with borg extract --stdout.
func extract(t *testing.T, b *borg.Borg, env []string, repo, archive, path string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), archive+"-"+path)
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command(b.Path, b.ExtractStdoutArgs(borg.Ref{Repo: repo, Archive: archive}, path)...)
	cmd.Env = append(os.Environ(), env...)
	var stderr strings.Builder
	cmd.Stdout, cmd.Stderr = f, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("borg extract %s::%s %s: %v\n%s", repo, archive, path, err, stderr.String())
	}
	return out
}

func backup(t *testing.T, env []string, args ...string) {
	t.Helper()
	_, stderr, code := pz(t, env, append([]string{"backup"}, args...)...)
	if code != 0 {
		t.Fatalf("prezero backup %q: exit %d\n%s", args, code, stderr)
	}
}

// section copies n bytes at off of src into a new file.
func section(t *testing.T, src string, off, n int64) string {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out := filepath.Join(t.TempDir(), "section.img")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := io.Copy(f, io.NewSectionReader(in, off, n)); err != nil {
		t.Fatal(err)
	}
	return out
}

// extTree dumps an ext image's files with debugfs rdump and hashes them.
func extTree(t *testing.T, img string) map[string]string {
	t.Helper()
	dir := t.TempDir()
	imgtest.Run(t, "debugfs", "-R", "rdump / "+dir, img)
	return imgtest.HashTree(t, dir)
}

// ntfsTree mounts an NTFS image read-only with ntfs-3g and hashes its files.
func ntfsTree(t *testing.T, img string) map[string]string {
	t.Helper()
	mnt := t.TempDir()
	unmount := imgtest.MountNTFS(t, img, mnt, true)
	defer unmount()
	return imgtest.HashTree(t, mnt)
}

func sameTree(t *testing.T, what string, got, want map[string]string) {
	t.Helper()
	if len(want) < 3 {
		t.Fatalf("%s: the source holds only %d files", what, len(want))
	}
	for name, h := range want {
		if got[name] != h {
			t.Errorf("%s: %s differs or is missing after the round trip", what, name)
		}
	}
	if len(got) != len(want) {
		t.Errorf("%s: %d files after the round trip, %d before", what, len(got), len(want))
	}
}

func TestBackupExtract(t *testing.T) {
	img := gptImage(t)
	imgtest.Need(t, "e2fsck", "debugfs")
	b, repo, env := borgRepo(t, "borg")

	backup(t, env, img, repo+"::disk")
	got := extract(t, b, env, repo, "disk", "disk.img")
	if imgtest.SHA256File(t, got) != imgtest.SHA256File(t, catFile(t, img, "disk")) {
		t.Fatal("extracted disk.img differs from prezero cat disk")
	}

	backup(t, env, "--partitions", img, repo+"::parts")
	for what, name := range map[string]string{"header": "header.img", "3": "part3.img"} {
		if imgtest.SHA256File(t, extract(t, b, env, repo, "parts", name)) != imgtest.SHA256File(t, catFile(t, img, what)) {
			t.Errorf("extracted %s differs from prezero cat %s", name, what)
		}
	}
	ext := extract(t, b, env, repo, "parts", "part1.img")
	imgtest.Run(t, "e2fsck", "-fn", ext)
	sameTree(t, "ext4", extTree(t, ext), extTree(t, section(t, img, extStart, extSize)))
	ntfs := extract(t, b, env, repo, "parts", "part2.img")
	sameTree(t, "ntfs", ntfsTree(t, ntfs), ntfsTree(t, section(t, img, ntfsStart, ntfsSize)))
	if mounts := mountsUnder(t, os.TempDir()+"/prezero-backup-"); len(mounts) > 0 {
		t.Errorf("mounts left behind: %v", mounts)
	}
}

// borg's files cache skips a file whose inode, size and ctime are unchanged.
// The mount's ctime is its start time, so a changed source is read again
// even if its size and mtime are what they were.
func TestBackupTwiceSeesChanges(t *testing.T) {
	b, repo, env := borgRepo(t, "borg")
	img := filepath.Join(t.TempDir(), "disk.img")
	imgtest.CopyFile(t, img, gptImage(t))
	fi, _ := os.Stat(img)

	backup(t, env, img, repo+"::one")
	before := imgtest.SHA256File(t, catFile(t, img, "disk"))
	f, err := os.OpenFile(img, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("new bytes in the unknown partition"), rawStart+12345); err != nil {
		t.Fatal(err)
	}
	f.Close()
	os.Chtimes(img, fi.ModTime(), fi.ModTime())
	after := imgtest.SHA256File(t, catFile(t, img, "disk"))
	if before == after {
		t.Fatal("the change did not reach the zeroed stream")
	}

	backup(t, env, img, repo+"::two")
	if got := imgtest.SHA256File(t, extract(t, b, env, repo, "two", "disk.img")); got != after {
		t.Fatal("the second archive holds the old bytes: borg's files cache skipped the changed image")
	}
	if got := imgtest.SHA256File(t, extract(t, b, env, repo, "one", "disk.img")); got != before {
		t.Fatal("the first archive changed")
	}
}

// Ctrl-C (SIGINT) or SIGTERM during a backup stops borg and leaves no mount
// and no temporary directory behind; the repository stays usable. borg 1.2
// answers a first SIGINT with a checkpoint and finishes the file it is
// reading (the whole image); a second one aborts at once.
//
// Two signals that reach borg while its Python main thread is inside one C
// call (compressing a chunk: seconds under load) run its handler once, so
// the second SIGINT is sent once borg has handled the first: when it says
// (--info) that the checkpoint it asked for is written.
func TestBackupInterrupted(t *testing.T) {
	img := gptImage(t)
	const checkpointed = "checkpoint requested: finished checkpoint creation"
	for _, c := range []struct {
		name     string
		sigs     []syscall.Signal
		args     []string
		mustFail bool
	}{
		{"SIGINT", []syscall.Signal{syscall.SIGINT}, []string{"--", "--compression", "lz4"}, false},
		{"SIGINT twice", []syscall.Signal{syscall.SIGINT, syscall.SIGINT}, []string{"--", "--info", "--compression", "lzma,9"}, true},
		{"SIGTERM", []syscall.Signal{syscall.SIGTERM}, []string{"--", "--compression", "lzma,9"}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			b, repo, env := borgRepo(t, "borg")
			tmp := t.TempDir()
			cmd := exec.Command(prezeroBin(t), append([]string{"backup", img, repo + "::slow"}, c.args...)...)
			cmd.Env = append(append(os.Environ(), env...), "TMPDIR="+tmp)
			var stderr lockedBuffer
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan error, 1)
			go func() { exited <- cmd.Wait() }()
			t.Cleanup(func() {
				// A failed test leaves neither prezero nor borg running.
				cmd.Process.Kill()
				for _, pid := range pidsWith("create", repo+"::slow") {
					syscall.Kill(pid, syscall.SIGKILL)
				}
			})
			eventually(t, "borg create reading the mount", func() bool { return openUnder(tmp, "create") })
			for i, sig := range c.sigs {
				if i > 0 {
					waitFor(t, 120*time.Second, "borg's checkpoint after the first SIGINT", func() bool {
						return strings.Contains(stderr.String(), checkpointed)
					})
				}
				cmd.Process.Signal(sig)
			}
			select {
			case err := <-exited:
				t.Logf("exit: %v\n%s", err, stderr.String())
				if err == nil && c.mustFail {
					// borg can swallow the signal: its handler raises, and
					// when that happens inside a __del__ method Python
					// prints "Exception ignored in" and borg carries on.
					// Then the archive must be whole, and prezero says why
					// the backup did not stop.
					msg := stderr.String()
					if !strings.Contains(msg, "Exception ignored in") || !strings.Contains(msg, "finished the archive anyway") {
						t.Fatalf("backup exited 0 after %v\n%s", c.sigs, msg)
					}
					if list := runEnv(t, env, b.Path, "list", "--short", repo); !strings.Contains(list, "slow\n") {
						t.Fatalf("borg ignored %v and exited 0, but the archive is not whole: %q", c.sigs, list)
					}
					t.Logf("borg ignored %v and finished the archive; prezero said so", c.sigs)
				}
			case <-time.After(180 * time.Second):
				t.Fatalf("backup still running 180 s after %v\n%s", c.sigs, stderr.String())
			}
			if m := mountsUnder(t, tmp); len(m) > 0 {
				t.Fatalf("mounts left behind: %v", m)
			}
			// borg killed by SIGTERM leaves its own temporary files.
			if left, _ := filepath.Glob(filepath.Join(tmp, "prezero-backup-*")); len(left) > 0 {
				t.Fatalf("left in TMPDIR: %v", left)
			}
			if openUnder(tmp, "") {
				t.Fatal("a process still has the mount's files open")
			}
			runEnv(t, env, b.Path, "list", repo) // not locked
		})
	}
}

// openUnder reports whether a process whose command line contains word
// has a file under dir open.
func openUnder(dir, word string) bool {
	fds, _ := filepath.Glob("/proc/[0-9]*/fd/*")
	for _, fd := range fds {
		l, err := os.Readlink(fd)
		if err != nil || !strings.HasPrefix(l, dir+"/") {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join(filepath.Dir(filepath.Dir(fd)), "cmdline"))
		if strings.Contains(string(cmdline), word) {
			return true
		}
	}
	return false
}

func TestBackupBorg2(t *testing.T) {
	img := gptImage(t)
	b, repo, env := borgRepo(t, "borg2")
	if b.Major != 2 {
		t.Fatalf("borg2 is version %s", b.Version)
	}
	backup(t, env, "--borg", "borg2", img, repo+"::disk")
	if imgtest.SHA256File(t, extract(t, b, env, repo, "disk", "disk.img")) != imgtest.SHA256File(t, catFile(t, img, "disk")) {
		t.Fatal("borg2: extracted disk.img differs from prezero cat disk")
	}
}

// fakeCreateBorg writes a borg stand-in that records its arguments, working
// directory listing and BORG_PASSPHRASE, and exits with $FAKE_BORG_EXIT.
func fakeCreateBorg(t *testing.T, version string) (bin, log string) {
	t.Helper()
	dir := t.TempDir()
	bin, log = filepath.Join(dir, "borg"), filepath.Join(dir, "log")
	script := `#!/bin/sh
if [ "$1" = --version ]; then echo "` + version + `"; exit 0; fi
{ echo "args: $*"; echo "files: $(ls | tr '\n' ' ')"; echo "pass: $BORG_PASSPHRASE"; } > ` + log + `
exit ${FAKE_BORG_EXIT:-0}
`
	writeFile(t, bin, []byte(script))
	os.Chmod(bin, 0o755)
	return bin, log
}

func TestBackupBorgArgsAndExitCodes(t *testing.T) {
	img := gptImage(t)
	cwd, _ := os.Getwd()
	for _, c := range []struct {
		version, args string
	}{
		{"borg 1.2.4", "args: create --read-special --sparse --chunker-params fixed,4194304 --stats -C zstd " + cwd + "/rel/repo::arch disk.img"},
		{"borg2 2.0.0b5", "args: -r " + cwd + "/rel/repo create --read-special --sparse --chunker-params fixed,4194304 --stats -C zstd arch disk.img"},
	} {
		bin, log := fakeCreateBorg(t, c.version)
		for _, code := range []int{0, 1, 2} {
			env := []string{"FAKE_BORG_EXIT=" + strconv.Itoa(code), "BORG_PASSPHRASE=secret"}
			_, stderr, got := pz(t, env, "backup", "--borg", bin, img, "rel/repo::arch", "--", "--stats", "-C", "zstd")
			if got != code {
				t.Errorf("%s exit %d: prezero exited %d\n%s", c.version, code, got, stderr)
			}
			text := string(readFile(t, log))
			if !strings.Contains(text, c.args+"\n") || !strings.Contains(text, "files: disk.img header.img part1.img part2.img part3.img") ||
				!strings.Contains(text, "pass: secret") {
				t.Errorf("%s saw:\n%s\nwant %s", c.version, text, c.args)
			}
		}
	}
	for _, c := range []struct {
		args []string
		msg  string
	}{
		{[]string{"backup", img}, "expected SOURCE REPO::ARCHIVE"},
		{[]string{"backup", img, "repo"}, "REPO::ARCHIVE"},
		{[]string{"backup", img, "repo::a", "extra"}, "got 3 arguments"},
		{[]string{"backup", "--borg", "/nonexistent/borg", img, "repo::a"}, "borg not found"},
	} {
		if _, stderr, code := pz(t, nil, c.args...); code != 2 || !strings.Contains(stderr, c.msg) {
			t.Errorf("prezero %q: exit %d, %q; want 2 and %q", c.args, code, stderr, c.msg)
		}
	}
}
