package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prezero/prezero/internal/imgtest"
	"github.com/prezero/prezero/internal/mounttab"
)

// smallExt writes a 16 MiB ext4 image, random below its metadata.
func smallExt(t *testing.T, path string) {
	t.Helper()
	imgtest.Need(t, "mkfs.ext4")
	imgtest.RandomFile(t, path, 16<<20)
	imgtest.Run(t, "mkfs.ext4", "-q", "-F", "-E", "nodiscard", path)
}

// loopDev attaches a loop device over path (with extra losetup arguments)
// and detaches it at cleanup.
func loopDev(t *testing.T, path string, args ...string) string {
	t.Helper()
	imgtest.NeedRoot(t)
	imgtest.Need(t, "losetup")
	dev := strings.TrimSpace(imgtest.Run(t, "losetup", append(append([]string{"-f", "--show"}, args...), path)...))
	t.Cleanup(func() { imgtest.Detach(t, dev, path) })
	return dev
}

// A file served by a prezero mount is in use, whatever bytes its name
// holds: the kernel escapes space, tab, newline and backslash in the mount
// table, and the restore onto it is refused.
func TestRestoreOntoServedFile(t *testing.T) {
	base := filepath.Join(t.TempDir(), "t")
	if err := os.Mkdir(base, 0o755); err != nil {
		t.Fatal(err)
	}
	input := filepath.Join(t.TempDir(), "x.img")
	imgtest.RandomFile(t, input, 16<<20)
	for _, name := range []string{"a b.img", "tab\there.img", "new\nline.img", `back\slash.img`, "ünïcödé ñame.img", `lit\040eral.img`, "plain.img"} {
		t.Run(strings.NewReplacer("\t", "TAB", "\n", "NL").Replace(name), func(t *testing.T) {
			img := filepath.Join(base, name)
			smallExt(t, img)
			hash := imgtest.SHA256File(t, img)
			dir := t.TempDir()
			mountBG(t, img, dir)
			ms, err := mounttab.Read(mounttab.Path)
			if err != nil {
				t.Fatal(err)
			}
			if m, ok := mounttab.Top(ms, dir); !ok || m.Source != img {
				t.Fatalf("the mount's source is %q, want %q", m.Source, img)
			}
			for _, force := range []bool{false, true} {
				args := []string{"restore", "--input", input, img}
				if force {
					args = []string{"restore", "--force", "--input", input, img}
				}
				_, stderr, code := pz(t, nil, args...)
				if code != 2 || !strings.Contains(stderr, "mounted read-only on "+dir) {
					t.Errorf("prezero %q onto a served file: exit %d\n%s", args, code, stderr)
				}
			}
			if imgtest.SHA256File(t, img) != hash {
				t.Fatal("the served file was overwritten")
			}
		})
	}
}

