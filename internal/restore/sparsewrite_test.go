package restore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"testing/iotest"

	"golang.org/x/sys/unix"
)

// fakeTarget is a target in memory whose bytes start out stale (0xEE), so
// that any range the Writer forgets to cover shows.
type fakeTarget struct {
	img    []byte
	merge  int64
	writes [][2]int64 // off, len of each WriteAt
	zeros  [][2]int64 // off, len of each Zero
	size   int64      // passed to Finish, or -1
}

func newFake(capacity int, merge int64) *fakeTarget {
	return &fakeTarget{img: bytes.Repeat([]byte{0xEE}, capacity), merge: merge, size: -1}
}

func (f *fakeTarget) WriteAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > int64(len(f.img)) {
		return 0, fmt.Errorf("write at %d+%d past the fake's end %d", off, len(p), len(f.img))
	}
	f.writes = append(f.writes, [2]int64{off, int64(len(p))})
	return copy(f.img[off:], p), nil
}

func (f *fakeTarget) Zero(_ context.Context, off, n int64, st *Stats) error {
	if off+n > int64(len(f.img)) {
		return fmt.Errorf("zero at %d+%d past the fake's end %d", off, n, len(f.img))
	}
	f.zeros = append(f.zeros, [2]int64{off, n})
	clear(f.img[off : off+n])
	st.Zeroed += n
	return nil
}

func (f *fakeTarget) MergeZeros() int64 { return f.merge }

func (f *fakeTarget) Finish(size int64) error { f.size = size; return nil }

// seg builds a stream: data(n) is n random non-zero-ish bytes, zeros(n) n zeros.
type seg struct {
	zero bool
	n    int
}

func data(n int) seg  { return seg{false, n} }
func zeros(n int) seg { return seg{true, n} }

func build(r *rand.Rand, segs ...seg) []byte {
	var b []byte
	for _, s := range segs {
		if s.zero {
			b = append(b, make([]byte, s.n)...)
			continue
		}
		for range s.n {
			b = append(b, byte(r.IntN(255)+1))
		}
	}
	return b
}

