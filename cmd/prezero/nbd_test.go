package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
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
	"github.com/prezero/prezero/internal/nbd"
	"github.com/prezero/prezero/internal/source"
)

// The image fixture: a random-filled GPT disk (ext4, NTFS, and a partition
// no parser claims, whose last 10 MiB are zeros), converted by qemu-img to
// every format the tests read through qemu-nbd.
const (
	imSize    = 48 << 20
	imExt     = 1 << 20
	imNTFS    = 17 << 20
	imRaw     = 33 << 20
	imPartLen = 16 << 20
	imRawLen  = 12 << 20
	imZeroOff = imRaw + 2<<20 // zeros to the end of partition 3
)

type imageFixture struct {
	dir      string
	raw      string            // the raw disk
	variants map[string]string // name → image whose content equals raw
	order    []string
}

var (
	imOnce sync.Once
	imFix  *imageFixture
)

func images(t *testing.T) *imageFixture {
	t.Helper()
	imgtest.NeedRoot(t)
	imgtest.Need(t, "qemu-img", "qemu-nbd", "sfdisk", "mkfs.ext4", "debugfs", "mkntfs", "ntfs-3g")
	imOnce.Do(func() {
		dir := filepath.Join(filepath.Dir(prezeroBin(t)), "images")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		f := &imageFixture{dir: dir, raw: filepath.Join(dir, "disk.raw"), variants: map[string]string{}}
		buildImageFixture(t, f)
		imFix = f
	})
	if imFix == nil {
		t.Fatal("the image fixture could not be built: see the first test that needed it")
	}
	return imFix
}

func buildImageFixture(t *testing.T, f *imageFixture) {
	raw := f.raw
	imgtest.RandomFile(t, raw, imSize)
	imgtest.Partition(t, raw, 512, fmt.Sprintf(
		"label: gpt\nstart=%d,size=%d,type=L\nstart=%d,size=%d,type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7\nstart=%d,size=%d,type=0FC63DAF-8483-4772-8E79-3D69D8477DE5\n",
		imExt/512, imPartLen/512, imNTFS/512, imPartLen/512, imRaw/512, imRawLen/512))
	ext := filepath.Join(t.TempDir(), "ext.img")
	imgtest.Ext(t, ext, imPartLen)
	imgtest.WriteAt(t, raw, imExt, ext)
	ntfs := filepath.Join(t.TempDir(), "ntfs.img")
	imgtest.MakeNTFS(t, ntfs, imPartLen, 0, 0)
	mnt := t.TempDir()
	unmount := imgtest.MountNTFS(t, ntfs, mnt, false)
	imgtest.WriteRandomFiles(t, mnt, map[string]int64{"keep/a.bin": 3 << 20, "c.bin": 700 << 10, "gone/big.bin": 5 << 20})
	if err := os.RemoveAll(filepath.Join(mnt, "gone")); err != nil {
		t.Fatal(err)
	}
	unmount()
	imgtest.WriteAt(t, raw, imNTFS, ntfs)
	zeros := filepath.Join(t.TempDir(), "zeros")
	imgtest.ZeroFile(t, zeros, imRaw+imRawLen-imZeroOff)
	imgtest.WriteAt(t, raw, imZeroOff, zeros)

	add := func(name, path string) {
		f.variants[name] = path
		f.order = append(f.order, name)
	}
	for _, v := range []struct {
		name, format string
		args         []string
	}{
		{"qcow2", "qcow2", nil},
		{"qcow2-compressed", "qcow2", []string{"-c"}},
		{"vmdk", "vmdk", nil},
		{"vhdx", "vhdx", nil},
		{"vdi", "vdi", nil},
	} {
		out := filepath.Join(f.dir, v.name+"."+v.format)
		imgtest.Run(t, "qemu-img", append(append([]string{"convert", "-O", v.format}, v.args...), raw, out)...)
		add(v.name, out)
	}

	// A backing chain base ← mid ← top: each level holds part of the
	// data. base has other bytes in partition 3 and past the partitions,
	// mid fixes partition 3, top (made with qemu-img create -b) fixes the
	// rest with a write through qemu-io.
	other := func(name string, ranges ...[2]int64) string {
		p := filepath.Join(t.TempDir(), name)
		imgtest.CopyFile(t, p, raw)
		for _, r := range ranges {
			junk := filepath.Join(t.TempDir(), "junk")
			imgtest.RandomFile(t, junk, r[1])
			imgtest.WriteAt(t, p, r[0], junk)
		}
		return p
	}
	tailOff := int64(imRaw + imRawLen)
	base, mid, top := filepath.Join(f.dir, "base.qcow2"), filepath.Join(f.dir, "mid.qcow2"), filepath.Join(f.dir, "top.qcow2")
	imgtest.Run(t, "qemu-img", "convert", "-O", "qcow2", other("b.raw", [2]int64{imRaw, 1 << 20}, [2]int64{tailOff, 1 << 20}), base)
	imgtest.Run(t, "qemu-img", "convert", "-O", "qcow2", "-B", base, "-o", "backing_fmt=qcow2", other("m.raw", [2]int64{tailOff, 1 << 20}), mid)
	imgtest.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", mid, "-F", "qcow2", top)
	// The true tail goes into top with qemu-io, from the raw image.
	tail := filepath.Join(t.TempDir(), "tail")
	imgtest.CopyFile(t, tail, section(t, raw, tailOff, 1<<20))
	imgtest.Run(t, "qemu-io", "-f", "qcow2", "-c", fmt.Sprintf("write -s %s %d %d", tail, tailOff, 1<<20), top)
	add("qcow2-chain", top)
}