// Mount points whose names the kernel escapes in the mount table (space,
// tab, newline, backslash) or that are not ASCII: prezero finds its mount
// there (a second mount is refused, umount works) and so does the watchdog
// of a killed server.
func TestMountPointNames(t *testing.T) {
	img := gptImage(t)
	// One name holds every escaped byte at once: each must be decoded.
	for _, name := range []string{"a b\tc\nd\\e ünï", `lit\040eral`} {
		t.Run(strings.NewReplacer("\t", "TAB", "\n", "NL").Replace(name), func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), name)
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			mountBG(t, img, dir)
			if got := mountedAt(t, dir); got != "fuse.prezero" {
				t.Fatalf("mount table shows %q on %q", got, dir)
			}
			if _, e, code := pz(t, nil, "mount", img, dir); code != 2 || !strings.Contains(e, "already a prezero mount") {
				t.Errorf("second mount on %q: exit %d\n%s", dir, code, e)
			}
			if _, e, code := pz(t, nil, "umount", dir); code != 0 || mountedAt(t, dir) != "" {
				t.Fatalf("umount %q: exit %d\n%s", dir, code, e)
			}
			eventually(t, "the server exits after umount", func() bool { return len(serverPIDs(dir)) == 0 })

			mountBG(t, img, dir)
			pids := serverPIDs(dir)
			if len(pids) != 1 {
				t.Fatalf("servers of %q: %v", dir, pids)
			}
			freeConnection(t, dir, mountDev(t, dir))
			syscall.Kill(pids[0], syscall.SIGKILL)
			killed := time.Now()
			for mountedAt(t, dir) != "" {
				if time.Since(killed) > goneWithin {
					t.Fatalf("%q is still mounted %v after its server was killed", dir, goneWithin)
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
}

// A loop device over the restore target's device node (losetup -o 1M
// --sizelimit over /dev/loopN), mounted: the restore is refused, --force
// or not, and the source side refuses it too while it is mounted
// read-write.
func TestStackedLoopRefused(t *testing.T) {
	imgtest.Need(t, "mkfs.ext4", "mount", "umount")
	target := filepath.Join(t.TempDir(), "target.img")
	imgtest.RandomFile(t, target, 24<<20)
	lower := loopDev(t, target)
	upper := loopDev(t, lower, "-o", "1M", "--sizelimit", "16M")
	imgtest.Run(t, "mkfs.ext4", "-q", "-F", "-E", "nodiscard", upper)
	mnt := t.TempDir()
	imgtest.Run(t, "mount", upper, mnt)
	t.Cleanup(func() { imgtest.Output("umount", mnt) })
	hash := imgtest.SHA256File(t, target)

	input := filepath.Join(t.TempDir(), "x.img")
	imgtest.RandomFile(t, input, 24<<20)
	for _, args := range [][]string{
		{"restore", "--input", input, lower},
		{"restore", "--force", "--input", input, lower},
		{"restore", "--force", "--input", input, target},
	} {
		_, stderr, code := pz(t, nil, args...)
		if code != 2 || !strings.Contains(stderr, upper+" (a loop device over "+lower+") is mounted read-write on "+mnt) {
			t.Errorf("prezero %q: exit %d\n%s", args, code, stderr)
		}
	}
	if imgtest.SHA256File(t, target) != hash {
		t.Fatal("the target under the mounted loop device was written")
	}
	dir := t.TempDir()
	for _, args := range [][]string{{"cat", lower, "header"}, {"mount", lower, dir}, {"cat", target}} {
		out, stderr, code := pz(t, nil, args...)
		if code != 2 || !strings.Contains(stderr, "is mounted read-write on "+mnt) || len(out) != 0 {
			t.Errorf("prezero %q of a source with a loop device over it mounted rw: exit %d, %d bytes\n%s", args, code, len(out), stderr)
		}
	}
	if mountedAt(t, dir) != "" {
		t.Error("refused, yet mounted")
	}
}

// A second loop device over a file that ntfs-3g has mounted read-write
// through a first one: reading it is refused (the bytes under it change).
func TestSecondLoopOverNTFSRefused(t *testing.T) {
	img := filepath.Join(t.TempDir(), "ntfs.img")
	imgtest.MakeNTFS(t, img, 16<<20, 0, 0)
	first := loopDev(t, img)
	mnt := t.TempDir()
	imgtest.MountNTFS(t, first, mnt, false)
	second := loopDev(t, img)
	dir := t.TempDir()
	for _, args := range [][]string{{"cat", second, "header"}, {"mount", second, dir}, {"backup", second, filepath.Join(t.TempDir(), "repo") + "::a"}} {
		_, stderr, code := pz(t, nil, args...)
		if code != 2 || !strings.Contains(stderr, first+" (over the same file "+img+") is mounted read-write on "+mnt) {
			t.Errorf("prezero %q: exit %d\n%s", args, code, stderr)
		}
	}
	if mountedAt(t, dir) != "" {
		t.Error("refused, yet mounted")
	}
}

// mountDev returns the device number (MAJ:MIN) of the mount on dir.
func mountDev(t *testing.T, dir string) string {
	t.Helper()
	ms, err := mounttab.Read(mounttab.Path)
	if err != nil {
		t.Fatal(err)
	}
	m, ok := mounttab.Top(ms, dir)
	if !ok {
		t.Fatalf("%s is not mounted", dir)
	}
	return m.Dev
}

// freeConnection is a cleanup for tests that kill a server: it aborts the
// FUSE connection dev through fusectl (mounting it if needed), so that a
// process still blocked on it is freed, and detaches a mount of it still
// on dir.
func freeConnection(t *testing.T, dir, dev string) {
	t.Helper()
	t.Cleanup(func() {
		const ctl = "/sys/fs/fuse/connections"
		ms, _ := mounttab.Read(mounttab.Path)
		if _, ok := mounttab.Top(ms, ctl); !ok {
			syscall.Mount("fusectl", ctl, "fusectl", 0, "")
		}
		_, minor, _ := strings.Cut(dev, ":")
		os.WriteFile(filepath.Join(ctl, minor, "abort"), []byte("1"), 0)
		if m, ok := mounttab.Top(ms, dir); ok && m.Dev == dev {
			syscall.Unmount(dir, syscall.MNT_DETACH)
		}
	})
}

// goneWithin bounds how long a killed server's mount may outlive it. The
// watchdog removes it at once on an idle machine (well under a second); the
// bound allows for two cores shared by parallel test packages. A mount that
// hangs never goes away.
const goneWithin = 30 * time.Second

// holdsFUSE reports whether process pid has /dev/fuse open.
func holdsFUSE(pid int) bool { return hasOpen(pid, "/dev/fuse") }

// hasOpen reports whether process pid has the file at path open.
func hasOpen(pid int, path string) bool {
	fds, _ := filepath.Glob(fmt.Sprintf("/proc/%d/fd/*", pid))
	for _, fd := range fds {
		if l, _ := os.Readlink(fd); l == path {
			return true
		}
	}
	return false
}

func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// A zombie has exited; its parent has not reaped it yet.
	_, rest, _ := strings.Cut(string(b), ") ")
	return !strings.HasPrefix(rest, "Z")
}

// pidsWith returns the processes whose command line holds all of words.
func pidsWith(words ...string) []int {
	var pids []int
	cmdlines, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range cmdlines {
		b, _ := os.ReadFile(p)
		s := string(b)
		ok := len(s) > 0
		for _, w := range words {
			ok = ok && strings.Contains(s, w)
		}
		var pid int
		if _, err := fmt.Sscanf(p, "/proc/%d/cmdline", &pid); ok && err == nil && pid != os.Getpid() {
			pids = append(pids, pid)
		}
	}
	return pids
}

// SIGKILL of prezero backup while borg runs in its mount: borg does not
// hold the FUSE descriptor, so it fails instead of hanging; the mount and
// the temporary mount point are gone within seconds.
func TestBackupKilled(t *testing.T) {
	img := gptImage(t)
	b, repo, env := borgRepo(t, "borg")
	// borg create waits for the repository lock inside the mount: prezero
	// is killed while borg is surely there.
	holder := exec.Command(b.Path, "with-lock", repo, "sleep", "120")
	holder.Env = append(os.Environ(), env...)
	holder.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	unlock := func() {
		syscall.Kill(-holder.Process.Pid, syscall.SIGKILL) // borg and its sleep
		holder.Wait()
	}
	t.Cleanup(unlock)
	eventually(t, "the repository locked", func() bool {
		m, _ := filepath.Glob(filepath.Join(repo, "lock.exclusive", "*"))
		return len(m) > 0
	})

	// A TMPDIR whose name the mount table escapes: the watchdog finds the
	// mount there all the same.
	tmp := filepath.Join(t.TempDir(), "tmp dir ü")
	if err := os.Mkdir(tmp, 0o700); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(prezeroBin(t), "backup", img, repo+"::killed", "--", "--lock-wait", "120")
	cmd.Env = append(append(os.Environ(), env...), "TMPDIR="+tmp)
	// A file, not a pipe: borg inherits it, and Wait would wait for borg.
	logPath := filepath.Join(t.TempDir(), "stderr")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	cmd.Stderr = logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	var dir string
	eventually(t, "the mount", func() bool {
		m, _ := filepath.Glob(filepath.Join(tmp, "prezero-backup-*"))
		if len(m) == 1 && mountedAt(t, m[0]) == "fuse.prezero" {
			dir = m[0]
		}
		return dir != ""
	})
	freeConnection(t, dir, mountDev(t, dir))
	var borgPID int
	eventually(t, "borg create in the mount", func() bool {
		for _, pid := range pidsWith("create", repo+"::killed") {
			if cwd, _ := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid)); cwd == dir {
				borgPID = pid
			}
		}
		return borgPID != 0
	})
	t.Cleanup(func() { syscall.Kill(borgPID, syscall.SIGKILL) })
	if holdsFUSE(borgPID) {
		t.Error("borg inherited prezero's /dev/fuse descriptor")
	}

	cmd.Process.Kill()
	cmd.Wait()
	// The watchdog removes the mount and the temporary mount point: at
	// once on an idle machine; the deadline allows for a loaded one.
	killed := time.Now()
	for {
		left, _ := filepath.Glob(filepath.Join(tmp, "prezero-backup-*"))
		if len(left) == 0 && len(mountsUnder(t, tmp)) == 0 {
			break
		}
		if time.Since(killed) > goneWithin {
			t.Fatalf("%v after prezero was killed: mounts %v, left in TMPDIR %v", goneWithin, mountsUnder(t, tmp), left)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("mount and mount point gone %v after prezero was killed", time.Since(killed).Round(time.Millisecond))
	// borg goes on, once it has the lock (it polls for it), and fails at
	// once instead of hanging.
	unlock()
	deadline := time.Now().Add(60 * time.Second)
	for alive(borgPID) {
		if time.Now().After(deadline) {
			stack, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stack", borgPID))
			t.Fatalf("borg still runs 60 s after the lock was released (kernel stack %q)\n%s", stack, readFile(t, logPath))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if log := string(readFile(t, logPath)); !strings.Contains(log, "Transport endpoint is not connected") {
		t.Errorf("borg did not fail on the dead mount:\n%s", log)
	}
}

// borg, started by prezero backup inside its mount, holds no /dev/fuse
// descriptor: neither as root (mount(2)) nor as a user, whose descriptor
// fusermount3 passes over a socket. A stand-in borg lists its descriptors.
func TestBorgInheritsNoFUSE(t *testing.T) {
	imgtest.Need(t, "fusermount3")
	openDevFuse(t)
	pub := publicDir(t)
	img := filepath.Join(pub, "ext.img")
	smallExt(t, img)
	os.Chmod(img, 0o644)
	bin := filepath.Join(pub, "prezero")
	imgtest.CopyFile(t, bin, prezeroBin(t))
	os.Chmod(bin, 0o755)
	fake := filepath.Join(pub, "borg")
	writeFile(t, fake, []byte(`#!/bin/sh
if [ "$1" = --version ]; then echo "borg 1.2.4"; exit 0; fi
{ echo "files: $(ls | tr '\n' ' ')"; for fd in /proc/$$/fd/*; do echo "fd: $(readlink "$fd")"; done; } >"$FAKE_BORG_LOG"
`))
	os.Chmod(fake, 0o755)
	for _, user := range []string{"root", "nobody"} {
		t.Run(user, func(t *testing.T) {
			tmp := filepath.Join(pub, "tmp-"+user)
			os.Mkdir(tmp, 0o777)
			os.Chmod(tmp, 0o777)
			log := filepath.Join(tmp, "log")
			cmd := exec.Command(bin, "backup", "--borg", fake, img, "repo::a")
			cmd.Env = append(os.Environ(), "TMPDIR="+tmp, "FAKE_BORG_LOG="+log)
			if user == "nobody" {
				cmd.SysProcAttr = as(65534, 65534)
			}
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("backup as %s: %v\n%s", user, err, out)
			}
			text := string(readFile(t, log))
			if !strings.Contains(text, "files: disk.img header.img part1.img") {
				t.Fatalf("the stand-in borg did not run in the mount:\n%s", text)
			}
			if strings.Contains(text, "fd: /dev/fuse") {
				t.Errorf("borg inherited the FUSE descriptor as %s:\n%s", user, text)
			}
			if m := mountsUnder(t, tmp); len(m) > 0 {
				t.Errorf("mounts left behind: %v", m)
			}
		})
	}
}

// SIGKILL of a background mount server, with a file open on the mount
// and a process's working directory in it: the mount is gone within
// seconds and that process is not left hanging.
func TestMountServerKilled(t *testing.T) {
	img := gptImage(t)
	for _, foreground := range []bool{false, true} {
		t.Run(map[bool]string{false: "background", true: "foreground"}[foreground], func(t *testing.T) {
			dir := t.TempDir()
			var server int
			if foreground {
				cmd := exec.Command(prezeroBin(t), "mount", "-f", img, dir)
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
				eventually(t, "the mount", func() bool { return mountedAt(t, dir) == "fuse.prezero" })
				server = cmd.Process.Pid
			} else {
				mountBG(t, img, dir)
				pids := serverPIDs(dir)
				if len(pids) != 1 {
					t.Fatalf("servers of %s: %v", dir, pids)
				}
				server = pids[0]
			}
			freeConnection(t, dir, mountDev(t, dir))
			user := exec.Command("sh", "-c", "exec 3<disk.img; exec sleep 120")
			user.Dir = dir
			if err := user.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { user.Process.Kill(); user.Wait() })
			eventually(t, "a process with disk.img open", func() bool { return hasOpen(user.Process.Pid, filepath.Join(dir, "disk.img")) })
			syscall.Kill(server, syscall.SIGKILL)
			killed := time.Now()
			for mountedAt(t, dir) != "" {
				if time.Since(killed) > goneWithin {
					stat, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", server))
					t.Fatalf("%s is still mounted %v after its server was killed (server: %q)", dir, goneWithin, stat)
				}
				time.Sleep(20 * time.Millisecond)
			}
			t.Logf("unmounted %v after the server was killed", time.Since(killed).Round(time.Millisecond))
			var err error
			done := make(chan struct{})
			go func() {
				_, err = os.ReadDir(fmt.Sprintf("/proc/%d/cwd", user.Process.Pid))
				close(done)
			}()
			select {
			case <-done:
				if err == nil {
					t.Error("the dead mount still reads")
				}
			case <-time.After(goneWithin):
				t.Fatal("a process in the dead mount hangs")
			}
			if _, err := os.Stat(dir); err != nil {
				t.Errorf("the mount point: %v", err)
			}
		})
	}
}

// A mount point that is not empty, or already a prezero mount, is refused;
// --nonempty allows the first.
func TestMountPointChecks(t *testing.T) {
	img := gptImage(t)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "mine.txt"), []byte("x"))
	_, stderr, code := pz(t, nil, "mount", img, dir)
	if code != 2 || !strings.Contains(stderr, "is not empty") || !strings.Contains(stderr, "--nonempty") {
		t.Errorf("mount on a non-empty directory: exit %d\n%s", code, stderr)
	}
	if mountedAt(t, dir) != "" {
		t.Fatal("refused, yet mounted")
	}
	mountBG(t, img, dir, "--nonempty")
	if _, err := os.Stat(filepath.Join(dir, "disk.img")); err != nil {
		t.Fatalf("--nonempty mount: %v", err)
	}
	for _, flags := range [][]string{nil, {"--nonempty"}, {"--foreground"}} {
		_, stderr, code := pz(t, nil, append(append([]string{"mount"}, flags...), img, dir)...)
		if code != 2 || !strings.Contains(stderr, "already a prezero mount") || !strings.Contains(stderr, "prezero umount") {
			t.Errorf("mount %v on a prezero mount: exit %d\n%s", flags, code, stderr)
		}
	}
	if ms := mountsUnder(t, dir); len(ms) != 1 {
		t.Errorf("mounts on %s: %v, want one", dir, ms)
	}
}