func TestWriterFake(t *testing.T) {
	const K, M = 1 << 10, 1 << 20
	tests := []struct {
		name       string
		segs       []seg
		bs         int
		merge      int64
		assume     bool
		wantWrites int // -1: don't check
		wantZeros  int
	}{
		{"empty", nil, 0, 0, false, 0, 0},
		{"all data", []seg{data(3 * M)}, 0, 0, false, 1, 0},
		{"all zeros", []seg{zeros(3 * M)}, 0, 0, false, 0, 1},
		{"data zeros data", []seg{data(8 * K), zeros(64 * K), data(4 * K)}, 0, 0, false, 2, 1},
		{"leading and trailing zeros", []seg{zeros(8 * K), data(4 * K), zeros(12 * K)}, 0, 0, false, 1, 2},
		{"unaligned tail of data", []seg{data(5000)}, 0, 0, false, 1, 0},
		{"unaligned zero tail", []seg{data(4 * K), zeros(1000)}, 0, 0, false, 1, 1},
		{"one byte in a zero block is data", []seg{zeros(4095), data(1), zeros(8 * K)}, 0, 0, false, 1, 1},
		{"zero run not block aligned is data", []seg{data(100), zeros(8000), data(100)}, 0, 0, false, 1, 0},
		{"short gap merged", []seg{data(4 * K), zeros(8 * K), data(4 * K)}, 0, 64 * K, false, 1, 0},
		{"long gap not merged", []seg{data(4 * K), zeros(128 * K), data(4 * K)}, 0, 64 * K, false, 2, 1},
		{"edge gap not merged", []seg{zeros(8 * K), data(4 * K)}, 0, 64 * K, false, 1, 1},
		{"zeros across buffers coalesce", []seg{data(bufSize - 4*K), zeros(2*bufSize + 8*K), data(4 * K)}, 0, 0, false, 2, 1},
		{"data across buffers", []seg{data(bufSize + 4*K)}, 0, 0, false, 2, 0},
		{"block size 512", []seg{data(512), zeros(512), data(1024), zeros(4 * K)}, 512, 0, false, 2, 2},
		{"block size 1M", []seg{data(4 * K), zeros(M - 4*K), zeros(M), data(1)}, M, 0, false, 2, 1},
		{"assume zeroed", []seg{zeros(4 * K), data(4 * K), zeros(M)}, 0, 0, true, 1, 0},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			stream := build(rand.New(rand.NewPCG(uint64(i), 1)), tc.segs...)
			f := newFake(len(stream)+8192, tc.merge)
			w, err := NewWriter(f, Options{BlockSize: tc.bs, AssumeZeroed: tc.assume, Limit: -1})
			if err != nil {
				t.Fatal(err)
			}
			n, err := w.ReadFrom(context.Background(), iotest.HalfReader(bytes.NewReader(stream)), int64(len(stream)))
			if err != nil || n != int64(len(stream)) {
				t.Fatalf("ReadFrom = %d, %v; want %d, nil", n, err, len(stream))
			}
			if err := w.Finish(context.Background()); err != nil {
				t.Fatal(err)
			}
			if f.size != int64(len(stream)) {
				t.Errorf("Finish(%d), want %d", f.size, len(stream))
			}
			got := f.img[:len(stream)]
			if tc.assume {
				// Skipped ranges keep the fake's stale bytes: that is what
				// --assume-zeroed means. Compare the written ranges only.
				for _, wr := range f.writes {
					if !bytes.Equal(got[wr[0]:wr[0]+wr[1]], stream[wr[0]:wr[0]+wr[1]]) {
						t.Errorf("write at %d differs", wr[0])
					}
				}
			} else if !bytes.Equal(got, stream) {
				t.Errorf("target differs from the stream at byte %d", firstDiff(got, stream))
			}
			if !bytes.Equal(f.img[len(stream):], bytes.Repeat([]byte{0xEE}, 8192)) {
				t.Errorf("bytes after the stream's end were touched")
			}
			st := w.Stats()
			if cov := st.Written + st.Zeroed + st.ZerosWritten + st.Holes + st.Skipped; cov != int64(len(stream)) || st.In != int64(len(stream)) {
				t.Errorf("stats %+v cover %d bytes, want %d", st, cov, len(stream))
			}
			if tc.wantWrites >= 0 && len(f.writes) != tc.wantWrites {
				t.Errorf("%d writes %v, want %d", len(f.writes), f.writes, tc.wantWrites)
			}
			if len(f.zeros) != tc.wantZeros {
				t.Errorf("%d zero calls %v, want %d", len(f.zeros), f.zeros, tc.wantZeros)
			}
			for _, wr := range f.writes {
				if wr[1] > bufSize {
					t.Errorf("write of %d bytes exceeds the buffer", wr[1])
				}
			}
		})
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func TestWriterLengths(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	stream := build(r, data(10000), zeros(20000), data(5000))
	ctx := context.Background()
	tests := []struct {
		name    string
		size    int64 // expected length, -1 unknown
		limit   int64
		wantErr error
		written int64 // bytes of the target that may be covered at most
	}{
		{"exact", int64(len(stream)), -1, nil, int64(len(stream))},
		{"unknown", -1, -1, nil, int64(len(stream))},
		{"short", int64(len(stream)) + 1, -1, ErrShort, int64(len(stream))},
		{"long", int64(len(stream)) - 1, -1, ErrLong, int64(len(stream)) - 1},
		{"over limit", -1, int64(len(stream)) - 1, ErrTooLong, 0},
		{"at limit", -1, int64(len(stream)), nil, int64(len(stream))},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(len(stream)+4096, 0)
			w, err := NewWriter(f, Options{Limit: tc.limit})
			if err != nil {
				t.Fatal(err)
			}
			_, err = w.ReadFrom(ctx, bytes.NewReader(stream), tc.size)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			for _, wr := range append(f.writes, f.zeros...) {
				if wr[0]+wr[1] > tc.written {
					t.Errorf("covered %d+%d, beyond %d", wr[0], wr[1], tc.written)
				}
			}
		})
	}
}

