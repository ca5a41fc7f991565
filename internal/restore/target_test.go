package restore

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	"github.com/prezero/prezero/internal/imgtest"
)

// loopDevice attaches img to a free loop device, detached at cleanup.
func loopDevice(t *testing.T, img string) string {
	t.Helper()
	imgtest.NeedRoot(t)
	imgtest.Need(t, "losetup")
	dev := strings.TrimSpace(imgtest.Run(t, "losetup", "-f", "--show", img))
	t.Cleanup(func() { imgtest.Detach(t, dev, img) })
	return dev
}

// deviceStream has data and zero runs of many lengths: shorter and longer
// than deviceMinZero, some crossing the reader's buffers.
func deviceStream() []byte {
	const K, M = 1 << 10, 1 << 20
	r := rand.New(rand.NewPCG(11, 12))
	return build(r, data(3*K), zeros(5*K), data(60*K), zeros(100*K), data(4*K), zeros(300*K),
		data(1*M), zeros(9*M+512), data(7*K+100), zeros(20*M), data(2*M), zeros(3*M+1000))
}

func TestDeviceRestore(t *testing.T) {
	stream := deviceStream()
	tests := []struct {
		name   string
		bs     int
		assume bool
		fresh  bool // the backing file is new and sparse: the device reads as zeros
	}{
		{"4K blocks", 4096, false, false},
		{"512-byte blocks, unaligned zero edges", 512, false, false},
		{"assume zeroed on a fresh device", 4096, true, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			img := filepath.Join(t.TempDir(), "dev.img")
			size := (int64(len(stream)) + 4<<20) / 4096 * 4096
			if tc.fresh {
				f, _ := os.Create(img)
				f.Truncate(size)
				f.Close()
			} else {
				imgtest.RandomFile(t, img, size)
			}
			before, _ := os.ReadFile(img)
			dev := loopDevice(t, img)
			tg, err := Open(dev, OpenOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if tg.Kind != Device || tg.Size != size {
				t.Fatalf("kind %v size %d, want device of %d", tg.Kind, tg.Size, size)
			}
			w, _ := NewWriter(tg, Options{BlockSize: tc.bs, AssumeZeroed: tc.assume, Limit: tg.Size})
			ctx := context.Background()
			if _, err := w.ReadFrom(ctx, bytes.NewReader(stream), int64(len(stream))); err != nil {
				t.Fatal(err)
			}
			if err := w.Finish(ctx); err != nil {
				t.Fatal(err)
			}
			tg.Close()
			got := readDevice(t, dev)
			if !bytes.Equal(got[:len(stream)], stream) {
				t.Fatalf("device differs from the stream at %d", firstDiff(got[:len(stream)], stream))
			}
			if !bytes.Equal(got[len(stream):], before[len(stream):]) {
				t.Errorf("bytes after the stream's end changed")
			}
			st := w.Stats()
			if !tc.assume && st.Zeroed < 30<<20 {
				t.Errorf("only %d bytes zeroed by ioctl: %+v", st.Zeroed, st)
			}
			if tc.assume && (st.Zeroed != 0 || st.ZerosWritten != 0 || st.Skipped == 0) {
				t.Errorf("--assume-zeroed still zeroed: %+v", st)
			}
		})
	}
}

