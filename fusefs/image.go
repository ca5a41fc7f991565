package fusefs

import (
	"context"
	"io"
	"math"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/prezero/prezero/freemap"
	"github.com/prezero/prezero/stream"
)

// imageFile is one read-only image file: a stream and its aligned holes.
type imageFile struct {
	fs.Inode

	r      *stream.Reader
	holes  *freemap.Map // r.Free() keeping only whole aligned windows
	time   time.Time
	health *health
}

var (
	_ = (fs.NodeGetattrer)((*imageFile)(nil))
	_ = (fs.NodeOpener)((*imageFile)(nil))
	_ = (fs.NodeReader)((*imageFile)(nil))
	_ = (fs.NodeLseeker)((*imageFile)(nil))
)

// ioBlockSize is st_blksize: cat, cp and dd pick their buffer from it.
const ioBlockSize = maxRequest

// Getattr reports a 0444 file; st_blocks counts the bytes outside holes.
func (f *imageFile) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = 0444
	out.Nlink = 1
	out.Size = uint64(f.r.Size())
	out.Blksize = ioBlockSize
	out.Blocks = uint64(f.r.Size()-f.holes.FreeBytes()+511) / 512
	setTimes(&out.Attr, f.time)
	return 0
}

// Open refuses writing and asks for direct I/O: each read(2) reaches Read
// at the caller's size (up to 1 MiB) instead of through the page cache.
func (f *imageFile) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if flags&(syscall.O_WRONLY|syscall.O_RDWR|syscall.O_TRUNC|syscall.O_APPEND) != 0 {
		return nil, 0, syscall.EROFS
	}
	return nil, fuse.FOPEN_DIRECT_IO, 0
}

// Read serves dest from the zeroing reader. Reads at or past the end return
// no bytes (EOF); a failed source read or a failed Check returns EIO.
func (f *imageFile) Read(ctx context.Context, fh fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if off < 0 {
		return nil, syscall.EINVAL
	}
	if off >= f.r.Size() {
		return fuse.ReadResultData(nil), 0
	}
	n, err := f.r.ReadAt(dest, off)
	if err != nil && err != io.EOF {
		f.health.log("reading %d bytes at %d: %v", len(dest), off, err)
		return nil, syscall.EIO
	}
	// Checked after the read: a change that began before it or during it
	// has moved the source's mtime or write counters by now.
	if !f.health.ok() {
		return nil, syscall.EIO
	}
	return fuse.ReadResultData(dest[:n]), 0
}

// whence values the kernel forwards; it answers SEEK_SET/CUR/END itself.
const (
	seekData = 3
	seekHole = 4
)

// Lseek answers SEEK_DATA and SEEK_HOLE from the aligned holes, as
// lseek(2) does: ENXIO at or past the end, and for SEEK_DATA in a hole
// that reaches the end; the end itself counts as a hole.
func (f *imageFile) Lseek(ctx context.Context, fh fs.FileHandle, off uint64, whence uint32) (uint64, syscall.Errno) {
	if off >= math.MaxInt64 || int64(off) >= f.r.Size() {
		return 0, syscall.ENXIO
	}
	switch whence {
	case seekData:
		d, ok := f.holes.NextData(int64(off))
		if !ok {
			return 0, syscall.ENXIO
		}
		return uint64(d), 0
	case seekHole:
		return uint64(f.holes.NextHole(int64(off))), 0
	}
	return 0, syscall.EINVAL
}
