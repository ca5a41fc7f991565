package restore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
)

// DefaultBlockSize is the unit of zero detection unless Options say otherwise.
const DefaultBlockSize = 4096

// bufSize is the size of each read from the stream, and so the largest single
// write: big requests keep both a pipe and the target busy.
const bufSize = 8 << 20

// Errors about the stream's length. They wrap into messages that name both
// lengths.
var (
	ErrTooLong = errors.New("stream is longer than the target")
	ErrShort   = errors.New("stream is shorter than expected")
	ErrLong    = errors.New("stream is longer than expected")
)

// target is what a Writer writes to: *Target, or a fake in tests.
type target interface {
	// WriteAt writes all of p at off, or returns an error.
	WriteAt(p []byte, off int64) (int, error)
	// Zero makes [off, off+n) read as zeros, adding what it did to st.
	Zero(ctx context.Context, off, n int64, st *Stats) error
	// MergeZeros is the length below which a run of zero blocks between
	// data blocks is written along with the data rather than zeroed apart.
	MergeZeros() int64
	// Finish ends the restore at size bytes: truncates a file, then syncs.
	Finish(size int64) error
}

// Options control a Writer.
type Options struct {
	// BlockSize is the unit of zero detection: a power of two from 512 to
	// 1 MiB. 0 means DefaultBlockSize.
	BlockSize int
	// AssumeZeroed skips zero runs entirely: the target must already read
	// as zeros everywhere the stream is zero.
	AssumeZeroed bool
	// Limit is the number of bytes the target can hold; a stream that would
	// pass it fails with ErrTooLong and nothing at or beyond Limit is
	// written. Negative means no limit (a regular file).
	Limit int64
}

// Stats says what a Writer did with the stream's bytes. Every byte of the
// target it covered is counted exactly once among Written, Zeroed,
// ZerosWritten, Holes and Skipped.
type Stats struct {
	In           int64 // bytes read from the stream(s)
	Written      int64 // bytes written with pwrite, including short zero runs merged into data
	MergedZeros  int64 // of Written: zero bytes written with the data around them
	Zeroed       int64 // zero bytes made by BLKZEROOUT or fallocate ZERO_RANGE
	ZerosWritten int64 // zero bytes written as zeros (no faster way, or a run too short)
	Holes        int64 // zero bytes left as holes in a regular file (punched or never written)
	Skipped      int64 // zero bytes skipped because the target was assumed zeroed
}

// Writer writes a stream to a target sequentially from offset 0, turning
// runs of zero blocks into holes or zeroing calls. It is used by one
// goroutine; Pos and In may be read from any goroutine (for progress).
type Writer struct {
	t    target
	opt  Options
	zero []byte // BlockSize zeros, to compare blocks against

	pos atomic.Int64 // bytes of the target covered so far
	in  atomic.Int64 // bytes read from streams so far

	zoff, zlen int64 // the pending run of zeros, not yet handed to the target
	st         Stats
}

// NewWriter returns a Writer over t. It checks opt.BlockSize.
func NewWriter(t target, opt Options) (*Writer, error) {
	if opt.BlockSize == 0 {
		opt.BlockSize = DefaultBlockSize
	}
	if err := CheckBlockSize(opt.BlockSize); err != nil {
		return nil, err
	}
	return &Writer{t: t, opt: opt, zero: make([]byte, opt.BlockSize)}, nil
}

// CheckBlockSize reports whether bs can be a Writer's BlockSize: a power
// of two from 512 to 1 MiB (bufSize is a multiple of it).
func CheckBlockSize(bs int) error {
	if bs < 512 || bs > 1<<20 || bs&(bs-1) != 0 {
		return fmt.Errorf("block size %d is not a power of two from 512 to 1 MiB", bs)
	}
	return nil
}

// Pos returns how many bytes of the target the Writer has covered.
func (w *Writer) Pos() int64 { return w.pos.Load() }

// In returns how many stream bytes the Writer has read.
func (w *Writer) In() int64 { return w.in.Load() }

// Stats returns the counts so far; they are final after Finish.
func (w *Writer) Stats() Stats {
	st := w.st
	st.In = w.in.Load()
	return st
}

// ReadFrom copies r to the target at the current position. If size is not
// negative, r must hold exactly size bytes: fewer is ErrShort, more is
// ErrLong (after the first size bytes were written, since r is read once).
// A reader goroutine reads ahead while the previous buffer is written.
func (w *Writer) ReadFrom(ctx context.Context, r io.Reader, size int64) (int64, error) {
	src := r
	if size >= 0 {
		src = io.LimitReader(r, size)
	}
	type chunk struct {
		b   []byte
		err error
	}
	const nbuf = 3
	free := make(chan []byte, nbuf)
	full := make(chan chunk, nbuf) // never blocks: at most nbuf buffers exist
	for range nbuf {
		free <- make([]byte, bufSize)
	}
	done := make(chan struct{})
	defer close(done)
	go func() {
		defer close(full)
		for {
			var b []byte
			select {
			case b = <-free:
			case <-done:
				return
			}
			n, err := io.ReadFull(src, b)
			if err == io.ErrUnexpectedEOF {
				err = io.EOF
			}
			full <- chunk{b[:n], err}
			if err != nil {
				return
			}
		}
	}()

	var in int64
	for {
		var c chunk
		select {
		case c = <-full:
		case <-ctx.Done():
			return in, ctx.Err()
		}
		if len(c.b) > 0 {
			if err := w.write(ctx, c.b); err != nil {
				return in, err
			}
			in += int64(len(c.b))
			w.in.Add(int64(len(c.b)))
		}
		if c.err == io.EOF {
			break
		}
		if c.err != nil {
			return in, c.err
		}
		if err := ctx.Err(); err != nil {
			return in, err
		}
		free <- c.b[:cap(c.b)]
	}
	if size < 0 {
		return in, nil
	}
	if in < size {
		return in, fmt.Errorf("%w: it ended after %d of %d bytes", ErrShort, in, size)
	}
	// Read once more: a longer stream is an error, and a command's stream
	// reports its exit status only at its end.
	var one [1]byte
	n, err := io.ReadFull(r, one[:])
	switch {
	case n > 0:
		return in, fmt.Errorf("%w: it has more than the %d bytes expected", ErrLong, size)
	case err != io.EOF:
		return in, err
	}
	return in, nil
}

