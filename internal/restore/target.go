package restore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/prezero/prezero/internal/inuse"
)

// Kind is what a target is.
type Kind int

// The kinds of target.
const (
	File   Kind = iota // a regular file: zero runs become holes
	Device             // a block device: zero runs are zeroed by the kernel
)

func (k Kind) String() string {
	if k == Device {
		return "block device"
	}
	return "regular file"
}

// Errors Open returns, wrapped in messages that say what holds the target.
var (
	ErrMounted = errors.New("target is mounted")
	ErrInUse   = errors.New("target is in use")
)

// Zeroing policy on block devices.
const (
	// deviceMinZero is the shortest zero run given to BLKZEROOUT; shorter
	// runs are written as zeros, which is cheaper than a synchronous ioctl.
	deviceMinZero = 256 << 10
	// maxZeroCall caps one zeroing call, so Ctrl-C is seen between calls.
	maxZeroCall = 1 << 30
	// minAlign is the least alignment of the ranges given to the kernel
	// (BLKZEROOUT, O_DIRECT writes): a page, so that no page is shared
	// with a buffered write. A device with larger logical sectors raises it.
	minAlign = 4096
)

// zeroBuf is written where zeros must be written. A large allocation, so
// page-aligned in practice (O_DIRECT-able; WriteAt checks).
var zeroBuf = make([]byte, 1<<20)

// Target is an opened restore target.
type Target struct {
	Path    string
	Kind    Kind
	Size    int64  // a device's capacity; a file's size before the restore
	Created bool   // the regular file did not exist before
	InUse   string // why the device counted as in use, if --force opened it anyway

	f           *os.File
	direct      *os.File // the device again, O_DIRECT: for aligned writes
	align       int64    // of BLKZEROOUT ranges and O_DIRECT writes
	noZeroout   bool     // BLKZEROOUT is not supported
	noZeroRange bool     // fallocate ZERO_RANGE is not supported
	noPunch     bool     // fallocate PUNCH_HOLE is not supported
}

var _ target = (*Target)(nil)

// OpenOptions change how Open treats a target.
type OpenOptions struct {
	// Force opens a block device or file that something else holds (another
	// opener, a device-mapper or loop device over it). It never overrides
	// a mount or active swap.
	Force bool
}

// Open opens path for restore: a block device, or a regular file, created
// (mode 0600) if missing. It refuses a target that is mounted, used as swap,
// or (unless opt.Force) in use.
func Open(path string, opt OpenOptions) (*Target, error) {
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return create(path)
	case err != nil:
		return nil, err
	}
	st := fi.Sys().(*syscall.Stat_t)
	switch {
	case fi.Mode().IsRegular():
		return openFile(path, st, opt)
	case fi.Mode()&os.ModeDevice != 0 && fi.Mode()&os.ModeCharDevice == 0:
		return openDevice(path, opt)
	case fi.IsDir():
		return nil, fmt.Errorf("%s is a directory; give a file or block device to restore to", path)
	}
	return nil, fmt.Errorf("%s is a %s, not a regular file or block device", path, fi.Mode().Type())
}

func create(path string) (*Target, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	if strings.HasPrefix(abs, "/dev/") {
		return nil, fmt.Errorf("%s does not exist; refusing to create a regular file under /dev (is the device name mistyped, or the disk not attached?)", path)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, err
	}
	return &Target{Path: path, Kind: File, Created: true, f: f}, nil
}

// checkMounted refuses a target that is mounted (read-only too), used as
// swap, or the backing file of a loop device that is; Force does not
// override it.
func checkMounted(path string) error {
	err := inuse.Check(path, inuse.Any)
	var ie *inuse.Error
	switch {
	case errors.As(err, &ie):
		return fmt.Errorf("%w: %w", ErrMounted, err)
	case err != nil:
		return fmt.Errorf("cannot check whether %s is mounted: %w", path, err)
	}
	return nil
}

func openFile(path string, st *syscall.Stat_t, opt OpenOptions) (*Target, error) {
	if err := checkMounted(path); err != nil {
		return nil, err
	}
	loops, err := inuse.Loops(path)
	if err != nil {
		return nil, err
	}
	var inUse string
	switch len(loops) {
	case 0:
	case 1:
		inUse = "backs the loop device " + loops[0]
	default:
		inUse = "backs the loop devices " + strings.Join(loops, ", ")
	}
	if inUse != "" && !opt.Force {
		return nil, fmt.Errorf("%w: %s %s; detach it first, or pass --force if you are sure nothing reads it", ErrInUse, path, inUse)
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return nil, err
	}
	return &Target{Path: path, Kind: File, Size: st.Size, InUse: inUse, f: f}, nil
}

