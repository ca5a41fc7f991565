package main

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prezero/prezero/freemap"
	"github.com/prezero/prezero/internal/imgtest"
	"github.com/prezero/prezero/internal/source"
)

// mountBG runs "prezero mount" (background) and registers an unmount.
func mountBG(t *testing.T, img, dir string, flags ...string) {
	t.Helper()
	_, stderr, code := pz(t, nil, append(append([]string{"mount"}, flags...), img, dir)...)
	if code != 0 {
		t.Fatalf("prezero mount: exit %d\n%s", code, stderr)
	}
	t.Cleanup(func() {
		if mountedAt(t, dir) != "" {
			pz(t, nil, "umount", "--lazy", dir)
		}
	})
}

func TestMountServesStreams(t *testing.T) {
	img := gptImage(t)
	dir := t.TempDir()
	mountBG(t, img, dir)
	if got := mountedAt(t, dir); got != "fuse.prezero" {
		t.Fatalf("mountinfo shows %q on %s, want fuse.prezero", got, dir)
	}
	src, err := source.Open(img, source.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()

	names := []string{"disk.img", "header.img"}
	what := map[string]string{"disk.img": "disk", "header.img": "header"}
	for _, p := range src.Files() {
		n := "part" + strconv.Itoa(p.Number) + ".img"
		names = append(names, n)
		what[n] = strconv.Itoa(p.Number)
	}
	if len(names) != 5 {
		t.Fatalf("fixture has %d streams, want disk, header and 3 partitions", len(names))
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	if strings.Join(got, " ") != "disk.img header.img part1.img part2.img part3.img" {
		t.Fatalf("mount lists %v", got)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil || st.Mode != syscall.S_IFDIR|0o555 {
		t.Errorf("mount root: mode %o, %v; want dir 0555", st.Mode, err)
	}
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			want := catFile(t, img, what[name])
			path := filepath.Join(dir, name)
			if err := syscall.Stat(path, &st); err != nil {
				t.Fatal(err)
			}
			wfi, _ := os.Stat(want)
			if st.Mode != syscall.S_IFREG|0o444 || st.Size != wfi.Size() {
				t.Fatalf("mode %o size %d, want file 0444 of %d bytes", st.Mode, st.Size, wfi.Size())
			}
			if st.Mtim != st.Ctim || time.Since(time.Unix(st.Mtim.Unix())) > time.Hour {
				t.Errorf("mtime %v ctime %v: want both the mount's start", st.Mtim, st.Ctim)
			}
			if a, b := imgtest.SHA256File(t, path), imgtest.SHA256File(t, want); a != b {
				t.Fatalf("%s differs from prezero cat %s", name, what[name])
			}
		})
	}

	// SEEK_DATA/SEEK_HOLE follow the map at the 4 MiB alignment.
	for _, p := range src.Files() {
		checkHoles(t, filepath.Join(dir, "part"+strconv.Itoa(p.Number)+".img"), p.Free.Aligned(4<<20))
	}
	checkHoles(t, filepath.Join(dir, "disk.img"), src.Disk().Free().Aligned(4<<20))
	if len(src.Files()[0].Free.Aligned(4<<20).Extents()) == 0 || len(src.Files()[1].Free.Aligned(4<<20).Extents()) == 0 {
		t.Error("the ext4 and NTFS partitions should have 4 MiB holes")
	}

	t.Run("concurrent readers", func(t *testing.T) {
		want := map[string][]byte{}
		for _, n := range []string{"disk.img", "part1.img", "part2.img"} {
			want[n] = readFile(t, catFile(t, img, what[n]))
		}
		var wg sync.WaitGroup
		errs := make(chan error, 16)
		for g := range 6 {
			wg.Go(func() {
				name := []string{"disk.img", "part1.img", "part2.img"}[g%3]
				f, err := os.Open(filepath.Join(dir, name))
				if err != nil {
					errs <- err
					return
				}
				defer f.Close()
				rng := rand.New(rand.NewPCG(uint64(g), 1))
				buf := make([]byte, 3<<20)
				w := want[name]
				for range 60 {
					off := rng.Int64N(int64(len(w)))
					n, err := f.ReadAt(buf[:rng.IntN(len(buf))+1], off)
					if err != nil && err != io.EOF {
						errs <- err
						return
					}
					if !bytes.Equal(buf[:n], w[off:off+int64(n)]) {
						errs <- errors.New(name + ": concurrent read returned wrong bytes")
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})

	// prezero umount ends the mount and its background server.
	if len(serverPIDs(dir)) != 1 {
		t.Errorf("want one background server for %s, found %v", dir, serverPIDs(dir))
	}
	if _, stderr, code := pz(t, nil, "umount", dir); code != 0 {
		t.Fatalf("prezero umount: exit %d\n%s", code, stderr)
	}
	if mountedAt(t, dir) != "" {
		t.Fatal("still mounted after prezero umount")
	}
	eventually(t, "the background server exits", func() bool { return len(serverPIDs(dir)) == 0 })
	if _, stderr, code := pz(t, nil, "umount", dir); code != 2 || !strings.Contains(stderr, "not mounted") {
		t.Errorf("second umount: exit %d, %s", code, stderr)
	}
}

// checkHoles walks path with SEEK_DATA/SEEK_HOLE and compares the data
// segments with the complement of holes.
func checkHoles(t *testing.T, path string, holes *freemap.Map) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	size := holes.Size()
	type seg struct{ a, b int64 }
	var want, got []seg
	off := int64(0)
	for _, e := range holes.Extents() {
		if e.Off > off {
			want = append(want, seg{off, e.Off})
		}
		off = e.End()
	}
	if off < size {
		want = append(want, seg{off, size})
	}
	for off := int64(0); off < size; {
		d, err := f.Seek(off, 3) // SEEK_DATA
		if errors.Is(err, syscall.ENXIO) {
			break
		} else if err != nil {
			t.Fatalf("%s: SEEK_DATA %d: %v", path, off, err)
		}
		h, err := f.Seek(d, 4) // SEEK_HOLE
		if err != nil {
			t.Fatalf("%s: SEEK_HOLE %d: %v", path, d, err)
		}
		got = append(got, seg{d, h})
		off = h
	}
	if _, err := f.Seek(size, 3); !errors.Is(err, syscall.ENXIO) {
		t.Errorf("%s: SEEK_DATA at EOF: %v, want ENXIO", path, err)
	}
	if len(got) != len(want) {
		t.Fatalf("%s: lseek finds data %v, the map at 4 MiB says %v", path, got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("%s: data segment %d is %v, want %v", path, i, got[i], want[i])
		}
	}
}

func TestMountHoleAlign(t *testing.T) {
	img := gptImage(t)
	dir := t.TempDir()
	mountBG(t, img, dir, "--hole-align", "1MiB")
	src, err := source.Open(img, source.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	p := src.Files()[0]
	fine, coarse := p.Free.Aligned(1<<20), p.Free.Aligned(4<<20)
	if fine.FreeBytes() <= coarse.FreeBytes() {
		t.Fatalf("fixture: 1 MiB holes (%d bytes) should exceed 4 MiB ones (%d)", fine.FreeBytes(), coarse.FreeBytes())
	}
	checkHoles(t, filepath.Join(dir, "part1.img"), fine)
	for _, bad := range []string{"0", "1000", "abc", "4X"} {
		if _, stderr, code := pz(t, nil, "mount", "--hole-align", bad, img, t.TempDir()); code != 2 {
			t.Errorf("--hole-align %s: exit %d, %s", bad, code, stderr)
		}
	}
}

func TestMountForegroundSignals(t *testing.T) {
	img := gptImage(t)
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			dir := t.TempDir()
			cmd := exec.Command(prezeroBin(t), "mount", "--foreground", img, dir)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			eventually(t, "the foreground mount", func() bool { return mountedAt(t, dir) == "fuse.prezero" })
			// A file kept open makes the plain unmount fail: it detaches.
			f, err := os.Open(filepath.Join(dir, "part1.img"))
			if err != nil {
				t.Fatal(err)
			}
			cmd.Process.Signal(sig)
			eventually(t, "unmount after "+sig.String(), func() bool { return mountedAt(t, dir) == "" })
			f.Close()
			if err := cmd.Wait(); err != nil {
				t.Fatalf("foreground mount after %v: %v\n%s", sig, err, stderr.String())
			}
		})
	}
	t.Run("fusermount3 -u", func(t *testing.T) {
		imgtest.Need(t, "fusermount3")
		dir := t.TempDir()
		cmd := exec.Command(prezeroBin(t), "mount", "-f", img, dir)
		var stderr lockedBuffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the foreground mount", func() bool { return mountedAt(t, dir) == "fuse.prezero" })
		// The mount shows in the table a moment before the server answers
		// (an unmount then makes the server fail to start serving): wait
		// for an answer. Then go-fuse's poll hack opens a file on it for
		// a moment: an unmount in that moment finds it busy.
		eventually(t, "the server answers", func() bool {
			_, err := os.Stat(filepath.Join(dir, "disk.img"))
			return err == nil
		})
		var out string
		var err error
		for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if out, err = imgtest.Output("fusermount3", "-u", dir); err == nil || !strings.Contains(out, "busy") {
				break
			}
		}
		if err != nil {
			cmd.Process.Kill()
			t.Fatalf("fusermount3 -u: %v\n%s", err, out)
		}
		if err := cmd.Wait(); err != nil {
			t.Fatalf("after fusermount3 -u: %v\n%s", err, stderr.String())
		}
	})
	t.Run("umount(8)", func(t *testing.T) {
		dir := t.TempDir()
		mountBG(t, img, dir)
		imgtest.Umount(t, dir)
		eventually(t, "the background server exits", func() bool { return len(serverPIDs(dir)) == 0 })
	})
}

func TestMountErrors(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	writeFile(t, file, []byte("x"))
	empty := t.TempDir()
	for _, c := range []struct {
		args []string
		msg  string
	}{
		{[]string{"mount", filepath.Join(dir, "missing.img"), empty}, "missing.img"}, // reported by the server
		{[]string{"mount", file, filepath.Join(dir, "nodir")}, "mount point"},
		{[]string{"mount", file, file}, "not a directory"},
		{[]string{"mount", file}, "expected SOURCE MOUNTPOINT"},
		{[]string{"umount", dir}, "not mounted"},
		{[]string{"umount", "/"}, "not prezero's"},
	} {
		_, stderr, code := pz(t, nil, c.args...)
		if code != 2 || !strings.Contains(stderr, c.msg) {
			t.Errorf("prezero %q: exit %d, %q; want exit 2 and %q", c.args, code, stderr, c.msg)
		}
	}
	if len(serverPIDs(dir)) != 0 || len(serverPIDs(empty)) != 0 {
		t.Error("a failed mount left a server running")
	}
}

// A normal user who can read the source mounts through fusermount3; other
// users (root included) cannot read the mount unless --allow-other.
func TestMountAsUser(t *testing.T) {
	imgtest.Need(t, "fusermount3")
	img := gptImage(t)
	openDevFuse(t)
	pub := publicDir(t)
	userImg := filepath.Join(pub, "disk.img")
	imgtest.CopyFile(t, userImg, img)
	os.Chmod(userImg, 0o644)
	dir := filepath.Join(pub, "mnt")
	os.Mkdir(dir, 0o755)
	const nobody = 65534
	os.Chown(dir, nobody, nobody)

	bin := filepath.Join(pub, "prezero")
	imgtest.CopyFile(t, bin, prezeroBin(t))
	os.Chmod(bin, 0o755)
	run := func(args ...string) (string, error) {
		cmd := exec.Command(bin, args...)
		cmd.SysProcAttr = as(nobody, nobody)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := run("mount", userImg, dir); err != nil {
		t.Fatalf("mount as nobody: %v\n%s", err, out)
	}
	t.Cleanup(func() { imgtest.Output("fusermount3", "-u", "-z", dir) })
	cmd := exec.Command("sha256sum", filepath.Join(dir, "part1.img"))
	cmd.SysProcAttr = as(nobody, nobody)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("reading the mount as nobody: %v", err)
	}
	if want := imgtest.SHA256File(t, catFile(t, img, "1")); !strings.HasPrefix(string(out), want) {
		t.Fatal("part1.img read as nobody differs from prezero cat")
	}
	if _, err := os.Stat(filepath.Join(dir, "disk.img")); !errors.Is(err, os.ErrPermission) {
		t.Errorf("root reading nobody's mount without --allow-other: %v, want permission denied", err)
	}
	if out, err := run("umount", dir); err != nil {
		t.Fatalf("umount as nobody: %v\n%s", err, out)
	}
	eventually(t, "the server exits", func() bool { return len(serverPIDs(dir)) == 0 })

	// --allow-other as root lets nobody read.
	rootDir := filepath.Join(pub, "rootmnt")
	os.Mkdir(rootDir, 0o755)
	mountBG(t, img, rootDir, "--allow-other")
	cmd = exec.Command("head", "-c", "4096", filepath.Join(rootDir, "disk.img"))
	cmd.SysProcAttr = as(nobody, nobody)
	if out, err := cmd.Output(); err != nil || len(out) != 4096 {
		t.Errorf("nobody reading root's --allow-other mount: %d bytes, %v", len(out), err)
	}
}

// lockedBuffer is a bytes.Buffer that a command's output may be copied
// into while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestMountSourceChanges(t *testing.T) {
	img := gptImage(t)
	for _, background := range []bool{false, true} {
		name := map[bool]string{false: "foreground, logs to stderr", true: "background, --log-file"}[background]
		t.Run(name, func(t *testing.T) {
			changing := filepath.Join(t.TempDir(), "disk.img")
			imgtest.CopyFile(t, changing, img)
			dir := t.TempDir()
			logFile := filepath.Join(t.TempDir(), "log")
			var stderr lockedBuffer
			if background {
				mountBG(t, changing, dir, "--log-file", logFile)
			} else {
				cmd := exec.Command(prezeroBin(t), "mount", "-f", changing, dir)
				cmd.Stderr = &stderr
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				defer func() {
					cmd.Process.Signal(syscall.SIGTERM)
					cmd.Wait()
				}()
				eventually(t, "the mount", func() bool { return mountedAt(t, dir) == "fuse.prezero" })
			}
			f, err := os.Open(filepath.Join(dir, "part1.img"))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			buf := make([]byte, 1<<20)
			if _, err := f.ReadAt(buf, 0); err != nil {
				t.Fatalf("read before the change: %v", err)
			}
			w, err := os.OpenFile(changing, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			w.WriteAt([]byte("changed"), rawStart+100)
			w.Close()
			if _, err := f.ReadAt(buf, 0); !errors.Is(err, syscall.EIO) {
				t.Fatalf("read after the source changed: %v, want EIO", err)
			}
			// The server logs before it answers EIO, but a foreground
			// server's stderr reaches the buffer through a pipe and a
			// goroutine of exec: give it a moment.
			log := func() string {
				if background {
					return string(readFile(t, logFile))
				}
				return stderr.String()
			}
			logged := func() bool {
				l := log()
				return strings.Contains(l, "source changed") && strings.Contains(l, changing)
			}
			for deadline := time.Now().Add(time.Minute); !logged() && time.Now().Before(deadline); {
				time.Sleep(20 * time.Millisecond)
			}
			if !logged() {
				t.Errorf("no error logged; log:\n%s", log())
			}
		})
	}
}

// A block device mounted read-write is refused; --force overrides.
func TestMountRefusesMountedDevice(t *testing.T) {
	imgtest.NeedRoot(t)
	imgtest.Need(t, "losetup", "mkfs.ext4", "mount", "umount")
	ext := filepath.Join(t.TempDir(), "ext.img")
	imgtest.RandomFile(t, ext, 32<<20)
	// No lazy inode-table init: the kernel's background zeroing would
	// write to the device while cat --force reads it, and cat's source
	// watch would rightly stop.
	imgtest.Run(t, "mkfs.ext4", "-q", "-F", "-E", "nodiscard,lazy_itable_init=0,lazy_journal_init=0", ext)
	dev := strings.TrimSpace(imgtest.Run(t, "losetup", "-f", "--show", ext))
	t.Cleanup(func() { imgtest.Detach(t, dev, ext) })
	fsDir := t.TempDir()
	imgtest.Run(t, "mount", "-o", "noinit_itable", dev, fsDir)
	t.Cleanup(func() { imgtest.Output("umount", fsDir) })

	dir := t.TempDir()
	_, stderr, code := pz(t, nil, "mount", dev, dir)
	if code != 2 || !strings.Contains(stderr, "mounted read-write on "+fsDir) || !strings.Contains(stderr, "snapshot") {
		t.Fatalf("mount of a device mounted rw: exit %d\n%s", code, stderr)
	}
	if mountedAt(t, dir) != "" {
		t.Fatal("refused, yet mounted")
	}
	for _, args := range [][]string{{"backup", dev, filepath.Join(t.TempDir(), "repo") + "::a"}, {"mount", ext, dir}, {"cat", dev}} {
		if _, stderr, code := pz(t, nil, args...); code != 2 || !strings.Contains(stderr, "read-write") {
			t.Errorf("prezero %q: exit %d\n%s", args, code, stderr)
		}
	}
	if _, stderr, code := pz(t, nil, "map", dev); code != 0 || !strings.Contains(stderr, "warning") || !strings.Contains(stderr, "read-write") {
		t.Errorf("map of a device mounted rw: exit %d, want 0 and a warning\n%s", code, stderr)
	}
	// A live filesystem may still write (a journal commit): cat's watch
	// then stops it, which is right; try again on a quiet moment.
	for try := 1; ; try++ {
		imgtest.Run(t, "sync", "-f", fsDir)
		out, stderr, code := pz(t, nil, "cat", "--force", dev, "header")
		if code == 0 && len(out) == 0 {
			break
		}
		if try == 5 || !strings.Contains(stderr, "source changed") {
			t.Errorf("cat --force: exit %d, %d bytes\n%s", code, len(out), stderr)
			break
		}
	}
	mountBG(t, dev, dir, "--force")
	if fi, err := os.Stat(filepath.Join(dir, "disk.img")); err != nil || fi.Size() != 32<<20 {
		t.Fatalf("--force mount: %v", err)
	}
}

// openDevFuse makes /dev/fuse usable by every user for the test, as udev's
// default rules do on a normal system (without udev, devtmpfs leaves it
// 0600 and fusermount3 cannot open it for a user).
func openDevFuse(t *testing.T) {
	t.Helper()
	fi, err := os.Stat("/dev/fuse")
	if err != nil {
		t.Fatal(err)
	}
	if mode := fi.Mode().Perm(); mode&0o006 != 0o006 {
		if err := os.Chmod("/dev/fuse", 0o666); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Chmod("/dev/fuse", mode) })
	}
}