// mapOf runs prezero map --json and drops what differs by source.
func mapOf(t *testing.T, img string, args ...string) (mapJSON, string) {
	t.Helper()
	out, stderr, code := pz(t, nil, append(append([]string{"map", "--json"}, args...), img)...)
	if code != 0 {
		t.Fatalf("prezero map %s: exit %d\n%s", img, code, stderr)
	}
	var m mapJSON
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatal(err)
	}
	return m, out
}

func normalMap(m mapJSON) string {
	m.Source, m.Format, m.KnownZero, m.InPlace = "", "", nil, nil
	b, _ := json.Marshal(m)
	return string(b)
}

// qemuNbdFor returns the pids of qemu-nbd processes serving path.
func qemuNbdFor(path string) []int {
	var out []int
	for _, pid := range serverPIDs(path) {
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); err == nil && strings.TrimSpace(string(b)) == "qemu-nbd" {
			out = append(out, pid)
		}
	}
	return out
}

func noQemuNbd(t *testing.T, path string) {
	t.Helper()
	eventually(t, "qemu-nbd serving "+path+" to exit", func() bool { return len(qemuNbdFor(path)) == 0 })
}

// TestImageFormats: map and cat of every format equal those of the raw.
func TestImageFormats(t *testing.T) {
	f := images(t)
	rawMap, _ := mapOf(t, f.raw)
	rawDisk := readFile(t, catFile(t, f.raw, "disk"))
	for _, name := range f.order {
		img := f.variants[name]
		t.Run(name, func(t *testing.T) {
			m, text := mapOf(t, img)
			if normalMap(m) != normalMap(rawMap) {
				t.Fatalf("map of %s differs from the raw image's:\n%s", name, text)
			}
			if m.Format == "" {
				t.Fatalf("map does not say %s is read through qemu-nbd", name)
			}
			// qemu reports unallocated clusters of these formats: the
			// zeros of partition 3 must be known (vhdx has no block status).
			if name != "vhdx" && (m.KnownZero == nil || *m.KnownZero < imRaw+imRawLen-imZeroOff-(1<<20)) {
				t.Fatalf("%s: known zeros %v, want about %d", name, m.KnownZero, imRaw+imRawLen-imZeroOff)
			}
			got := readFile(t, catFile(t, img, "disk"))
			if i := firstDiff(got, rawDisk); i >= 0 {
				t.Fatalf("cat %s differs from cat of the raw image at byte %d", name, i)
			}
			for _, part := range []string{"header", "2", "3"} {
				a, b := readFile(t, catFile(t, img, part)), readFile(t, catFile(t, f.raw, part))
				if i := firstDiff(a, b); i >= 0 {
					t.Fatalf("cat %s %s differs from the raw image's at byte %d", name, part, i)
				}
			}
			noQemuNbd(t, img)
		})
	}
	// The text map says how the image is read.
	out, _, _ := pz(t, nil, "map", f.variants["qcow2"])
	if !strings.Contains(out, "qcow2 image read through qemu-nbd") || !strings.Contains(out, "reported as zeros") ||
		!strings.Contains(out, "read in place from the image file") {
		t.Fatalf("map output:\n%s", out)
	}
}

