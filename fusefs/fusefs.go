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
	"cmp"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/prezero/prezero/borg"
	"github.com/prezero/prezero/internal/mounttab"
	"github.com/prezero/prezero/stream"
)

// DefaultHoleAlign is borg.ChunkSize, the fixed chunk size prezero gives
// borg, so that holes start and end on chunk boundaries.
const DefaultHoleAlign = borg.ChunkSize

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
	// FsName is shown as the mount's source in /proc/self/mountinfo,
	// byte for byte: the path of the source file, so that checks for a
	// file in use find the mount.
	FsName string
	// RemoveDir says the mount point is a temporary directory: if this
	// process dies while the mount is up, the watchdog removes it (rmdir)
	// after the unmount.
	RemoveDir bool
	// AllowOther lets other users than the one mounting read the files.
	AllowOther bool
	// Debug logs every FUSE request.
	Debug bool
}

// FSType is the filesystem type shown in /proc/self/mountinfo.
const FSType = "fuse." + subtype

const subtype = "prezero"

// Server is a mount being served.
type Server struct {
	dir   string
	srv   *fuse.Server
	guard *watchdog
	done  chan struct{} // closed once the mount is gone and serving has ended
}

// Mount mounts files read-only on dir and starts serving them. As root it
// mounts with mount(2); otherwise it goes through fusermount3. The
// caller ends the mount with Unmount (or waits for an outside umount with
// Wait).
//
// The mount cannot outlive its server: no child process inherits the
// /dev/fuse descriptor (it is close-on-exec from the start), and a
// watchdog process unmounts it if this process dies without unmounting
// (and, with Options.RemoveDir, removes dir).
func Mount(dir string, files []File, opts Options) (*Server, error) {
	root, err := NewRoot(files, opts)
	if err != nil {
		return nil, err
	}
	// The watchdog compares the mount point with mountinfo's, which has
	// no symlinks.
	if dir, err = filepath.Abs(dir); err == nil {
		dir, err = filepath.EvalSymlinks(dir)
	}
	if err != nil {
		return nil, fmt.Errorf("mount point: %w", err)
	}
	fsName := cmp.Or(opts.FsName, subtype) // the kernel wants a source
	guard, err := startWatchdog(dir, fsName, opts.RemoveDir)
	if err != nil {
		return nil, err
	}
	fo := root.fsOptions()
	err = guard.mounting()
	fd := -1
	if err == nil {
		fd, err = kernelMount(dir, mountParams{
			fsName:     fsName,
			subtype:    subtype,
			maxRead:    fo.MaxWrite,
			allowOther: opts.AllowOther,
		})
	}
	if err != nil {
		guard.disarm()
		return nil, fmt.Errorf("mounting on %s: %w", dir, err)
	}
	// Arm the watchdog at once: from now on a mount may be left behind.
	err = armWith(guard, dir)
	// go-fuse serves a descriptor it is handed as the mount point
	// /dev/fd/N; it then never unmounts by itself (Unmount does).
	var srv *fuse.Server
	if err == nil {
		srv, err = fs.Mount("/dev/fd/"+strconv.Itoa(fd), root, fo)
	}
	if err != nil {
		Unmount(dir, true)
		if srv == nil {
			unix.Close(fd)
		}
		guard.disarm()
		return nil, fmt.Errorf("serving the mount on %s: %w", dir, err)
	}
	pollHack(dir)
	s := &Server{dir: dir, srv: srv, guard: guard, done: make(chan struct{})}
	go func() {
		srv.Wait()
		guard.disarm()
		close(s.done)
	}()
	return s, nil
}

// armWith tells the watchdog the device number of the mount on dir.
func armWith(g *watchdog, dir string) error {
	ms, err := mounttab.Read(mounttab.Path)
	if err != nil {
		return err
	}
	m, ok := mounttab.Top(ms, dir)
	if !ok || m.FSType != FSType {
		return fmt.Errorf("%s: the new mount is not in the mount table", dir)
	}
	return g.arm(m.Dev)
}

// Dir returns the mount point: absolute, without symlinks.
func (s *Server) Dir() string { return s.dir }

// Wait returns when the mount is gone, whoever unmounted it, and serving
// has ended.
func (s *Server) Wait() { <-s.done }

// Unmount unmounts; if files are still open on the mount it detaches it
// lazily, so that the mount disappears now and serving ends when the last
// file is closed (Wait tells when). Unmounting a mount already gone is
// not an error.
func (s *Server) Unmount() error {
	var err error
	delay := 5 * time.Millisecond
	for try := 0; try < 5; try++ {
		if s.gone() {
			return nil
		}
		// Files just closed may still count for a moment.
		if err = Unmount(s.dir, false); err == nil || !errors.Is(err, syscall.EBUSY) {
			break
		}
		time.Sleep(delay)
		delay *= 2
	}
	if err == nil {
		return nil
	}
	if lerr := Unmount(s.dir, true); lerr != nil && !s.gone() {
		return fmt.Errorf("unmounting %s: %w; lazy unmount: %w", s.dir, err, lerr)
	}
	return nil
}

func (s *Server) gone() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// fsOptions returns go-fuse's options for the mount.
func (r *Root) fsOptions() *fs.Options {
	t := cacheTimeout
	mo := fuse.MountOptions{
		FsName:       r.opts.FsName,
		Name:         subtype,
		AllowOther:   r.opts.AllowOther,
		MaxWrite:     maxRequest,
		MaxReadAhead: maxRequest,
		Debug:        r.opts.Debug,
		// Replies are built in memory; splicing them through a pipe only
		// adds copies, and 1 MiB replies do not fit the default pipe.
		DisableSplice: true,
		// Let programs mmap the files despite FOPEN_DIRECT_IO (Linux 6.6+).
		ExtraCapabilities: fuse.CAP_DIRECT_IO_ALLOW_MMAP,
		// For the record: Mount makes the read-only mount itself (see
		// kernelMount) and hands go-fuse its descriptor.
		Options: []string{"default_permissions", "ro"},
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
