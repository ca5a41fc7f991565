package jbd2

import (
	"errors"
	"io"
	"testing"
)

// zeroExtended reads b, then zeros up to size.
type zeroExtended struct {
	b    []byte
	size int64
}

func (z zeroExtended) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off >= z.size {
		return 0, io.EOF
	}
	n := 0
	if off < int64(len(z.b)) {
		n = copy(p, z.b[off:])
	}
	m := min(int64(len(p)), z.size-off)
	clear(p[n:m])
	if m < int64(len(p)) {
		return int(m), io.EOF
	}
	return int(m), nil
}

// FuzzRecover checks that Recover never panics on any journal, fails only
// with ErrRecovery or ErrUnsupported, and that what it returns is
// consistent: copies inside the journal, replayed copies only from the
// replayed transactions. Seeds: the synthetic journals of jcases, cut to
// their first 40 blocks so that mutations land on the log.
func FuzzRecover(f *testing.F) {
	for _, c := range jcases() {
		j := c.build()
		f.Add(j.buf[:min(len(j.buf), 40*c.o.bs)], uint16(0))
	}
	f.Fuzz(func(t *testing.T, data []byte, bs uint16) {
		bsize := 1024 << (bs % 3)
		// The journal is data followed by zeros up to 1024 blocks, so
		// that small inputs make a journal of legal size.
		size := max(int64(len(data)), int64(1024*bsize))
		l, err := Recover(zeroExtended{data, size}, size, bsize)
		if err != nil {
			if !errors.Is(err, ErrRecovery) && !errors.Is(err, ErrUnsupported) {
				t.Fatalf("error %v is neither ErrRecovery nor ErrUnsupported", err)
			}
			return
		}
		if l.Walked > int(l.MaxLen)+1 {
			t.Fatalf("walked %d blocks of a %d-block journal", l.Walked, l.MaxLen)
		}
		buf := make([]byte, bsize)
		for _, c := range l.Copies {
			if c.Pos == 0 || c.Pos >= l.MaxLen {
				t.Fatalf("copy at log block %d of %d", c.Pos, l.MaxLen)
			}
			if c.Replay && tidGEQ(c.Seq, l.End) {
				t.Fatalf("copy of transaction %d replayed, end %d", c.Seq, l.End)
			}
		}
		for _, c := range l.Final() {
			if err := l.ReadCopy(c, buf); err != nil {
				t.Fatal(err)
			}
		}
	})
}