// TestImageCorrupt: qemu's own error, attributed to qemu-nbd, no hang.
func TestImageCorrupt(t *testing.T) {
	f := images(t)
	dir := t.TempDir()

	// A header qemu refuses: cluster_bits (byte 20) = 99.
	bad := filepath.Join(dir, "header.qcow2")
	imgtest.CopyFile(t, bad, f.variants["qcow2"])
	b := readFile(t, bad)
	copy(b[20:24], []byte{0, 0, 0, 99})
	writeFile(t, bad, b)
	// A data cluster at an unaligned host offset: qemu fails the read.
	unaligned := filepath.Join(dir, "data.qcow2")
	imgtest.CopyFile(t, unaligned, f.variants["qcow2"])
	corruptFirstCluster(t, unaligned)

	for _, c := range []struct {
		img  string
		args []string
		want []string
	}{
		{bad, []string{"map"}, []string{"qemu-img info", bad, "Unsupported cluster size"}},
		{bad, []string{"cat"}, []string{"qemu-img info", bad, "Unsupported cluster size"}},
		{unaligned, []string{"cat"}, []string{"nbd server", "input/output error", "qemu-nbd says", "unaligned"}},
		{unaligned, []string{"map"}, []string{"nbd server", "input/output error", "qemu-nbd says", "unaligned"}},
	} {
		start := time.Now()
		cmd := exec.Command(prezeroBin(t), append(c.args, c.img)...)
		var stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = io.Discard, &stderr
		done := make(chan error, 1)
		cmd.Start()
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 {
				t.Fatalf("%q %s: %v, want exit 2\n%s", c.args, c.img, err, stderr.String())
			}
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			t.Fatalf("%q %s hangs", c.args, c.img)
		}
		for _, w := range c.want {
			if !strings.Contains(stderr.String(), w) {
				t.Fatalf("%q %s: stderr lacks %q:\n%s", c.args, c.img, w, stderr.String())
			}
		}
		t.Logf("%q %s (%v): %s", c.args, filepath.Base(c.img), time.Since(start).Round(time.Millisecond), stderr.String())
		noQemuNbd(t, c.img)
	}
}

// corruptFirstCluster points the first L2 entry of a qcow2 at a host
// offset that is not cluster-aligned, which qemu refuses to read.
func corruptFirstCluster(t *testing.T, img string) {
	t.Helper()
	b := readFile(t, img)
	be := binary.BigEndian
	l1 := be.Uint64(b[40:])
	l2 := be.Uint64(b[l1:]) & 0x00fffffffffffe00
	if l2 == 0 || l2+8 > uint64(len(b)) {
		t.Fatalf("%s: no L2 table for cluster 0", img)
	}
	e := be.Uint64(b[l2:])
	if e&0x00fffffffffffe00 == 0 {
		t.Fatalf("%s: cluster 0 is not allocated", img)
	}
	be.PutUint64(b[l2:], e+512)
	writeFile(t, img, b)
}

// TestImageLocked: a qcow2 a "VM" has open for writing is refused unless
// --force --force-share.
func TestImageLocked(t *testing.T) {
	f := images(t)
	img := filepath.Join(t.TempDir(), "vm.qcow2")
	imgtest.CopyFile(t, img, f.variants["qcow2"])
	sock := filepath.Join(t.TempDir(), "vm.sock")
	vm := exec.Command("qemu-nbd", "--persistent", "--socket="+sock, "--format=qcow2", img)
	var vmErr bytes.Buffer
	vm.Stderr = &vmErr
	if err := vm.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { vm.Process.Kill(); vm.Wait() })
	// It holds the lock once it serves. (Polling qemu-img info instead
	// races with the writer for the lock: the writer could fail.)
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		c, err := nbd.Dial(context.Background(), nbd.Address{Network: "unix", Addr: sock, URI: sock}, 10*time.Second)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the writer does not serve: %v; the writer: %s", err, vmErr.String())
		}
	}
	if out, err := imgtest.Output("qemu-img", "info", img); err == nil || !strings.Contains(out, "lock") {
		t.Fatalf("the writer does not hold the image's lock: qemu-img info says %q", out)
	}
	_, stderr, code := pz(t, nil, "cat", img)
	if code != 2 || !strings.Contains(stderr, "snapshot") || !strings.Contains(stderr, "lock") {
		t.Fatalf("cat of a locked image: exit %d\n%s", code, stderr)
	}
	_, stderr, code = pz(t, nil, "cat", "--force-share", img)
	if code != 2 || !strings.Contains(stderr, "only together with --force") {
		t.Fatalf("--force-share alone: exit %d\n%s", code, stderr)
	}
	got := catFileArgs(t, "cat", "--force", "--force-share", img)
	if firstDiff(readFile(t, got), readFile(t, catFile(t, f.raw, "disk"))) >= 0 {
		t.Fatal("cat --force --force-share differs from the raw image's")
	}
	for _, pid := range qemuNbdFor(img) {
		if pid != vm.Process.Pid {
			t.Fatalf("a qemu-nbd (%d) of prezero's is left", pid)
		}
	}
}

