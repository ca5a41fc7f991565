// Package stream is the one place where prezero turns "unallocated" into
// zeros. A Reader serves a source's bytes inside allocated ranges and zeros
// inside the free extents of a freemap.Map, without reading the source there.
//
// In the pipeline it comes after the partition table and the per-filesystem
// parsers (extfsmap, ntfsmap, ...), which only build maps, and before every
// consumer (cat, the FUSE mount, borg, the benchmarks), which only read
// through it. It follows io.ReaderAt's contract exactly.
package stream

import (
	"io"

	"github.com/prezero/prezero/freemap"
)

// Reader is an io.ReaderAt over a zeroed volume. It is safe for concurrent
// use if the source is.
type Reader struct {
	src  io.ReaderAt
	size int64
	free *freemap.Map
}

// New returns a reader of size bytes that reads src except inside the free
// extents of free, which read as zeros. free.Size() must equal size.
func New(src io.ReaderAt, size int64, free *freemap.Map) *Reader {
	return &Reader{src: src, size: size, free: free}
}

// Size returns the stream's length in bytes.
func (r *Reader) Size() int64 { return r.size }

// Free returns the map of ranges that read as zeros.
func (r *Reader) Free() *freemap.Map { return r.free }

// ReadAt implements io.ReaderAt.
func (r *Reader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, &errNegativeOffset{}
	}
	if off >= r.size {
		return 0, io.EOF
	}
	want := len(p)
	if rem := r.size - off; int64(want) > rem {
		p = p[:rem]
	}
	n := 0
	for n < len(p) {
		pos := off + int64(n)
		chunk := p[n:]
		e, ok := r.free.Next(pos)
		switch {
		case ok && e.Off <= pos:
			// Inside a free extent: zeros, no source read.
			k := min(int64(len(chunk)), e.End()-pos)
			clear(chunk[:k])
			n += int(k)
		default:
			if ok && e.Off-pos < int64(len(chunk)) {
				chunk = chunk[:e.Off-pos]
			}
			k, err := r.src.ReadAt(chunk, pos)
			n += k
			if err != nil && !(err == io.EOF && k == len(chunk)) {
				if err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				return n, err
			}
		}
	}
	if n < want {
		return n, io.EOF
	}
	return n, nil
}

// NextData returns the first offset >= off that is not free, like
// lseek(SEEK_DATA). It returns ok=false if the rest of the stream is free.
func (r *Reader) NextData(off int64) (int64, bool) {
	return r.free.NextData(off)
}

// NextHole returns the first offset >= off that is free, or the stream's
// size if none is, like lseek(SEEK_HOLE).
func (r *Reader) NextHole(off int64) int64 {
	return r.free.NextHole(off)
}

type errNegativeOffset struct{}

func (*errNegativeOffset) Error() string { return "stream: negative offset" }
