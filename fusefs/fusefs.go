// Package fusefs serves prezero's streams as a read-only FUSE filesystem: a
// directory of image files (disk.img, header.img, part1.img, ...; a name
// with slashes, such as lv/vg-root.img, puts the file in a subdirectory),
// each backed by a stream.Reader. It is a consumer at the end of the pipeline and
// knows no filesystem: what reads as zeros is decided by the streams' maps.
//
// Rules: every byte is read through stream.Reader.ReadAt (the one zeroing
// reader); lseek(SEEK_HOLE) reports only whole HoleAlign-sized windows of
// free space, so that borg's fixed chunker keeps its chunk boundaries; every
// node has the mount's start time as mtime and ctime, so that each mount is
// new to borg's files cache; once Check fails, every read fails with EIO.
package fusefs

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/prezero/prezero/stream"
)

// DefaultHoleAlign matches borg's --chunker-params fixed,4194304.
const DefaultHoleAlign = 4 << 20

// maxRequest is the largest read the kernel sends: 1 MiB requests with
// FOPEN_DIRECT_IO read about 2.5x faster than the 128 KiB default.
const maxRequest = 1 << 20

// cacheTimeout is how long the kernel may trust names and attributes.
// Nothing changes during a mount (a changed source makes reads fail), and
// go-fuse uses 0 whenever fs.Options is given without timeouts.
const cacheTimeout = time.Hour

// File is one file of the mount.
type File struct {
	Name   string // a relative path: "disk.img", or "lv/vg-root.img"
	Stream *stream.Reader
}

// Options configure a mount.
type Options struct {
	// HoleAlign is the window size of the holes SEEK_HOLE reports.
	// Zero means DefaultHoleAlign.
	HoleAlign int64
	// Time is every node's mtime and ctime. Zero means time.Now().
	Time time.Time
	// Check is called after every read, if set. When it returns an error,
	// that read and every later one fail with EIO and the error is logged
	// once. It must be safe for concurrent use.
	Check func() error
	// Logf receives errors that cannot be returned, if set.
	Logf func(format string, args ...any)
	// FsName is shown as the mount's source in /proc/self/mountinfo.
	FsName string
	// AllowOther lets other users than the one mounting read the files.
	AllowOther bool
	// Debug logs every FUSE request.
	Debug bool
}

// FSType is the filesystem type shown in /proc/self/mountinfo.
const FSType = "fuse.prezero"

// Mount mounts files read-only on dir and starts serving them. As root it
// mounts directly; otherwise it goes through fusermount3. The caller ends
// the mount with Unmount (or waits for an outside umount with Wait).
func Mount(dir string, files []File, opts Options) (*fuse.Server, error) {
	root, err := NewRoot(files, opts)
	if err != nil {
		return nil, err
	}
	server, err := fs.Mount(dir, root, root.fsOptions())
	if err != nil {
		return nil, fmt.Errorf("mounting on %s: %w", dir, err)
	}
	return server, nil
}

// fsOptions returns go-fuse's options for the mount.
func (r *Root) fsOptions() *fs.Options {
	t := cacheTimeout
	mo := fuse.MountOptions{
		FsName:       strings.NewReplacer(",", "_", " ", "_").Replace(r.opts.FsName),
		Name:         "prezero",
		AllowOther:   r.opts.AllowOther,
		MaxWrite:     maxRequest,
		MaxReadAhead: maxRequest,
		Debug:        r.opts.Debug,
		// Replies are built in memory; splicing them through a pipe only
		// adds copies, and 1 MiB replies do not fit the default pipe.
		DisableSplice: true,
		// Let programs mmap the files despite FOPEN_DIRECT_IO (Linux 6.6+).
		ExtraCapabilities: fuse.CAP_DIRECT_IO_ALLOW_MMAP,
		Options:           []string{"default_permissions"},
	}
	if os.Geteuid() == 0 {
		// mount(2) wants read-only as a flag, fusermount3 as "-o ro".
		mo.DirectMount = true
		mo.DirectMountFlags = syscall.MS_NOSUID | syscall.MS_NODEV | syscall.MS_RDONLY
	} else {
		mo.Options = append(mo.Options, "ro")
	}
	return &fs.Options{
		MountOptions:    mo,
		EntryTimeout:    &t,
		AttrTimeout:     &t,
		NegativeTimeout: &t,
		UID:             uint32(os.Getuid()),
		GID:             uint32(os.Getgid()),
	}
}

// health makes Check's first failure sticky and logs it once.
type health struct {
	check func() error
	logf  func(format string, args ...any)

	mu  sync.Mutex
	err error
}

// ok reports whether reads may still be served, running the check.
func (h *health) ok() bool {
	h.mu.Lock()
	failed := h.err != nil
	h.mu.Unlock()
	if failed {
		return false
	}
	if h.check == nil {
		return true
	}
	err := h.check()
	if err == nil {
		return true
	}
	h.mu.Lock()
	first := h.err == nil
	if first {
		h.err = err
	}
	h.mu.Unlock()
	if first {
		h.log("%v; every read now fails with EIO: unmount and mount again", err)
	}
	return false
}

func (h *health) log(format string, args ...any) {
	if h.logf != nil {
		h.logf(format, args...)
	}
}