func catFileArgs(t *testing.T, args ...string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "out")
	o, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	cmd := exec.Command(prezeroBin(t), args...)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = o, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("prezero %q: %v\n%s", args, err, stderr.String())
	}
	return out
}

// TestNBDExports: nbdkit's file plugin over a Unix socket and TCP.
func TestNBDExports(t *testing.T) {
	f := images(t)
	imgtest.Need(t, "nbdkit")
	sock := filepath.Join(t.TempDir(), "nbd.sock")
	startNbdkit(t, "-U", sock, "file", f.raw)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	l.Close()
	startNbdkit(t, "-i", "127.0.0.1", "-p", port, "--filter=exportname", "file", f.raw, "exportname=disk", "exportname-strict=true")
	rawMap, _ := mapOf(t, f.raw)
	rawDisk := readFile(t, catFile(t, f.raw, "disk"))
	for _, uri := range []string{"nbd+unix:///?socket=" + sock, "nbd://127.0.0.1:" + port + "/disk"} {
		m, text := mapOf(t, uri)
		if normalMap(m) != normalMap(rawMap) || m.Format != "nbd" {
			t.Fatalf("map of %s:\n%s", uri, text)
		}
		if i := firstDiff(readFile(t, catFileArgs(t, "cat", uri)), rawDisk); i >= 0 {
			t.Fatalf("cat %s differs from the raw image's at %d", uri, i)
		}
	}
	_, stderr, code := pz(t, nil, "map", "nbds://127.0.0.1/x")
	if code != 2 || !strings.Contains(stderr, "TLS") {
		t.Fatalf("nbds: exit %d\n%s", code, stderr)
	}
	_, stderr, code = pz(t, nil, "map", "nbd://127.0.0.1:"+port+"/nosuch")
	if code != 2 || !strings.Contains(stderr, "nosuch") {
		t.Fatalf("unknown export: exit %d\n%s", code, stderr)
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
	eventually(t, "nbdkit to start", func() bool {
		_, err := os.Stat(pidFile)
		return err == nil
	})
}

// TestImageMountAndBackup: the mount of a qcow2 serves what the raw
// image's does, with the known zeros of the partition no parser claims as
// holes; borg archives of both hold the same files.
func TestImageMountAndBackup(t *testing.T) {
	f := images(t)
	imgtest.Need(t, "fusermount3")
	img := f.variants["qcow2"]
	qdir, rdir := t.TempDir(), t.TempDir()
	mountBG(t, img, qdir)
	mountBG(t, f.raw, rdir)
	ents, err := os.ReadDir(rdir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		a, b := readFile(t, filepath.Join(qdir, e.Name())), readFile(t, filepath.Join(rdir, e.Name()))
		if i := firstDiff(a, b); i >= 0 {
			t.Fatalf("%s of the qcow2 mount differs from the raw mount's at %d", e.Name(), i)
		}
	}
	// Partition 3 passes through; its zero tail is a hole only in the qcow2.
	src, err := source.Open(img, source.Options{})
	if err != nil {
		t.Fatal(err)
	}
	p3 := src.Files()[2].Stream.Free().Aligned(4 << 20)
	src.Close()
	if p3.FreeBytes() < 4<<20 {
		t.Fatalf("partition 3's known zeros give no 4 MiB hole: %v", p3)
	}
	checkHoles(t, filepath.Join(qdir, "part3.img"), p3)
	checkHoles(t, filepath.Join(rdir, "part3.img"), freemap.NewBuilder(imRawLen).Map())
	if len(qemuNbdFor(img)) != 1 {
		t.Fatalf("qemu-nbd processes for the mount: %v", qemuNbdFor(img))
	}
	pz(t, nil, "umount", qdir)
	noQemuNbd(t, img)

	b, repo, env := borgRepo(t, "borg")
	backup(t, env, "--partitions", img, repo+"::qcow2")
	backup(t, env, "--partitions", f.raw, repo+"::raw")
	noQemuNbd(t, img)
	for _, name := range []string{"header.img", "part1.img", "part2.img", "part3.img"} {
		q := readFile(t, extract(t, b, env, repo, "qcow2", name))
		r := readFile(t, extract(t, b, env, repo, "raw", name))
		if i := firstDiff(q, r); i >= 0 {
			t.Fatalf("%s in the qcow2 archive differs from the raw archive's at %d", name, i)
		}
	}
}

// TestImageServerStopped: qemu-nbd ends after Ctrl-C and SIGKILL of
// prezero (success and errors are checked by the tests above).
func TestImageServerStopped(t *testing.T) {
	f := images(t)
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGKILL} {
		img := filepath.Join(t.TempDir(), "sig.qcow2")
		imgtest.CopyFile(t, img, f.variants["qcow2"])
		// prezero cat into a pipe nobody reads: it blocks mid-stream.
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(prezeroBin(t), "cat", img)
		cmd.Stdout = w
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		w.Close()
		eventually(t, "qemu-nbd to start", func() bool { return len(qemuNbdFor(img)) == 1 })
		buf := make([]byte, 1<<16)
		if _, err := io.ReadFull(r, buf); err != nil {
			t.Fatal(err)
		}
		cmd.Process.Signal(sig)
		if sig == syscall.SIGINT {
			// The read side must keep draining for prezero to see the signal.
			go io.Copy(io.Discard, r)
		}
		cmd.Wait()
		r.Close()
		noQemuNbd(t, img)
		if sig == syscall.SIGINT && cmd.ProcessState.ExitCode() != 130 {
			t.Fatalf("Ctrl-C: exit %d\n%s", cmd.ProcessState.ExitCode(), stderr.String())
		}
	}
}

