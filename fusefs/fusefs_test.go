package fusefs

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prezero/prezero/freemap"
	"github.com/prezero/prezero/internal/imgtest"
	"github.com/prezero/prezero/stream"
)

const align = 1 << 20 // small windows keep the synthetic volume small

// synthetic is a random volume with a hand-made map: holes aligned and not,
// a free tail, and free runs shorter than a window.
type synthetic struct {
	data []byte
	free *freemap.Map
}

func newSynthetic(t *testing.T, size int64, seed uint64) synthetic {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, seed))
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	b := freemap.NewBuilder(size)
	b.Add(3*align, 2*align)                  // two whole windows
	b.Add(6*align-4096, align+8192)          // one window and a bit either side
	b.Add(9*align+512, align)                // no whole window
	b.Add(11*align+100, 4*align)             // three windows, unaligned ends
	b.Add(20*align, 1000)                    // a small free run
	b.Add(size-3*align-12345, 3*align+12345) // free to the end
	return synthetic{data: data, free: b.Map()}
}

func (s synthetic) stream() *stream.Reader {
	return stream.New(bytes.NewReader(s.data), int64(len(s.data)), s.free)
}

// want returns what the mount must serve: zeros inside free extents.
func (s synthetic) want() []byte {
	out := bytes.Clone(s.data)
	for _, e := range s.free.Extents() {
		clear(out[e.Off:e.End()])
	}
	return out
}

// mountT mounts files on a temporary directory for the test's duration.
func mountT(t *testing.T, files []File, opts Options) string {
	t.Helper()
	needFUSE(t)
	dir := t.TempDir()
	if opts.HoleAlign == 0 {
		opts.HoleAlign = align
	}
	if opts.Logf == nil {
		opts.Logf = t.Logf
	}
	srv, err := Mount(dir, files, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Unmount(); err != nil {
			t.Errorf("unmount: %v", err)
		}
	})
	return dir
}

func needFUSE(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		if imgtest.InCI() {
			t.Fatalf("FUSE is needed under CI=true: %v", err)
		}
		t.Skipf("no FUSE: %v", err)
	}
	if os.Geteuid() != 0 {
		imgtest.Need(t, "fusermount3")
	}
}

