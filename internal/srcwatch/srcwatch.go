// Package srcwatch notices a source that changes while prezero serves it.
//
// The maps are read once, when the source is opened. If the source is
// written afterwards, old maps over new data would zero blocks that are now
// in use, so every consumer calls Check after each read and stops once it
// fails: the FUSE mount answers EIO from then on, cat stops before writing
// the chunk it has just read. A Watch is opened before the maps are read, so
// that a change during mapping is caught too.
//
// What is compared, cheaply enough for every read (see BenchmarkCheck):
//   - an image file: its size and mtime (one fstat);
//   - a block device: its size, the kernel's completed write and discard
//     counts and its in-flight writes (/sys/dev/block/MAJ:MIN/stat and
//     inflight); for a loop device, also its backing file's size and mtime.
//
// It cannot see writes that bypass what it watches: to a whole disk at the
// offsets of the partition being served, or to a file's blocks through
// another path to the same storage. Snapshots avoid all of it.
package srcwatch

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// ErrChanged is wrapped by every error Check returns for a change.
var ErrChanged = errors.New("source changed while being served")

// Watch is the recorded state of one source. It is safe for concurrent use.
type Watch struct {
	path string
	f    *os.File
	dev  bool

	size  int64
	mtime syscall.Timespec

	stat, inflight *os.File // block devices: sysfs counters
	counters       []uint64
	backing        *Watch // loop devices: the backing file

	mu  sync.Mutex // guards buf
	buf []byte
}

// Open records the state of the file or block device at path.
func Open(path string) (*Watch, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	w := &Watch{path: path, f: f, buf: make([]byte, 512)}
	if err := w.init(); err != nil {
		w.Close()
		return nil, err
	}
	return w, nil
}

func (w *Watch) init() error {
	var st syscall.Stat_t
	if err := syscall.Fstat(int(w.f.Fd()), &st); err != nil {
		return fmt.Errorf("%s: %w", w.path, err)
	}
	w.mtime = st.Mtim
	w.dev = st.Mode&syscall.S_IFMT == syscall.S_IFBLK
	size, err := w.currentSize(&st)
	if err != nil {
		return err
	}
	w.size = size
	if !w.dev {
		return nil
	}
	sys := fmt.Sprintf("/sys/dev/block/%d:%d", major(st.Rdev), minor(st.Rdev))
	if w.stat, err = os.Open(sys + "/stat"); err != nil {
		return fmt.Errorf("%s: cannot watch the device for writes: %w", w.path, err)
	}
	if w.inflight, err = os.Open(sys + "/inflight"); err != nil {
		return fmt.Errorf("%s: cannot watch the device for writes: %w", w.path, err)
	}
	if w.counters, err = w.readCounters(); err != nil {
		return err
	}
	if b, err := os.ReadFile(sys + "/loop/backing_file"); err == nil && len(b) > 0 {
		// One newline ends the name; nothing is escaped, and a name may
		// end in a space or a tab.
		name := strings.TrimSuffix(string(b), "\n")
		if w.backing, err = Open(name); err != nil {
			return fmt.Errorf("%s: cannot watch its backing file: %w", w.path, err)
		}
	}
	return nil
}

// currentSize returns the size of the file, or of the device by seeking
// to its end (the fd's position is never used: reads are pread).
func (w *Watch) currentSize(st *syscall.Stat_t) (int64, error) {
	if !w.dev {
		return st.Size, nil
	}
	n, err := syscall.Seek(int(w.f.Fd()), 0, 2)
	if err != nil {
		return 0, fmt.Errorf("%s: finding its size: %w", w.path, err)
	}
	return n, nil
}

// readCounters returns the device's completed writes and discards and its
// in-flight writes.
func (w *Watch) readCounters() ([]uint64, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	stat, err := w.readFields(w.stat)
	if err != nil {
		return nil, err
	}
	inflight, err := w.readFields(w.inflight)
	if err != nil {
		return nil, err
	}
	// stat: reads(0-3) writes(4-7) in_flight(8) io_ticks(9) time_in_queue(10)
	// discards(11-14) ...; inflight: reads writes.
	if len(stat) < 8 || len(inflight) < 2 {
		return nil, fmt.Errorf("%s: unexpected sysfs counters %v %v", w.path, stat, inflight)
	}
	c := []uint64{stat[4], stat[6], inflight[1]}
	if len(stat) >= 15 {
		c = append(c, stat[11], stat[13])
	}
	return c, nil
}

// readFields reads a sysfs file of numbers from its start.
func (w *Watch) readFields(f *os.File) ([]uint64, error) {
	n, err := f.ReadAt(w.buf, 0)
	if n == 0 && err != nil {
		return nil, fmt.Errorf("%s: reading %s: %w", w.path, f.Name(), err)
	}
	var out []uint64
	for _, s := range strings.Fields(string(w.buf[:n])) {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%s: parsing %s: %w", w.path, f.Name(), err)
		}
		out = append(out, v)
	}
	return out, nil
}

// Check returns an error wrapping ErrChanged if the source's size, mtime
// or write counters moved since Open.
func (w *Watch) Check() error {
	var st syscall.Stat_t
	if err := syscall.Fstat(int(w.f.Fd()), &st); err != nil {
		return fmt.Errorf("%s: %w", w.path, err)
	}
	size, err := w.currentSize(&st)
	if err != nil {
		return err
	}
	if size != w.size {
		return fmt.Errorf("%w: %s: size was %d bytes, is %d", ErrChanged, w.path, w.size, size)
	}
	if !w.dev && st.Mtim != w.mtime {
		return fmt.Errorf("%w: %s: modified at %s", ErrChanged, w.path, fmtTime(st.Mtim))
	}
	if !w.dev {
		return nil
	}
	c, err := w.readCounters()
	if err != nil {
		return err
	}
	if len(c) != len(w.counters) || c[0] != w.counters[0] || c[1] != w.counters[1] || c[2] != 0 ||
		(len(c) > 3 && (c[3] != w.counters[3] || c[4] != w.counters[4])) {
		return fmt.Errorf("%w: %s: the device was written (write/discard counters %v, now %v)", ErrChanged, w.path, w.counters, c)
	}
	if w.backing != nil {
		return w.backing.Check()
	}
	return nil
}

// Same returns an error unless f is the file or device the watch watches,
// in case path was replaced between Open and the caller's own open.
func (w *Watch) Same(f *os.File) error {
	var a, b syscall.Stat_t
	if err := syscall.Fstat(int(w.f.Fd()), &a); err != nil {
		return err
	}
	if err := syscall.Fstat(int(f.Fd()), &b); err != nil {
		return err
	}
	if a.Dev != b.Dev || a.Ino != b.Ino || a.Rdev != b.Rdev {
		return fmt.Errorf("%w: %s was replaced by another file while being opened", ErrChanged, w.path)
	}
	return nil
}

// Close releases the watch's files.
func (w *Watch) Close() error {
	for _, f := range []*os.File{w.stat, w.inflight} {
		if f != nil {
			f.Close()
		}
	}
	if w.backing != nil {
		w.backing.Close()
	}
	return w.f.Close()
}

func fmtTime(ts syscall.Timespec) string {
	return fmt.Sprintf("%d.%09d", ts.Sec, ts.Nsec)
}

func major(dev uint64) uint32 { return uint32((dev>>32)&0xfffff000 | (dev>>8)&0xfff) }
func minor(dev uint64) uint32 { return uint32((dev>>12)&0xffffff00 | dev&0xff) }