func openDevice(path string, opt OpenOptions) (*Target, error) {
	if err := checkMounted(path); err != nil {
		return nil, err
	}
	stacked, err := inuse.Stacked(path)
	if err != nil {
		return nil, err
	}
	var inUse string
	if len(stacked) > 0 {
		inUse = "has devices stacked on it: " + strings.Join(stacked, ", ")
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_EXCL, 0)
	if errors.Is(err, syscall.EBUSY) {
		if inUse == "" {
			inUse = "is open exclusively by another program (O_EXCL failed: EBUSY)"
		}
		if opt.Force {
			f, err = os.OpenFile(path, os.O_WRONLY, 0)
		}
	}
	if inUse != "" && !opt.Force {
		if err == nil {
			f.Close()
		}
		return nil, fmt.Errorf("%w: %s %s; stop what uses it, or pass --force if you are sure nothing writes to it", ErrInUse, path, inUse)
	}
	if err != nil {
		return nil, err
	}
	size, err := unix.IoctlGetUint64(int(f.Fd()), unix.BLKGETSIZE64)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: reading the device size (BLKGETSIZE64): %w", path, err)
	}
	t := &Target{Path: path, Kind: Device, Size: int64(size), InUse: inUse, f: f, align: minAlign}
	if lbs, err := unix.IoctlGetInt(int(f.Fd()), unix.BLKSSZGET); err == nil && lbs > minAlign && lbs&(lbs-1) == 0 {
		t.align = int64(lbs)
	}
	// Large aligned writes bypass the page cache: on a device that nobody
	// reads during the restore, caching them is only a copy. The exclusive
	// open above already keeps others out; this one is not exclusive.
	if d, err := os.OpenFile(path, os.O_WRONLY|syscall.O_DIRECT, 0); err == nil {
		t.direct = d
	}
	return t, nil
}

// Close closes the target.
func (t *Target) Close() error {
	if t.direct != nil {
		t.direct.Close()
	}
	return t.f.Close()
}

// WriteAt implements io.WriterAt. On a device, writes aligned to the
// device's alignment in offset and length, and to a page in memory, go
// through O_DIRECT. Others go
// through the page cache, and their writeback is started at once
// (sync_file_range WRITE, which does not wait), so the disk works while the
// next buffer is read and the final fsync has little left to do.
func (t *Target) WriteAt(p []byte, off int64) (int, error) {
	if t.direct != nil && len(p) > 0 && off%t.align == 0 && int64(len(p))%t.align == 0 &&
		int64(uintptr(unsafe.Pointer(&p[0])))%minAlign == 0 {
		return t.direct.WriteAt(p, off)
	}
	n, err := t.f.WriteAt(p, off)
	if n > 0 {
		_ = unix.SyncFileRange(int(t.f.Fd()), off, int64(n), unix.SYNC_FILE_RANGE_WRITE)
	}
	return n, err
}

// MergeZeros implements target: a file keeps every zero block a hole; a
// device writes short zero runs with the data around them.
func (t *Target) MergeZeros() int64 {
	if t.Kind == Device {
		return deviceMinZero
	}
	return 0
}

// Zero implements target.
func (t *Target) Zero(ctx context.Context, off, n int64, st *Stats) error {
	if t.Kind == Device {
		return t.zeroDevice(ctx, off, n, st)
	}
	return t.zeroFile(ctx, off, n, st)
}