// TestImageServerStalled: a qemu-nbd that stops answering mid-read
// (SIGSTOP) makes cat fail after --nbd-timeout, naming the image, and
// prezero still stops it.
func TestImageServerStalled(t *testing.T) {
	f := images(t)
	// A vmdk: all its data comes through qemu-nbd (a qcow2's is read in
	// place where qemu maps it).
	img := filepath.Join(t.TempDir(), "stall.vmdk")
	imgtest.CopyFile(t, img, f.variants["vmdk"])
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	cmd := exec.Command(prezeroBin(t), "cat", "--nbd-timeout", "2s", img)
	cmd.Stdout = w
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	eventually(t, "qemu-nbd to start", func() bool { return len(qemuNbdFor(img)) == 1 })
	pid := qemuNbdFor(img)[0]
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGCONT); cmd.Process.Kill(); cmd.Wait() })
	if _, err := io.ReadFull(r, make([]byte, 1<<16)); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	go io.Copy(io.Discard, r)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatalf("prezero cat still waits %v after qemu-nbd stopped answering\n%s", time.Since(start), stderr.String())
	}
	took := time.Since(start)
	if code := cmd.ProcessState.ExitCode(); code != 2 {
		t.Fatalf("exit %d after a stalled qemu-nbd\n%s", code, stderr.String())
	}
	for _, want := range []string{"qemu-nbd serving " + img, "stopped answering", "2s"} {
		if !strings.Contains(stderr.String(), want) {
			t.Fatalf("stderr lacks %q:\n%s", want, stderr.String())
		}
	}
	if took < 2*time.Second {
		t.Fatalf("gave up after %v, before the 2 s timeout", took)
	}
	t.Logf("gave up after %v: %s", took.Round(time.Millisecond), stderr.String())
	noQemuNbd(t, img)

	_, errOut, code := pz(t, nil, "map", "--nbd-timeout", "0", img)
	if code != 2 || !strings.Contains(errOut, "--nbd-timeout must be positive") {
		t.Fatalf("--nbd-timeout 0: exit %d\n%s", code, errOut)
	}
}