func TestMountAttrs(t *testing.T) {
	s := newSynthetic(t, 32*align+777, 1)
	start := time.Unix(1700000000, 123456789)
	dir := mountT(t, []File{
		{Name: "disk.img", Stream: s.stream()},
		{Name: "header.img", Stream: stream.New(bytes.NewReader(nil), 0, freemap.NewBuilder(0).Map())},
	}, Options{Time: start})

	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 2 || ents[0].Name() != "disk.img" || ents[1].Name() != "header.img" {
		t.Fatalf("directory lists %v, want disk.img, header.img", ents)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode != syscall.S_IFDIR|0555 {
		t.Errorf("root mode %o, want dir 0555", st.Mode)
	}
	for name, size := range map[string]int64{"disk.img": int64(len(s.data)), "header.img": 0} {
		if err := syscall.Stat(filepath.Join(dir, name), &st); err != nil {
			t.Fatal(err)
		}
		if st.Mode != syscall.S_IFREG|0444 || st.Size != size || st.Uid != uint32(os.Getuid()) {
			t.Errorf("%s: mode %o size %d uid %d, want file 0444 size %d uid %d", name, st.Mode, st.Size, st.Uid, size, os.Getuid())
		}
		for what, ts := range map[string]syscall.Timespec{"mtime": st.Mtim, "ctime": st.Ctim} {
			if got := time.Unix(ts.Unix()); !got.Equal(start) {
				t.Errorf("%s %s = %v, want the mount's start %v", name, what, got, start)
			}
		}
	}
	if _, err := os.OpenFile(filepath.Join(dir, "disk.img"), os.O_RDWR, 0); err == nil {
		t.Error("opened disk.img for writing")
	}
	if err := os.WriteFile(filepath.Join(dir, "new"), nil, 0o644); err == nil {
		t.Error("created a file on the read-only mount")
	}
}

// TestMountSubdir serves files whose names hold a directory (lv/...): the
// directory is read-only, lists its files, and they read like any other.
func TestMountSubdir(t *testing.T) {
	s := newSynthetic(t, 24*align, 7)
	start := time.Unix(1700000000, 5)
	dir := mountT(t, []File{
		{Name: "disk.img", Stream: s.stream()},
		{Name: "lv/vg-root.img", Stream: s.stream()},
		{Name: "lv/vg-home.img", Stream: s.stream()},
	}, Options{Time: start})
	ents, err := os.ReadDir(filepath.Join(dir, "lv"))
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 2 || ents[0].Name() != "vg-home.img" || ents[1].Name() != "vg-root.img" {
		t.Fatalf("lv lists %v", ents)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(dir, "lv"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode != syscall.S_IFDIR|0555 || !time.Unix(st.Mtim.Unix()).Equal(start) {
		t.Errorf("lv: mode %o mtime %v", st.Mode, time.Unix(st.Mtim.Unix()))
	}
	got, err := os.ReadFile(filepath.Join(dir, "lv", "vg-root.img"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, s.want()) {
		t.Fatal("lv/vg-root.img differs from its stream")
	}
	if err := os.Mkdir(filepath.Join(dir, "lv", "x"), 0o755); err == nil {
		t.Error("made a directory on the read-only mount")
	}
}

func TestMountRead(t *testing.T) {
	s := newSynthetic(t, 32*align+777, 2)
	want := s.want()
	size := int64(len(want))
	dir := mountT(t, []File{{Name: "disk.img", Stream: s.stream()}}, Options{})
	f, err := os.Open(filepath.Join(dir, "disk.img"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	got, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("sequential read differs from the zeroed stream (%d bytes, want %d)", len(got), len(want))
	}
	cases := []struct {
		name     string
		off, n   int64
		wantRead int64
	}{
		{"start", 0, 4096, 4096},
		{"unaligned", 12345, 100000, 100000},
		{"across free edge", 3*align - 10, 20, 20},
		{"1MiB", 5 * align, align, align},
		{"2MiB split by kernel", 10*align + 1, 2 * align, 2 * align},
		{"across EOF", size - 100, 4096, 100},
		{"at EOF", size, 4096, 0},
		{"past EOF", size + 1<<30, 4096, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			buf := make([]byte, c.n)
			n, err := f.ReadAt(buf, c.off)
			if int64(n) != c.wantRead {
				t.Fatalf("read %d bytes (%v), want %d", n, err, c.wantRead)
			}
			if err != nil && err != io.EOF {
				t.Fatal(err)
			}
			if n > 0 && !bytes.Equal(buf[:n], want[c.off:c.off+int64(n)]) {
				t.Fatal("bytes differ from the zeroed stream")
			}
		})
	}
}

func TestMountLseek(t *testing.T) {
	s := newSynthetic(t, 32*align+777, 3)
	size := int64(len(s.data))
	dir := mountT(t, []File{{Name: "disk.img", Stream: s.stream()}}, Options{})
	f, err := os.Open(filepath.Join(dir, "disk.img"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	holes := s.free.Aligned(align)
	if got := len(holes.Extents()); got != 4 {
		t.Fatalf("synthetic map has %d aligned holes, want 4: %v", got, holes.Extents())
	}
	for off := int64(0); off < size+2*align; off += 4096 * 31 {
		wantData, dataOK := holes.NextData(off)
		got, err := f.Seek(off, 3) // SEEK_DATA
		switch {
		case off >= size || !dataOK:
			if !errors.Is(err, syscall.ENXIO) {
				t.Fatalf("SEEK_DATA %d = %d, %v; want ENXIO", off, got, err)
			}
		case err != nil || got != wantData:
			t.Fatalf("SEEK_DATA %d = %d, %v; want %d", off, got, err, wantData)
		}
		got, err = f.Seek(off, 4) // SEEK_HOLE
		switch {
		case off >= size:
			if !errors.Is(err, syscall.ENXIO) {
				t.Fatalf("SEEK_HOLE %d = %d, %v; want ENXIO", off, got, err)
			}
		case err != nil || got != holes.NextHole(off):
			t.Fatalf("SEEK_HOLE %d = %d, %v; want %d", off, got, err, holes.NextHole(off))
		}
	}
	// A hole is reported only where whole windows are free.
	if got, _ := f.Seek(9*align, 4); got != 12*align {
		t.Errorf("SEEK_HOLE in a free run shorter than a window = %d, want %d (the next window)", got, 12*align)
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	if want := (size - holes.FreeBytes() + 511) / 512; st.Blocks != want {
		t.Errorf("st_blocks %d, want %d (bytes outside holes)", st.Blocks, want)
	}
}

func TestMountConcurrent(t *testing.T) {
	s := newSynthetic(t, 24*align+4321, 4)
	want := s.want()
	dir := mountT(t, []File{{Name: "disk.img", Stream: s.stream()}}, Options{})
	var wg sync.WaitGroup
	var bad atomic.Int32
	for g := range 8 {
		wg.Go(func() {
			f, err := os.Open(filepath.Join(dir, "disk.img"))
			if err != nil {
				t.Error(err)
				return
			}
			defer f.Close()
			rng := rand.New(rand.NewPCG(uint64(g), 7))
			buf := make([]byte, 2*align)
			for range 200 {
				off := rng.Int64N(int64(len(want)))
				n := rng.IntN(len(buf)) + 1
				k, err := f.ReadAt(buf[:n], off)
				if err != nil && err != io.EOF {
					t.Error(err)
					return
				}
				if !bytes.Equal(buf[:k], want[off:off+int64(k)]) || (k < n && off+int64(k) != int64(len(want))) {
					bad.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if bad.Load() > 0 {
		t.Fatalf("%d concurrent reads returned wrong bytes", bad.Load())
	}
}

func TestMountCheckFails(t *testing.T) {
	s := newSynthetic(t, 8*align, 5)
	var changed atomic.Bool
	var logged atomic.Int32
	dir := mountT(t, []File{{Name: "disk.img", Stream: s.stream()}}, Options{
		Check: func() error {
			if changed.Load() {
				return errors.New("source changed")
			}
			return nil
		},
		Logf: func(string, ...any) { logged.Add(1) },
	})
	f, err := os.Open(filepath.Join(dir, "disk.img"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	if _, err := f.ReadAt(buf, 0); err != nil {
		t.Fatalf("read before the change: %v", err)
	}
	changed.Store(true)
	for range 3 {
		if _, err := f.ReadAt(buf, 0); !errors.Is(err, syscall.EIO) {
			t.Fatalf("read after the change: %v, want EIO", err)
		}
	}
	changed.Store(false)
	if _, err := f.ReadAt(buf, 0); !errors.Is(err, syscall.EIO) {
		t.Fatalf("read after the check recovered: %v, want EIO (failure is sticky)", err)
	}
	if logged.Load() != 1 {
		t.Errorf("logged %d times, want once", logged.Load())
	}
}

func TestNewRootRejects(t *testing.T) {
	r := stream.New(bytes.NewReader(nil), 0, freemap.NewBuilder(0).Map())
	for _, c := range []struct {
		name  string
		files []File
		opts  Options
	}{
		{"absolute", []File{{Name: "/a", Stream: r}}, Options{}},
		{"dotdot", []File{{Name: "lv/../a", Stream: r}}, Options{}},
		{"empty component", []File{{Name: "lv//a", Stream: r}}, Options{}},
		{"file is a dir", []File{{Name: "lv", Stream: r}, {Name: "lv/a", Stream: r}}, Options{}},
		{"dir is a file", []File{{Name: "lv/a", Stream: r}, {Name: "lv", Stream: r}}, Options{}},
		{"dup", []File{{Name: "a", Stream: r}, {Name: "a", Stream: r}}, Options{}},
		{"nil stream", []File{{Name: "a"}}, Options{}},
		{"bad align", []File{{Name: "a", Stream: r}}, Options{HoleAlign: 1000}},
	} {
		if _, err := NewRoot(c.files, c.opts); err == nil {
			t.Errorf("%s: NewRoot accepted it", c.name)
		}
	}
}

// recorder is a source that remembers the largest read it served.
type recorder struct {
	io.ReaderAt
	max atomic.Int64
}

func (r *recorder) ReadAt(p []byte, off int64) (int, error) {
	for {
		m := r.max.Load()
		if int64(len(p)) <= m || r.max.CompareAndSwap(m, int64(len(p))) {
			break
		}
	}
	return r.ReaderAt.ReadAt(p, off)
}

// Direct I/O with 1 MiB requests: a 4 MiB read(2) reaches the stream as
// 1 MiB reads, and st_blksize tells cat and cp to use 1 MiB buffers.
func TestMountRequestSize(t *testing.T) {
	s := newSynthetic(t, 8*align, 6)
	rec := &recorder{ReaderAt: bytes.NewReader(s.data)}
	r := stream.New(rec, int64(len(s.data)), freemap.NewBuilder(int64(len(s.data))).Map())
	dir := mountT(t, []File{{Name: "disk.img", Stream: r}}, Options{})
	f, err := os.Open(filepath.Join(dir, "disk.img"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4*maxRequest)
	if _, err := io.ReadFull(f, buf); err != nil {
		t.Fatal(err)
	}
	if got := rec.max.Load(); got != maxRequest {
		t.Errorf("largest request %d bytes, want %d", got, maxRequest)
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	if st.Blksize != ioBlockSize {
		t.Errorf("st_blksize %d, want %d", st.Blksize, ioBlockSize)
	}
}

// Direct I/O files can still be mapped (shared, read-only), where the
// kernel allows it.
func TestMountMmap(t *testing.T) {
	s := newSynthetic(t, 8*align+100, 8)
	want := s.want()
	dir := mountT(t, []File{{Name: "disk.img", Stream: s.stream()}}, Options{})
	f, err := os.Open(filepath.Join(dir, "disk.img"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := syscall.Mmap(int(f.Fd()), 0, len(want), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		t.Fatalf("mmap: %v", err)
	}
	defer syscall.Munmap(m)
	if !bytes.Equal(m, want) {
		t.Fatal("mapped bytes differ from the zeroed stream")
	}
}
