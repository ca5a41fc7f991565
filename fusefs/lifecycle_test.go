package fusefs

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prezero/prezero/freemap"
	"github.com/prezero/prezero/internal/mounttab"
	"github.com/prezero/prezero/stream"
)

// The tests below run a server in a child process (this test binary again,
// in helper mode: see TestMain) so that they can kill it.
const helperEnv = "FUSEFS_TEST_SERVE"

func TestMain(m *testing.M) {
	if dir := os.Getenv(helperEnv); dir != "" {
		os.Exit(helperServe(dir, os.Getenv("FUSEFS_TEST_RMDIR") == "1"))
	}
	os.Exit(m.Run())
}

// helperServe mounts a small image on dir, starts a child that stands for
// borg (its working directory in the mount, a file open on it), prints
// "ready PID" and serves until killed.
func helperServe(dir string, rmdir bool) int {
	data := make([]byte, 4<<20)
	for i := range data {
		data[i] = byte(i * 7)
	}
	r := stream.New(strings.NewReader(string(data)), int64(len(data)), freemap.NewBuilder(int64(len(data))).Map())
	srv, err := Mount(dir, []File{{Name: "disk.img", Stream: r}}, Options{RemoveDir: rmdir, FsName: "helper"})
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	child := exec.Command("sh", "-c", "exec 3<disk.img; exec sleep 600")
	child.Dir = srv.Dir()
	if err := child.Start(); err != nil {
		fmt.Println("error", err)
		return 1
	}
	fmt.Println("ready", child.Process.Pid)
	select {}
}

// killedServer starts a helper server on dir and returns its process, the
// pid of its child and the FUSE connection's device number. Cleanup frees
// whatever a failing test leaves: it aborts the connection (so that nothing
// hangs), unmounts it if it is still on dir, and kills both processes.
func killedServer(t *testing.T, dir string, rmdir bool) (server *os.Process, child int, dev string) {
	t.Helper()
	needFUSE(t)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+dir)
	if rmdir {
		cmd.Env = append(cmd.Env, "FUSEFS_TEST_RMDIR=1")
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, _ := bufio.NewReader(out).ReadString('\n')
	pid, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "ready ")))
	if err != nil {
		t.Fatalf("helper server: %q", line)
	}
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
	// The child opens the file after it is started: wait for it, so that
	// a kill finds the file open.
	waitUntil(t, "the helper's child opening disk.img", func() bool { return hasOpen(pid, "disk.img") })
	m, ok := topMount(t, dir)
	if !ok || m.FSType != FSType {
		t.Fatalf("helper server: %s is not mounted: %+v", dir, m)
	}
	dev = m.Dev
	t.Cleanup(func() {
		abortConnection(t, dev)
		if m, ok := topMount(t, dir); ok && m.Dev == dev {
			syscall.Unmount(dir, syscall.MNT_DETACH)
		}
	})
	return cmd.Process, pid, dev
}

func topMount(t *testing.T, dir string) (mounttab.Mount, bool) {
	t.Helper()
	ms, err := mounttab.Read(mounttab.Path)
	if err != nil {
		t.Fatal(err)
	}
	return mounttab.Top(ms, dir)
}

// abortConnection aborts the FUSE connection dev (MAJ:MIN) through fusectl,
// mounting fusectl if needed (root only): a process blocked on a server
// that is gone is then freed.
func abortConnection(t *testing.T, dev string) {
	t.Helper()
	const ctl = "/sys/fs/fuse/connections"
	if _, ok := topMount(t, ctl); !ok && os.Geteuid() == 0 {
		if err := syscall.Mount("fusectl", ctl, "fusectl", 0, ""); err != nil {
			t.Logf("mounting fusectl: %v", err)
		}
	}
	_, minor, _ := strings.Cut(dev, ":")
	if f, err := os.OpenFile(filepath.Join(ctl, minor, "abort"), os.O_WRONLY, 0); err == nil {
		f.WriteString("1")
		f.Close()
	}
}