// TestImageOnBlockDevice: a qcow2 on a block device (as an LV of a block
// storage domain) is read through qemu as a qcow2 file is, read-only.
func TestImageOnBlockDevice(t *testing.T) {
	f := images(t)
	img := filepath.Join(t.TempDir(), "lv.qcow2")
	imgtest.CopyFile(t, img, f.variants["qcow2"])
	// A loop device ends at a whole sector; qcow2 tolerates the padding.
	fi, err := os.Stat(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, (fi.Size()+1<<16-1)&^(1<<16-1)); err != nil {
		t.Fatal(err)
	}
	dev, _ := imgtest.Loop(t, img, 0, 0, true)
	rawMap, _ := mapOf(t, f.raw)
	m, text := mapOf(t, dev)
	if m.Format != "qcow2" || normalMap(m) != normalMap(rawMap) {
		t.Fatalf("map of a qcow2 on %s:\n%s", dev, text)
	}
	got := readFile(t, catFileArgs(t, "cat", dev))
	if i := firstDiff(got, readFile(t, catFile(t, f.raw, "disk"))); i >= 0 {
		t.Fatalf("cat %s differs from the raw image's at byte %d", dev, i)
	}
	noQemuNbd(t, dev)
	// --force-share opens the device with qemu's host_device driver.
	got = readFile(t, catFileArgs(t, "cat", "--force", "--force-share", dev))
	if i := firstDiff(got, readFile(t, catFile(t, f.raw, "disk"))); i >= 0 {
		t.Fatalf("cat --force --force-share %s differs at byte %d", dev, i)
	}
	noQemuNbd(t, dev)
}

// TestImageMountStalled: the mount server gets --nbd-timeout too; a read
// from a stalled qemu-nbd fails with EIO instead of hanging, and umount
// still stops qemu-nbd.
func TestImageMountStalled(t *testing.T) {
	f := images(t)
	imgtest.Need(t, "fusermount3")
	img := filepath.Join(t.TempDir(), "stall.vmdk")
	imgtest.CopyFile(t, img, f.variants["vmdk"])
	dir := t.TempDir()
	mountBG(t, img, dir, "--nbd-timeout", "2s")
	pids := qemuNbdFor(img)
	if len(pids) != 1 {
		t.Fatalf("qemu-nbd processes for the mount: %v", pids)
	}
	t.Cleanup(func() { syscall.Kill(pids[0], syscall.SIGCONT) })
	if err := syscall.Kill(pids[0], syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	disk, err := os.Open(filepath.Join(dir, "disk.img"))
	if err != nil {
		t.Fatal(err)
	}
	defer disk.Close()
	start := time.Now()
	done := make(chan error, 1)
	go func() {
		_, err := disk.ReadAt(make([]byte, 1<<20), imNTFS)
		done <- err
	}()
	select {
	case err = <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("a read from the mount still waits 60 s after qemu-nbd stopped answering")
	}
	if !errors.Is(err, syscall.EIO) || time.Since(start) < 2*time.Second {
		t.Fatalf("read after %v: %v, want EIO after the 2 s timeout", time.Since(start), err)
	}
	disk.Close()
	pz(t, nil, "umount", dir)
	noQemuNbd(t, img)
}

// TestImageColonName: a relative image name with a colon ("file:disk.qcow2")
// is the file itself to qemu too, not a protocol, with its data read in place.
func TestImageColonName(t *testing.T) {
	f := images(t)
	dir := t.TempDir()
	imgtest.CopyFile(t, filepath.Join(dir, "file:disk.qcow2"), f.variants["qcow2"])
	// What qemu would open instead: other bytes in partition 3 and the tail.
	imgtest.CopyFile(t, filepath.Join(dir, "disk.qcow2"), filepath.Join(f.dir, "base.qcow2"))
	cmd := exec.Command(prezeroBin(t), "cat", "file:disk.qcow2")
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("prezero cat file:disk.qcow2: %v\n%s", err, stderr.String())
	}
	if i := firstDiff(stdout.Bytes(), readFile(t, catFile(t, f.raw, "disk"))); i >= 0 {
		t.Fatalf("cat file:disk.qcow2 differs from the raw image's at byte %d", i)
	}
}