// A fusermount3 failure (a user who cannot open /dev/fuse) is one line
// with the helper's real exit code and the ways to fix it. /dev/fuse is
// made 0600 in a private mount namespace, so that other tests' chmod
// cannot interfere.
func TestFusermountFailure(t *testing.T) {
	// A wait status taken for an exit code reads 256 (1<<8). Matched as a
	// code, not anywhere: the random temporary path may hold "256".
	badCode := regexp.MustCompile(`(code|status) 256\b`)
	imgtest.NeedRoot(t)
	imgtest.Need(t, "unshare", "setpriv", "mknod", "fusermount3")
	pub := publicDir(t)
	img := filepath.Join(pub, "disk.img")
	smallExt(t, img)
	os.Chmod(img, 0o644)
	dir := filepath.Join(pub, "mnt")
	os.Mkdir(dir, 0o755)
	os.Chown(dir, 65534, 65534)
	bin := filepath.Join(pub, "prezero")
	imgtest.CopyFile(t, bin, prezeroBin(t))
	os.Chmod(bin, 0o755)
	node := filepath.Join(t.TempDir(), "node")
	os.Mkdir(node, 0o700)
	for _, foreground := range []bool{false, true} {
		args := []string{"mount", img, dir}
		if foreground {
			args = []string{"mount", "-f", img, dir}
		}
		script := `mount -t tmpfs tmpfs "$1" && mknod -m 0600 "$1/fuse" c 10 229 && mount --bind "$1/fuse" /dev/fuse && shift && exec setpriv --reuid 65534 --regid 65534 --clear-groups "$@"`
		cmd := exec.Command("unshare", append([]string{"--mount", "--propagation", "private", "sh", "-c", script, "sh", node, bin}, args...)...)
		var stdout, stderr strings.Builder
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 {
			t.Fatalf("%q: %v, want exit 2\n%s%s", args, err, stdout.String(), stderr.String())
		}
		msg := stderr.String()
		if strings.Count(msg, "\n") != 1 || !strings.Contains(msg, "fusermount3 exited with code 1") || badCode.MatchString(msg) ||
			!strings.Contains(msg, "chmod 0666 /dev/fuse") || !strings.Contains(msg, "udev rule") || !strings.Contains(msg, "as root") {
			t.Errorf("%q: message is not one line with the exit code and the fix:\n%s", args, msg)
		}
		if mountedAt(t, dir) != "" {
			t.Fatal("mounted anyway")
		}
	}
}

// cat of a source that changes while it is read stops with an error and
// writes nothing read after the change.
func TestCatSourceChanges(t *testing.T) {
	img := filepath.Join(t.TempDir(), "disk.img")
	imgtest.CopyFile(t, img, gptImage(t))
	fi, err := os.Stat(img)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(prezeroBin(t), "cat", img)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReaderSize(out, 1<<20)
	if _, err := r.Peek(1); err != nil {
		t.Fatal(err)
	}
	// cat has written into the pipe and waits for room: change the source.
	w, err := os.OpenFile(img, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteAt([]byte("changed"), fi.Size()-4096); err != nil {
		t.Fatal(err)
	}
	w.Close()
	n, _ := io.Copy(io.Discard, r)
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 {
		t.Fatalf("cat of a changing source: %v, want exit 2\n%s", err, stderr.String())
	}
	if n >= fi.Size() || !strings.Contains(stderr.String(), "changed") || !strings.Contains(stderr.String(), "incomplete") {
		t.Errorf("cat wrote %d of %d bytes; stderr:\n%s", n, fi.Size(), stderr.String())
	}
}
