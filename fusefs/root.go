package fusefs

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// Root is the mount's only directory. The tree is built once, in OnAdd.
type Root struct {
	fs.Inode

	files  []File
	opts   Options
	health *health
}

var (
	_ = (fs.NodeOnAdder)((*Root)(nil))
	_ = (fs.NodeGetattrer)((*Root)(nil))
	_ = (fs.NodeStatfser)((*Root)(nil))
)

// NewRoot checks files and options and returns the root node of a mount;
// Mount uses it, tests can serve it without mounting.
func NewRoot(files []File, opts Options) (*Root, error) {
	if opts.HoleAlign == 0 {
		opts.HoleAlign = DefaultHoleAlign
	}
	if opts.HoleAlign < 512 || opts.HoleAlign%512 != 0 {
		return nil, fmt.Errorf("hole alignment %d: give a positive multiple of 512 bytes, such as 4MiB", opts.HoleAlign)
	}
	if opts.Time.IsZero() {
		opts.Time = time.Now()
	}
	seen := map[string]bool{}
	for _, f := range files {
		if f.Name == "" || f.Name == "." || f.Name == ".." || strings.ContainsRune(f.Name, '/') || seen[f.Name] {
			return nil, fmt.Errorf("bad or duplicate file name %q", f.Name)
		}
		if f.Stream == nil {
			return nil, fmt.Errorf("file %q has no stream", f.Name)
		}
		seen[f.Name] = true
	}
	return &Root{files: files, opts: opts, health: &health{check: opts.Check, logf: opts.Logf}}, nil
}

// OnAdd adds one imageFile per File, with stable inode numbers.
func (r *Root) OnAdd(ctx context.Context) {
	for i, f := range r.files {
		img := &imageFile{
			r:      f.Stream,
			holes:  f.Stream.Free().Aligned(r.opts.HoleAlign),
			time:   r.opts.Time,
			health: r.health,
		}
		ch := r.NewPersistentInode(ctx, img, fs.StableAttr{Mode: fuse.S_IFREG, Ino: uint64(i) + 2})
		r.AddChild(f.Name, ch, false)
	}
}

// Getattr reports a read-only directory.
func (r *Root) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = 0555
	out.Nlink = 2
	setTimes(&out.Attr, r.opts.Time)
	return 0
}

// Statfs reports the total size of the files, none of it free.
func (r *Root) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	var total uint64
	for _, f := range r.files {
		total += uint64(f.Stream.Size())
	}
	out.Bsize = 4096
	out.Frsize = 4096
	out.Blocks = (total + 4095) / 4096
	out.Files = uint64(len(r.files)) + 1
	out.NameLen = 255
	return 0
}

// setTimes sets all three times of a to t, to the nanosecond.
func setTimes(a *fuse.Attr, t time.Time) {
	sec, nsec := uint64(t.Unix()), uint32(t.Nanosecond())
	a.Atime, a.Mtime, a.Ctime = sec, sec, sec
	a.Atimensec, a.Mtimensec, a.Ctimensec = nsec, nsec, nsec
}
