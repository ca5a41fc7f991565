package nbd

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"testing/iotest"
	"time"

	"github.com/prezero/prezero/internal/imgtest"
)

const mib = 1 << 20

// sparseImage writes a raw image of size bytes: random data in the
// ranges of data, zeros (a hole) elsewhere. It returns its content.
func sparseImage(t *testing.T, path string, size int64, data [][2]int64) []byte {
	t.Helper()
	want := make([]byte, size)
	for _, d := range data {
		rand.Read(want[d[0] : d[0]+d[1]])
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	for _, d := range data {
		if _, err := f.WriteAt(want[d[0]:d[0]+d[1]], d[0]); err != nil {
			t.Fatal(err)
		}
	}
	return want
}

// checkAll reads the whole export in several ways and compares.
func checkAll(t *testing.T, c *Client, want []byte) {
	t.Helper()
	if c.Size() != int64(len(want)) {
		t.Fatalf("size %d, want %d", c.Size(), len(want))
	}
	for _, bs := range []int{1<<20 + 7, 511} {
		got := make([]byte, len(want))
		if bs < 4096 { // small reads: the first 256 KiB only
			copy(got[256<<10:], want[256<<10:])
		}
		for off := 0; off < len(want) && (bs >= 4096 || off < 256<<10); off += bs {
			end := min(off+bs, len(want))
			n, err := c.ReadAt(got[off:end], int64(off))
			if n != end-off || (err != nil && err != io.EOF) {
				t.Fatalf("ReadAt(%d, %d) = %d, %v", end-off, off, n, err)
			}
		}
		if i := bytes.Compare(got, want); i != 0 {
			t.Fatalf("block size %d: content differs", bs)
		}
	}
	// Past the end, across the end, at odd offsets.
	p := make([]byte, 1000)
	n, err := c.ReadAt(p, int64(len(want))-300)
	if n != 300 || err != io.EOF || !bytes.Equal(p[:300], want[len(want)-300:]) {
		t.Fatalf("ReadAt across the end = %d, %v", n, err)
	}
	if n, err := c.ReadAt(p, int64(len(want))); n != 0 || err != io.EOF {
		t.Fatalf("ReadAt at the end = %d, %v", n, err)
	}
	if err := iotest.TestReader(io.NewSectionReader(c, 12345, 3000), want[12345:12345+3000]); err != nil {
		t.Fatal(err)
	}
}

func zeroMap(t *testing.T, c *Client) [][2]int64 {
	t.Helper()
	var out [][2]int64
	err := c.ZeroExtents(context.Background(), func(off, n int64) {
		if k := len(out); k > 0 && out[k-1][0]+out[k-1][1] == off {
			out[k-1][1] += n
			return
		}
		out = append(out, [2]int64{off, n})
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestQemuQcow2(t *testing.T) {
	imgtest.Need(t, "qemu-img", "qemu-nbd")
	dir := t.TempDir()
	raw := filepath.Join(dir, "disk.raw")
	size := int64(16 * mib)
	want := sparseImage(t, raw, size, [][2]int64{{0, 2 * mib}, {5 * mib, mib + 4096}, {14 * mib, 2 * mib}})
	for _, f := range []struct {
		format string
		args   []string
		zeros  bool // qemu reports its unallocated clusters (vhdx has no block status)
	}{
		{"qcow2", nil, true},
		{"qcow2", []string{"-c"}, true},
		{"vmdk", nil, true},
		{"vhdx", nil, false},
		{"vdi", nil, true},
	} {
		t.Run(f.format+strings.Join(f.args, ""), func(t *testing.T) {
			img := filepath.Join(dir, "disk."+f.format)
			imgtest.Run(t, "qemu-img", append(append([]string{"convert", "-O", f.format}, f.args...), raw, img)...)
			q, err := StartQemu(context.Background(), img, QemuOptions{Format: f.format})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { q.Close() })
			if _, err := os.Stat(q.dir); !os.IsNotExist(err) {
				t.Fatalf("socket directory %s still there once connected", q.dir)
			}
			pid := q.Pid()
			checkAll(t, q.Client, want)
			if !q.HasZeroInfo() {
				t.Fatal("qemu-nbd offered no base:allocation")
			}
			z := zeroMap(t, q.Client)
			// Every reported zero range must read as zeros; the big holes
			// of the raw image must be reported (at cluster granularity).
			var zeroBytes int64
			for _, e := range z {
				if !bytes.Equal(want[e[0]:e[0]+e[1]], make([]byte, e[1])) {
					t.Fatalf("range %v reported zero holds data", e)
				}
				zeroBytes += e[1]
			}
			if f.zeros && zeroBytes < 10*mib {
				t.Fatalf("only %d bytes reported zero of ~11 MiB of holes: %v", zeroBytes, z)
			}
			if err := q.Close(); err != nil {
				t.Fatal(err)
			}
			if err := syscall.Kill(pid, 0); err == nil {
				t.Fatalf("qemu-nbd %d still runs after Close", pid)
			}
			if _, err := os.Stat(q.dir); !os.IsNotExist(err) {
				t.Fatalf("socket directory %s left behind", q.dir)
			}
		})
	}
}

func TestQemuErrors(t *testing.T) {
	imgtest.Need(t, "qemu-img", "qemu-nbd")
	dir := t.TempDir()
	img := filepath.Join(dir, "bad.qcow2")
	imgtest.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", img, "16M")
	// cluster_bits (header byte 20) out of range.
	b := readFile(t, img)
	copy(b[20:24], []byte{0, 0, 0, 99})
	writeFile(t, img, b)
	start := time.Now()
	_, err := StartQemu(context.Background(), img, QemuOptions{Format: "qcow2"})
	if err == nil || !strings.Contains(err.Error(), "qemu-nbd") || !strings.Contains(err.Error(), img) {
		t.Fatalf("corrupt qcow2: err = %v", err)
	}
	if time.Since(start) > 10*time.Second {
		t.Fatalf("took %v", time.Since(start))
	}
	t.Logf("corrupt: %v", err)

	// A writer (as a running VM) holds the image's lock.
	good := filepath.Join(dir, "good.qcow2")
	imgtest.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", good, "16M")
	vm := exec.Command("qemu-nbd", "--persistent", "--socket="+filepath.Join(dir, "vm.sock"), "--format=qcow2", good)
	var vmErr bytes.Buffer
	vm.Stderr = &vmErr
	if err := vm.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { vm.Process.Kill(); vm.Wait() })
	// Wait until it holds the lock: it serves once it has opened the
	// image. (Probing with qemu-img info would race with the writer for
	// the lock and could make the writer fail.)
	waitServing(t, filepath.Join(dir, "vm.sock"), &vmErr)
	if out, err := imgtest.Output("qemu-img", "info", good); err == nil || !strings.Contains(out, "lock") {
		t.Fatalf("the writer does not hold the image's lock: qemu-img info says %q", out)
	}
	_, err = StartQemu(context.Background(), good, QemuOptions{Format: "qcow2"})
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "snapshot") {
		t.Fatalf("locked image: err = %v", err)
	}
	q, err := StartQemu(context.Background(), good, QemuOptions{Format: "qcow2", ForceShare: true})
	if err != nil {
		t.Fatalf("--force-share: %v", err)
	}
	q.Close()
}

// TestNbdkit reads nbdkit's file plugin over a Unix socket and over TCP
// on the loopback, and its memory plugin (all zeros, reported as such).
func TestNbdkit(t *testing.T) {
	imgtest.Need(t, "nbdkit")
	dir := t.TempDir()
	raw := filepath.Join(dir, "disk.raw")
	want := sparseImage(t, raw, 9*mib+512, [][2]int64{{0, mib}, {4 * mib, 3 * mib}})
	sock := filepath.Join(dir, "s.sock")
	startNbdkit(t, "-U", sock, "file", raw)
	port := freePort(t)
	startNbdkit(t, "-i", "127.0.0.1", "-p", port, "file", raw)
	mem := filepath.Join(dir, "m.sock")
	startNbdkit(t, "-U", mem, "memory", "size=8M")

	for _, uri := range []string{
		"nbd+unix:///?socket=" + sock,
		"nbd://127.0.0.1:" + port + "/",
		"nbd://127.0.0.1:" + port,
	} {
		t.Run(uri, func(t *testing.T) {
			a, err := ParseURI(uri)
			if err != nil {
				t.Fatal(err)
			}
			c, err := Dial(context.Background(), a, DefaultTimeout)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			checkAll(t, c, want)
		})
	}
	a, _ := ParseURI("nbd+unix:///?socket=" + mem)
	c, err := Dial(context.Background(), a, DefaultTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	checkAll(t, c, make([]byte, 8*mib))
	if z := zeroMap(t, c); len(z) != 1 || z[0] != [2]int64{0, 8 * mib} {
		t.Fatalf("memory plugin zero map %v", z)
	}
}

func startNbdkit(t *testing.T, args ...string) {
	t.Helper()
	pidFile := filepath.Join(t.TempDir(), "pid")
	cmd := exec.Command("nbdkit", append([]string{"--foreground", "--exit-with-parent", "-r", "-P", pidFile}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(pidFile); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nbdkit %q did not start: %s", args, stderr.String())
		}
	}
}

func freePort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return fmt.Sprint(l.Addr().(*net.TCPAddr).Port)
}

func TestParseURI(t *testing.T) {
	for _, c := range []struct {
		in, network, addr, export, err string
	}{
		{in: "nbd://host/exp", network: "tcp", addr: "host:10809", export: "exp"},
		{in: "nbd://host:1234/a%20b", network: "tcp", addr: "host:1234", export: "a b"},
		{in: "nbd://[::1]:99/", network: "tcp", addr: "[::1]:99", export: ""},
		{in: "nbd://h", network: "tcp", addr: "h:10809"},
		{in: "nbd+unix:///vda?socket=/run/s.sock", network: "unix", addr: "/run/s.sock", export: "vda"},
		{in: "nbd+unix:///?socket=/s", network: "unix", addr: "/s"},
		{in: "nbd+unix:///x", err: "no socket"},
		{in: "nbd+unix://h/x?socket=/s", err: "no host"},
		{in: "nbds://h/x", err: "TLS"},
		{in: "nbd:///x", err: "no host"},
		{in: "nbd://h/x?tls-certificates=/x", err: "unsupported parameter"},
		{in: "nbd+vsock://1/x", err: "unsupported scheme"},
	} {
		a, err := ParseURI(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s: err %v, want %q", c.in, err, c.err)
			}
			continue
		}
		if err != nil || a.Network != c.network || a.Addr != c.addr || a.Export != c.export {
			t.Errorf("%s = %+v, %v", c.in, a, err)
		}
	}
	for s, want := range map[string]bool{"nbd://x": true, "nbd+unix:///?socket=a": true, "nbds://x": true, "disk.img": false, "/a/nbd://": false, "./nbd:x": false} {
		if IsURI(s) != want {
			t.Errorf("IsURI(%q) = %v", s, !want)
		}
	}
}

func readFile(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeFile(t testing.TB, name string, b []byte) {
	t.Helper()
	if err := os.WriteFile(name, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// waitServing waits until the qemu-nbd on sock completes a handshake,
// which it does once it has opened (and locked) its image.
func waitServing(t *testing.T, sock string, stderr *bytes.Buffer) {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := Dial(context.Background(), Address{Network: "unix", Addr: sock, URI: sock}, 10*time.Second); err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("qemu-nbd on %s does not serve: %s", sock, stderr.String())
		}
	}
}