// zeroFile punches a hole where the file had bytes before; beyond its old
// end nothing is needed: the range stays a hole, as the final truncate or a
// later write leaves it.
func (t *Target) zeroFile(ctx context.Context, off, n int64, st *Stats) error {
	end := off + n
	if pe := min(end, t.Size); off < pe {
		for ; off < pe; off += maxZeroCall {
			if err := ctx.Err(); err != nil {
				return err
			}
			k := min(pe-off, maxZeroCall)
			if !t.noPunch {
				err := unix.Fallocate(int(t.f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, k)
				if err == nil {
					st.Holes += k
					continue
				}
				if !unsupported(err) {
					return fmt.Errorf("%s: punching a hole at %d (+%d): %w", t.Path, off, k, err)
				}
				t.noPunch = true
			}
			if err := t.zeroRange(ctx, off, k, st); err != nil {
				return err
			}
		}
		off = pe
	}
	if end > off {
		st.Holes += end - off
	}
	return nil
}

// zeroDevice zeroes a device range: BLKZEROOUT over its aligned middle,
// plain zeros at unaligned edges and for short runs.
func (t *Target) zeroDevice(ctx context.Context, off, n int64, st *Stats) error {
	end := off + n
	a := (off + t.align - 1) / t.align * t.align
	b := end / t.align * t.align
	if n < deviceMinZero || a >= b {
		return t.writeZeros(ctx, off, n, st)
	}
	if err := t.writeZeros(ctx, off, a-off, st); err != nil {
		return err
	}
	for pos := a; pos < b; pos += maxZeroCall {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := t.zeroRange(ctx, pos, min(b-pos, maxZeroCall), st); err != nil {
			return err
		}
	}
	return t.writeZeros(ctx, b, end-b, st)
}

// zeroRange zeroes [off, off+n) with the fastest call the target supports:
// BLKZEROOUT (devices), fallocate ZERO_RANGE, or writing zeros.
func (t *Target) zeroRange(ctx context.Context, off, n int64, st *Stats) error {
	fd := int(t.f.Fd())
	if t.Kind == Device && !t.noZeroout {
		r := [2]uint64{uint64(off), uint64(n)}
		_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.BLKZEROOUT, uintptr(unsafe.Pointer(&r)))
		if e == 0 {
			st.Zeroed += n
			return nil
		}
		if !unsupported(e) {
			return fmt.Errorf("%s: BLKZEROOUT at %d (+%d): %w", t.Path, off, n, e)
		}
		t.noZeroout = true
	}
	if !t.noZeroRange {
		err := unix.Fallocate(fd, unix.FALLOC_FL_ZERO_RANGE|unix.FALLOC_FL_KEEP_SIZE, off, n)
		if err == nil {
			st.Zeroed += n
			return nil
		}
		if !unsupported(err) {
			return fmt.Errorf("%s: fallocate ZERO_RANGE at %d (+%d): %w", t.Path, off, n, err)
		}
		t.noZeroRange = true
	}
	return t.writeZeros(ctx, off, n, st)
}

// unsupported reports whether err means "this call is not available here"
// rather than an I/O failure.
func unsupported(err error) bool {
	return errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOTTY) ||
		errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EINVAL)
}

func (t *Target) writeZeros(ctx context.Context, off, n int64, st *Stats) error {
	for n > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		k := min(n, int64(len(zeroBuf)))
		if _, err := t.WriteAt(zeroBuf[:k], off); err != nil {
			return err
		}
		st.ZerosWritten += k
		off += k
		n -= k
	}
	return nil
}

// Finish implements target: a regular file is truncated to size; then the
// target is synced (and a new file's directory too).
func (t *Target) Finish(size int64) error {
	if t.Kind == File {
		if err := t.f.Truncate(size); err != nil {
			return fmt.Errorf("%s: truncating to %d bytes: %w", t.Path, size, err)
		}
	}
	if err := t.f.Sync(); err != nil {
		return fmt.Errorf("%s: fsync: %w", t.Path, err)
	}
	if t.Created {
		// A new file is durable only once its directory entry is.
		d, err := os.Open(filepath.Dir(t.Path))
		if err != nil {
			return fmt.Errorf("%s: opening its directory to fsync it: %w", t.Path, err)
		}
		err = d.Sync()
		d.Close()
		// Some filesystems cannot fsync a directory at all.
		if err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOTSUP) {
			return fmt.Errorf("%s: fsync of its directory: %w", t.Path, err)
		}
	}
	return nil
}

// IsPartition reports whether the target is a partition of a disk rather
// than a whole disk (or a regular file).
func (t *Target) IsPartition() bool {
	if t.Kind != Device {
		return false
	}
	var st unix.Stat_t
	if unix.Fstat(int(t.f.Fd()), &st) != nil {
		return false
	}
	_, err := os.Stat(fmt.Sprintf("/sys/dev/block/%d:%d/partition", unix.Major(st.Rdev), unix.Minor(st.Rdev)))
	return err == nil
}

// RereadPartitions asks the kernel to re-read a whole disk's partition
// table (BLKRRPART), as after writing a new one. A device without
// partition support (a loop device without partscan) is not an error.
func (t *Target) RereadPartitions() error {
	if t.Kind != Device || t.IsPartition() {
		return nil
	}
	err := unix.IoctlSetInt(int(t.f.Fd()), unix.BLKRRPART, 0)
	if err == nil || errors.Is(err, unix.EINVAL) {
		return nil
	}
	return fmt.Errorf("the kernel did not re-read %s's partition table (BLKRRPART: %w); run 'partprobe %s' or re-attach the disk", t.Path, err, t.Path)
}

// SameFile reports whether fi is the target itself (restoring a file onto
// itself would destroy it).
func (t *Target) SameFile(fi os.FileInfo) bool {
	st, err := t.f.Stat()
	return err == nil && os.SameFile(st, fi)
}