// fuseFDs returns the descriptors of process pid open on /dev/fuse.
func fuseFDs(t *testing.T, pid int) []string {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if l, _ := os.Readlink(filepath.Join(dir, e.Name())); l == "/dev/fuse" {
			out = append(out, e.Name())
		}
	}
	return out
}

// settle bounds waits for what takes well under a second on an idle
// machine: a watchdog's shell and awk, a helper process starting. The test
// packages run in parallel on two cores.
const settle = time.Minute

// waitUntil polls cond until it holds, for up to settle.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(settle); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting: %s", settle, what)
		}
	}
}

// hasOpen reports whether process pid has a file named name open.
func hasOpen(pid int, name string) bool {
	fds, _ := filepath.Glob(fmt.Sprintf("/proc/%d/fd/*", pid))
	for _, fd := range fds {
		if l, _ := os.Readlink(fd); filepath.Base(l) == name {
			return true
		}
	}
	return false
}

// within runs f and reports whether it returned within d (f may go on
// running in the background).
func within(d time.Duration, f func()) bool {
	done := make(chan struct{})
	go func() { f(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

// No child of the server holds the FUSE descriptor: the server holds it
// once.
func TestMountDescriptorNotInherited(t *testing.T) {
	dir := t.TempDir()
	server, child, _ := killedServer(t, dir, false)
	if fds := fuseFDs(t, child); len(fds) != 0 {
		t.Errorf("the server's child holds /dev/fuse as descriptors %v", fds)
	}
	if fds := fuseFDs(t, server.Pid); len(fds) != 1 {
		t.Errorf("the server holds /dev/fuse as descriptors %v, want one", fds)
	}
}

// SIGKILL of the server: the mount goes away within seconds, although a
// child of the server still has its working directory and a file in it,
// and that child is not left hanging.
func TestMountGoneAfterServerKilled(t *testing.T) {
	for _, rmdir := range []bool{false, true} {
		t.Run(map[bool]string{false: "mount point kept", true: "temporary mount point removed"}[rmdir], func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "mnt")
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			server, child, dev := killedServer(t, dir, rmdir)
			server.Kill()
			killed := time.Now()
			deadline := killed.Add(settle)
			for {
				m, ok := topMount(t, dir)
				if !ok || m.Dev != dev {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s is still mounted %v after its server was killed", dir, settle)
				}
				time.Sleep(20 * time.Millisecond)
			}
			t.Logf("unmounted %v after the server was killed", time.Since(killed).Round(time.Millisecond))
			// The child's working directory is the detached mount: reading
			// it fails at once instead of waiting for a server that is gone.
			var err error
			if !within(settle, func() { _, err = os.ReadDir(fmt.Sprintf("/proc/%d/cwd", child)) }) {
				t.Fatal("the server's child hangs on the dead mount")
			}
			if err == nil {
				t.Error("reading the dead mount through the child's working directory succeeded")
			}
			for !rmdir || time.Now().Before(deadline) {
				_, err := os.Stat(dir)
				if rmdir && !errors.Is(err, os.ErrNotExist) {
					time.Sleep(20 * time.Millisecond)
					continue
				}
				if !rmdir && err != nil {
					t.Errorf("the mount point kept: %v", err)
				}
				break
			}
			if _, err := os.Stat(dir); rmdir && !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the temporary mount point is still there: %v", err)
			}
		})
	}
}

// A normal unmount disarms the watchdog: it exits, and it never touches a
// mount made on the directory afterwards.
func TestWatchdogDisarmed(t *testing.T) {
	needFUSE(t)
	s := newSynthetic(t, 4*align, 9)
	dir := t.TempDir()
	srv, err := Mount(dir, []File{{Name: "disk.img", Stream: s.stream()}}, Options{HoleAlign: align})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Unmount(); err != nil {
		t.Fatal(err)
	}
	if !within(settle, srv.Wait) {
		t.Fatal("Wait did not return after Unmount")
	}
	// A second mount by the same process on the same directory stays
	// after the first one's watchdog has exited.
	srv2, err := Mount(dir, []File{{Name: "disk.img", Stream: s.stream()}}, Options{HoleAlign: align})
	if err != nil {
		t.Fatal(err)
	}
	defer srv2.Unmount()
	if !within(settle, func() { <-srv.guard.exited }) {
		t.Fatal("the watchdog of a mount unmounted normally did not exit")
	}
	if m, ok := topMount(t, srv2.Dir()); !ok || m.FSType != FSType {
		t.Fatalf("the second mount is gone: %+v", m)
	}
	if err := srv.Unmount(); err != nil {
		t.Errorf("Unmount of a server already unmounted: %v", err)
	}
	if m, ok := topMount(t, srv2.Dir()); !ok || m.FSType != FSType {
		t.Fatalf("Unmount of the first server removed the second mount: %+v", m)
	}
}

