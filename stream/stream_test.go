package stream

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand"
	"testing"
	"testing/iotest"

	"github.com/prezero/prezero/freemap"
)

// countingReader records the bytes read from the source.
type countingReader struct {
	r    io.ReaderAt
	read int64
}

func (c *countingReader) ReadAt(p []byte, off int64) (int, error) {
	c.read += int64(len(p))
	return c.r.ReadAt(p, off)
}

func randomCase(rng *rand.Rand, size int) ([]byte, *freemap.Map, []byte) {
	src := make([]byte, size)
	rng.Read(src)
	b := freemap.NewBuilder(int64(size))
	want := append([]byte(nil), src...)
	for k := rng.Intn(8); k > 0; k-- {
		off, n := rng.Intn(size), rng.Intn(size/4+1)
		b.Add(int64(off), int64(n))
		for i := off; i < min(off+n, size); i++ {
			want[i] = 0
		}
	}
	return src, b.Map(), want
}

func TestReadAt(t *testing.T) {
	rng := rand.New(rand.NewSource(2))
	for iter := 0; iter < 100; iter++ {
		size := 1 + rng.Intn(5000)
		src, m, want := randomCase(rng, size)
		r := New(bytes.NewReader(src), int64(size), m)
		if err := iotest.TestReader(io.NewSectionReader(r, 0, r.Size()), want); err != nil {
			t.Fatalf("iter %d: %v", iter, err)
		}
		var out bytes.Buffer
		if n, err := Copy(context.Background(), &out, r); err != nil || n != int64(size) || !bytes.Equal(out.Bytes(), want) {
			t.Fatalf("Copy: n=%d err=%v equal=%v", n, err, bytes.Equal(out.Bytes(), want))
		}
	}
}

func TestFreeRangesAreNotRead(t *testing.T) {
	src := make([]byte, 1<<20)
	b := freemap.NewBuilder(int64(len(src)))
	b.Add(4096, 1<<19)
	c := &countingReader{r: bytes.NewReader(src)}
	r := New(c, int64(len(src)), b.Map())
	if _, err := Copy(context.Background(), io.Discard, r); err != nil {
		t.Fatal(err)
	}
	if want := int64(len(src) - 1<<19); c.read != want {
		t.Fatalf("read %d bytes of the source, want %d", c.read, want)
	}
}

func TestShortSource(t *testing.T) {
	// A source shorter than the stream (a truncated image) is an error,
	// never zeros.
	r := New(bytes.NewReader(make([]byte, 100)), 200, freemap.NewBuilder(200).Map())
	buf := make([]byte, 200)
	if _, err := r.ReadAt(buf, 0); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("err = %v, want ErrUnexpectedEOF", err)
	}
	if _, err := r.ReadAt(buf, -1); err == nil {
		t.Fatal("negative offset accepted")
	}
}

func TestCopyCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r := New(bytes.NewReader(make([]byte, 3*CopyBufSize)), 3*CopyBufSize, nil)
	if _, err := Copy(ctx, io.Discard, r); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
}