func readDevice(t *testing.T, dev string) []byte {
	t.Helper()
	f, err := os.OpenFile(dev, os.O_RDONLY|syscall.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Seek(0, 2)
	f.Seek(0, 0)
	// O_DIRECT bypasses the page cache: what the device really holds.
	buf := alignedBuf(int(fi))
	for off := 0; off < len(buf); {
		n, err := f.Read(buf[off:min(off+1<<20, len(buf))])
		if n <= 0 {
			t.Fatalf("reading %s at %d: %v", dev, off, err)
		}
		off += n
	}
	return buf
}

// alignedBuf returns n bytes aligned to 4096, as O_DIRECT needs.
func alignedBuf(n int) []byte {
	b := make([]byte, n+4096)
	off := 0
	for uintptr(unsafe.Pointer(&b[off]))%4096 != 0 {
		off++
	}
	return b[off : off+n]
}

// TestWriterLimitOnDevice: a stream of unknown length that turns out longer
// than the device fails with ErrTooLong at the buffer that would pass the
// end, not with an I/O error, and nothing past the device's end is tried.
// (The command refuses a known-length stream before writing anything.)
func TestWriterLimitOnDevice(t *testing.T) {
	img := filepath.Join(t.TempDir(), "dev.img")
	imgtest.RandomFile(t, img, 12<<20)
	before, _ := os.ReadFile(img)
	dev := loopDevice(t, img)
	tg, err := Open(dev, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	w, _ := NewWriter(tg, Options{Limit: tg.Size})
	stream := bytes.Repeat([]byte{1}, 20<<20)
	n, err := w.ReadFrom(context.Background(), bytes.NewReader(stream), -1)
	if !errors.Is(err, ErrTooLong) || n != bufSize {
		t.Fatalf("ReadFrom = %d, %v; want %d, ErrTooLong", n, err, bufSize)
	}
	tg.Close()
	after, _ := os.ReadFile(img)
	if !bytes.Equal(after[bufSize:], before[bufSize:]) {
		t.Errorf("the device changed after the last whole buffer that fit")
	}
}

func TestOpenRefusals(t *testing.T) {
	imgtest.Need(t, "mkfs.ext4", "mount", "umount")
	dir := t.TempDir()

	// A mounted filesystem on a loop device: the device and its backing
	// file are both refused, even with Force.
	img := filepath.Join(dir, "fs.img")
	f, _ := os.Create(img)
	f.Truncate(16 << 20)
	f.Close()
	imgtest.Run(t, "mkfs.ext4", "-q", "-F", img)
	dev := loopDevice(t, img)
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	imgtest.Run(t, "mount", "-o", "ro", dev, mnt)
	t.Cleanup(func() { imgtest.Output("umount", mnt) })
	for _, force := range []bool{false, true} {
		for _, p := range []string{dev, img} {
			if _, err := Open(p, OpenOptions{Force: force}); !errors.Is(err, ErrMounted) || !strings.Contains(err.Error(), mnt) {
				t.Errorf("Open(%s, force=%v) = %v, want ErrMounted naming %s", p, force, err, mnt)
			}
		}
	}
	imgtest.Umount(t, mnt)

	// Not mounted, but its loop device exists: the file is in use.
	if _, err := Open(img, OpenOptions{}); !errors.Is(err, ErrInUse) {
		t.Errorf("Open(backing file) = %v, want ErrInUse", err)
	}
	if tg, err := Open(img, OpenOptions{Force: true}); err != nil || tg.InUse == "" {
		t.Errorf("Open(backing file, force) = %v, %v; want success noting the use", tg, err)
	} else {
		tg.Close()
	}

	// Held open exclusively by someone else: in use, unless Force.
	holder, err := os.OpenFile(dev, os.O_RDONLY|os.O_EXCL, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dev, OpenOptions{}); !errors.Is(err, ErrInUse) {
		t.Errorf("Open(held device) = %v, want ErrInUse", err)
	}
	tg, err := Open(dev, OpenOptions{Force: true})
	if err != nil {
		t.Errorf("Open(held device, force) = %v", err)
	} else {
		tg.Close()
	}
	holder.Close()

	if _, err := Open("/dev/prezero-no-such-disk", OpenOptions{}); err == nil || !strings.Contains(err.Error(), "refusing to create") {
		t.Errorf("a missing /dev path: err = %v", err)
	}
	if _, err := Open(dir, OpenOptions{}); err == nil {
		t.Errorf("a directory was accepted")
	}
	if _, err := Open("/dev/null", OpenOptions{}); err == nil {
		t.Errorf("a character device was accepted")
	}
}

// TestMountedFileByPath refuses a file that a FUSE filesystem (ntfs-3g)
// has mounted directly, with no loop device in between.
func TestMountedFileByPath(t *testing.T) {
	imgtest.NeedRoot(t)
	img := filepath.Join(t.TempDir(), "ntfs.img")
	imgtest.MakeNTFS(t, img, 16<<20, 0, 0)
	mnt := t.TempDir()
	unmount := imgtest.MountNTFS(t, img, mnt, true)
	defer unmount()
	if _, err := Open(img, OpenOptions{Force: true}); !errors.Is(err, ErrMounted) {
		t.Fatalf("Open(FUSE-mounted file) = %v, want ErrMounted", err)
	}
}