// Unmount of a directory that is no mount says so; a busy mount's error
// matches EBUSY.
func TestUnmountErrors(t *testing.T) {
	needFUSE(t)
	dir := t.TempDir()
	if err := Unmount(dir, false); err == nil {
		t.Error("Unmount of a plain directory: no error")
	}
	s := newSynthetic(t, 4*align, 10)
	srv, err := Mount(dir, []File{{Name: "disk.img", Stream: s.stream()}}, Options{HoleAlign: align})
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(dir, "disk.img"))
	if err != nil {
		t.Fatal(err)
	}
	if err := Unmount(dir, false); !errors.Is(err, syscall.EBUSY) {
		t.Errorf("Unmount with a file open: %v, want EBUSY", err)
	}
	if err := srv.Unmount(); err != nil {
		t.Errorf("Server.Unmount with a file open (lazy): %v", err)
	}
	if _, ok := topMount(t, srv.Dir()); ok {
		t.Error("still mounted after a lazy unmount")
	}
	f.Close()
	if !within(settle, srv.Wait) {
		t.Error("serving did not end when the last file was closed")
	}
}

// The mount's source is the FsName given, byte for byte, whatever it holds.
func TestMountFsNameVerbatim(t *testing.T) {
	needFUSE(t)
	s := newSynthetic(t, 4*align, 11)
	for _, name := range []string{"/t/a b.img", "/t/tab\there.img", "/t/comma,and\\backslash.img", "/t/ünïcödé.img"} {
		dir := t.TempDir()
		srv, err := Mount(dir, []File{{Name: "disk.img", Stream: s.stream()}}, Options{HoleAlign: align, FsName: name})
		if err != nil {
			t.Fatalf("FsName %q: %v", name, err)
		}
		if m, ok := topMount(t, srv.Dir()); !ok || m.Source != name || m.FSType != FSType {
			t.Errorf("FsName %q: mount table shows %+v", name, m)
		}
		if err := srv.Unmount(); err != nil {
			t.Fatal(err)
		}
	}
}

// A server killed between mount(2) and telling the watchdog the mount's
// device number: the watchdog knows the mount by its type and source, and
// leaves any other mount alone.
func TestWatchdogBeforeArmed(t *testing.T) {
	needFUSE(t)
	s := newSynthetic(t, 4*align, 12)
	dir := t.TempDir()
	srv, err := Mount(dir, []File{{Name: "disk.img", Stream: s.stream()}}, Options{HoleAlign: align, FsName: "/src/a b.img"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Unmount() })
	gone := func(g *watchdog) bool {
		g.mounting()
		g.w.Close() // the server dies: no "dev=", no "done"
		if !within(settle, func() { <-g.exited }) {
			t.Fatal("the watchdog did not exit when its pipe ended")
		}
		_, mounted := topMount(t, srv.Dir())
		return !mounted
	}
	other, err := startWatchdog(srv.Dir(), "/src/other.img", false)
	if err != nil {
		t.Fatal(err)
	}
	if gone(other) {
		t.Fatal("a watchdog unmounted a mount with another source")
	}
	same, err := startWatchdog(srv.Dir(), "/src/a b.img", false)
	if err != nil {
		t.Fatal(err)
	}
	if !gone(same) {
		t.Fatal("the watchdog left the mount of a server killed before arming it")
	}
	if !within(settle, srv.Wait) {
		t.Error("serving did not end")
	}
}
