package stream

import (
	"context"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// CopyBufSize is the size of each read and write in Copy: large requests
// keep both the source and a pipe busy.
const CopyBufSize = 4 << 20

// Copy writes all of r to w, reading the next buffer while the previous one
// is written. It stops early if ctx is cancelled.
func Copy(ctx context.Context, w io.Writer, r *Reader) (int64, error) {
	type chunk struct {
		buf []byte
		n   int
		err error
	}
	free := make(chan []byte, 2)
	full := make(chan chunk, 2)
	free <- make([]byte, CopyBufSize)
	free <- make([]byte, CopyBufSize)
	done := make(chan struct{})
	defer close(done)

	go func() {
		defer close(full)
		for off := int64(0); off < r.Size(); {
			var buf []byte
			select {
			case buf = <-free:
			case <-done:
				return
			}
			if err := ctx.Err(); err != nil {
				full <- chunk{err: err}
				return
			}
			n, err := r.ReadAt(buf, off)
			if err == io.EOF && off+int64(n) == r.Size() {
				err = nil
			}
			full <- chunk{buf, n, err}
			if err != nil {
				return
			}
			off += int64(n)
		}
	}()

	var written int64
	for c := range full {
		if c.n > 0 {
			n, err := w.Write(c.buf[:c.n])
			written += int64(n)
			if err != nil {
				return written, err
			}
		}
		if c.err != nil {
			return written, c.err
		}
		free <- c.buf
	}
	return written, nil
}

// GrowPipe enlarges the buffer of f if it is a pipe (F_SETPIPE_SZ, up to
// /proc/sys/fs/pipe-max-size, 1 MiB by default): with the default 64 KiB a
// pipe, not the disk, limits the speed of a stream through it (prezero cat
// into borg, borg extract into prezero restore). Other files are left alone.
func GrowPipe(f *os.File) {
	if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeNamedPipe != 0 {
		_, _ = unix.FcntlInt(f.Fd(), unix.F_SETPIPE_SZ, 1<<20)
	}
}