// Write writes p at the current position, like one chunk of a stream.
func (w *Writer) Write(ctx context.Context, p []byte) error {
	if err := w.write(ctx, p); err != nil {
		return err
	}
	w.in.Add(int64(len(p)))
	return nil
}

// Zeros covers the next n bytes of the target with zeros, as if the stream
// held n zero bytes there (a gap between partitions).
func (w *Writer) Zeros(ctx context.Context, n int64) error {
	if n < 0 {
		return fmt.Errorf("internal error: %d zero bytes", n)
	}
	if err := w.checkLimit(n); err != nil {
		return err
	}
	if err := w.addZeros(ctx, w.pos.Load(), n); err != nil {
		return err
	}
	w.pos.Add(n)
	return nil
}

// Finish hands the last zero run to the target and ends it at the current
// position: a regular file is truncated there. It syncs the target.
func (w *Writer) Finish(ctx context.Context) error {
	if err := w.flushZeros(ctx); err != nil {
		return err
	}
	return w.t.Finish(w.pos.Load())
}

func (w *Writer) checkLimit(n int64) error {
	if w.opt.Limit >= 0 && w.pos.Load()+n > w.opt.Limit {
		return fmt.Errorf("%w: the target holds %d bytes, the stream passes %d", ErrTooLong, w.opt.Limit, w.pos.Load()+n)
	}
	return nil
}

// write splits p into runs of data blocks, which it writes, and runs of
// zero blocks, which it adds to the pending zero run. Short zero runs with
// data on both sides inside p are written with the data when the target
// prefers that (MergeZeros), keeping pwrite calls large.
func (w *Writer) write(ctx context.Context, p []byte) error {
	if err := w.checkLimit(int64(len(p))); err != nil {
		return err
	}
	off := w.pos.Load()
	bs := w.opt.BlockSize
	merge := w.t.MergeZeros()
	n := len(p)
	ds := -1 // start of the data run being gathered, or -1
	var merged int64
	for i := 0; i < n; {
		end := min(i+bs, n)
		if !w.isZero(p[i:end]) {
			if ds < 0 {
				ds = i
			}
			i = end
			continue
		}
		j := end
		for j < n {
			e := min(j+bs, n)
			if !w.isZero(p[j:e]) {
				break
			}
			j = e
		}
		if ds >= 0 && j < n && int64(j-i) < merge {
			merged += int64(j - i)
			i = j
			continue
		}
		if ds >= 0 {
			if err := w.writeData(ctx, p[ds:i], off+int64(ds)); err != nil {
				return err
			}
			ds = -1
		}
		if err := w.addZeros(ctx, off+int64(i), int64(j-i)); err != nil {
			return err
		}
		i = j
	}
	if ds >= 0 {
		if err := w.writeData(ctx, p[ds:], off+int64(ds)); err != nil {
			return err
		}
	}
	w.st.MergedZeros += merged
	w.pos.Add(int64(n))
	return nil
}

func (w *Writer) isZero(b []byte) bool { return bytes.Equal(b, w.zero[:len(b)]) }

func (w *Writer) writeData(ctx context.Context, p []byte, off int64) error {
	if err := w.flushZeros(ctx); err != nil {
		return err
	}
	if _, err := w.t.WriteAt(p, off); err != nil {
		return err
	}
	w.st.Written += int64(len(p))
	return nil
}

// addZeros extends the pending zero run by [off, off+n), handing the
// previous run to the target first if the two do not touch.
func (w *Writer) addZeros(ctx context.Context, off, n int64) error {
	if n == 0 {
		return nil
	}
	if w.zlen > 0 && w.zoff+w.zlen == off {
		w.zlen += n
		return nil
	}
	if err := w.flushZeros(ctx); err != nil {
		return err
	}
	w.zoff, w.zlen = off, n
	return nil
}

func (w *Writer) flushZeros(ctx context.Context) error {
	if w.zlen == 0 {
		return nil
	}
	off, n := w.zoff, w.zlen
	w.zoff, w.zlen = 0, 0
	if w.opt.AssumeZeroed {
		w.st.Skipped += n
		return nil
	}
	return w.t.Zero(ctx, off, n, &w.st)
}