func TestWriterReadError(t *testing.T) {
	boom := errors.New("boom")
	f := newFake(1<<20, 0)
	w, _ := NewWriter(f, Options{Limit: -1})
	r := io.MultiReader(bytes.NewReader(make([]byte, 5000)), iotest.ErrReader(boom))
	if _, err := w.ReadFrom(context.Background(), r, -1); !errors.Is(err, boom) {
		t.Fatalf("err = %v, want boom", err)
	}
}

func TestWriterCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	f := newFake(1<<20, 0)
	w, _ := NewWriter(f, Options{Limit: -1})
	pr, pw := io.Pipe() // never written: the read blocks
	defer pw.Close()
	if _, err := w.ReadFrom(ctx, pr, -1); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

func TestBlockSizeChecked(t *testing.T) {
	for _, bs := range []int{-1, 100, 511, 3000, 2 << 20} {
		if _, err := NewWriter(newFake(0, 0), Options{BlockSize: bs}); err == nil {
			t.Errorf("block size %d accepted", bs)
		}
	}
}

// TestFileTarget restores onto real files: a new one, and existing ones
// full of random bytes, longer and shorter than the stream.
func TestFileTarget(t *testing.T) {
	const K = 1 << 10
	r := rand.New(rand.NewPCG(3, 4))
	stream := build(r, data(12*K), zeros(1<<20), data(4*K), zeros(3<<20), data(100), zeros(5000))
	tests := []struct {
		name string
		old  int64 // existing file size filled with random bytes; -1: no file
	}{
		{"new", -1},
		{"existing longer", int64(len(stream)) + 5<<20},
		{"existing shorter", 1 << 20},
		{"existing empty", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "target.img")
			if tc.old >= 0 {
				b := make([]byte, tc.old)
				for i := range b {
					b[i] = byte(r.IntN(255) + 1)
				}
				if err := os.WriteFile(p, b, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			tg, err := Open(p, OpenOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer tg.Close()
			if tg.Kind != File || tg.Created != (tc.old < 0) {
				t.Fatalf("kind %v created %v", tg.Kind, tg.Created)
			}
			w, _ := NewWriter(tg, Options{Limit: -1})
			ctx := context.Background()
			if _, err := w.ReadFrom(ctx, bytes.NewReader(stream), int64(len(stream))); err != nil {
				t.Fatal(err)
			}
			if err := w.Finish(ctx); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, stream) {
				t.Fatalf("file (%d bytes) differs from the stream (%d bytes) at %d", len(got), len(stream), firstDiff(got, stream))
			}
			assertHoles(t, p, stream)
		})
	}
}

// assertHoles checks that every whole 4 KiB-aligned zero block of stream is
// a hole in the file at p (a partial last block may be allocated: punching
// cannot free part of a block), and its allocation is no more than its data.
func assertHoles(t *testing.T, p string, stream []byte) {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	var nonzero int64
	zero := make([]byte, 4096)
	for off := 0; off < len(stream); off += 4096 {
		b := stream[off:min(off+4096, len(stream))]
		if !bytes.Equal(b, zero[:len(b)]) {
			nonzero += 4096
			continue
		}
		if len(b) < 4096 {
			continue
		}
		d, err := unix.Seek(int(f.Fd()), int64(off), unix.SEEK_DATA)
		if err == nil && d == int64(off) {
			t.Fatalf("zero block at %d is allocated (SEEK_DATA found data there)", off)
		}
	}
	if alloc := st.Blocks * 512; alloc > nonzero+64<<10 {
		t.Errorf("file allocates %d bytes for %d non-zero bytes", alloc, nonzero)
	}
}
