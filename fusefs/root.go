package fusefs

import (
	"context"
	"fmt"
	"path"
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
		if !validPath(f.Name) || seen[f.Name] || seen[f.Name+"/"] {
			return nil, fmt.Errorf("bad or duplicate file name %q", f.Name)
		}
		// A file may not also be a directory of another's path.
		for dir := path.Dir(f.Name); dir != "."; dir = path.Dir(dir) {
			if seen[dir] {
				return nil, fmt.Errorf("file name %q is also a directory", dir)
			}
			seen[dir+"/"] = true
		}
		if f.Stream == nil {
			return nil, fmt.Errorf("file %q has no stream", f.Name)
		}
		seen[f.Name] = true
	}
	return &Root{files: files, opts: opts, health: &health{check: opts.Check, logf: opts.Logf}}, nil
}

// validPath reports whether name is a relative slash-separated path of
// non-empty components other than "." and "..".
func validPath(name string) bool {
	if name == "" {
		return false
	}
	for _, c := range strings.Split(name, "/") {
		if c == "" || c == "." || c == ".." {
			return false
		}
	}
	return true
}

// OnAdd adds one imageFile per File, and the read-only directories their
// names contain, with stable inode numbers.
func (r *Root) OnAdd(ctx context.Context) {
	nextDir := uint64(len(r.files)) + 2
	for i, f := range r.files {
		parent := &r.Inode
		parts := strings.Split(f.Name, "/")
		for _, d := range parts[:len(parts)-1] {
			ch := parent.GetChild(d)
			if ch == nil {
				ch = parent.NewPersistentInode(ctx, &dir{time: r.opts.Time}, fs.StableAttr{Mode: fuse.S_IFDIR, Ino: nextDir})
				nextDir++
				parent.AddChild(d, ch, false)
			}
			parent = ch
		}
		img := &imageFile{
			r:      f.Stream,
			holes:  f.Stream.Free().Aligned(r.opts.HoleAlign),
			time:   r.opts.Time,
			health: r.health,
		}
		ch := parent.NewPersistentInode(ctx, img, fs.StableAttr{Mode: fuse.S_IFREG, Ino: uint64(i) + 2})
		parent.AddChild(parts[len(parts)-1], ch, false)
	}
}

// dir is a read-only subdirectory of the mount.
type dir struct {
	fs.Inode
	time time.Time
}

var _ = (fs.NodeGetattrer)((*dir)(nil))

// Getattr reports a read-only directory.
func (d *dir) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = 0555
	out.Nlink = 2
	setTimes(&out.Attr, d.time)
	return 0
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
	out.Files = uint64(len(r.files)) + 1 // (and any subdirectories)
	out.NameLen = 255
	return 0
}

// setTimes sets all three times of a to t, to the nanosecond.
func setTimes(a *fuse.Attr, t time.Time) {
	sec, nsec := uint64(t.Unix()), uint32(t.Nanosecond())
	a.Atime, a.Mtime, a.Ctime = sec, sec, sec
	a.Atimensec, a.Mtimensec, a.Ctimensec = nsec, nsec, nsec
}
