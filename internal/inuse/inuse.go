// Package inuse tells whether the system is using a block device or an
// image file: mounted, used as swap, or behind a loop device that is. It
// is prezero's one answer to that question, asked at two ends of the
// pipeline:
//
//   - Before a SOURCE is read (mount, backup): Check(path, Writable)
//     refuses a source that the system may be writing, one mounted
//     read-write or used as swap. prezero reads a filesystem's allocation
//     bitmap once and trusts it; a mounted read-write filesystem changes
//     its bitmap and blocks afterwards, so the zeroed stream would mix old
//     and new. A snapshot (LVM, ZFS, btrfs) or an unmounted or read-only
//     device is safe; --force skips the check.
//   - Before a TARGET is overwritten (restore): Check(path, Any) refuses
//     one that is mounted at all, read-only too, or used as swap: writing
//     under a mounted filesystem corrupts it, and nothing overrides that.
//     Stacked and Loops name the devices over a target that make it busy
//     without a mount (a restore then needs --force).
//
// What counts for a block device: the device itself, its partitions, the
// whole disk when it is a partition (not the disk's other partitions), every
// device stacked on the device or its partitions (LVM, dm-crypt, md: the
// sysfs holders; loop devices over the device node), and, for a loop device,
// what lies under it: its backing device, or its backing file and every
// other loop device over that file; all of it recursively. For a regular
// file: a filesystem mounted straight from it (FUSE, as ntfs-3g does), swap
// on it, a loop device over it that counts as above, and for Any also the
// file bind-mounted somewhere.
//
// Only the mounts of the caller's mount namespace are visible. Mount tables
// are read with internal/mounttab, which decodes the kernel's escapes.
package inuse

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"github.com/prezero/prezero/internal/mounttab"
)

// Mode says which mounts count.
type Mode int

const (
	// Writable counts what may change the bytes under a reader:
	// read-write mounts and swap. For a source about to be read.
	Writable Mode = iota
	// Any counts every mount, read-only ones too, and swap. For a target
	// about to be overwritten.
	Any
)

// Use is one reason a source or target is busy.
type Use struct {
	Device     string // what is mounted or swapped on: /dev/NAME, or a file
	Relation   string // how Device shares bytes with the path checked, when that is not plain
	MountPoint string // empty for swap
	FSType     string // "swap" for swap
	ReadOnly   bool   // mounted read-only: only Any counts it
}

func (u Use) String() string {
	dev := u.Device
	if u.Relation != "" {
		dev += " (" + u.Relation + ")"
	}
	switch {
	case u.MountPoint == "":
		return fmt.Sprintf("%s is in use as %s", dev, u.FSType)
	case u.ReadOnly:
		return fmt.Sprintf("%s is mounted read-only on %s (%s)", dev, u.MountPoint, u.FSType)
	}
	return fmt.Sprintf("%s is mounted read-write on %s (%s)", dev, u.MountPoint, u.FSType)
}

// Error reports a source or target that is in use.
type Error struct {
	Source string // the path given to Check
	Via    string // the loop device, when Source is its backing file
	Mode   Mode   // what was counted; the advice differs
	Uses   []Use
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s is in use", e.Source)
	if e.Via != "" {
		fmt.Fprintf(&b, " through %s", e.Via)
	}
	b.WriteString(": ")
	for i, u := range e.Uses {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(u.String())
	}
	if e.Mode == Writable {
		b.WriteString(". Its free-space map would go stale while it is read: back up a snapshot " +
			"instead (e.g. lvcreate --snapshot, zfs snapshot + its zvol), unmount it or remount it " +
			"read-only, or pass --force to read it anyway")
	} else {
		b.WriteString(". Unmount it (swapoff a swap area) first: prezero never overwrites a " +
			"mounted filesystem, not even with --force")
	}
	return b.String()
}

// Check returns an *Error if path, or a block device or loop device path
// stands for, is in use as mode counts; nil if it is not (or path is
// neither a block device nor a regular file).
func Check(path string, mode Mode) error { return host.check(path, mode) }

// Stacked returns the devices stacked on the block device path or on its
// partitions (device-mapper, md: the sysfs holders; loop devices over the
// device node; recursively) as /dev/NAME, sorted; none for anything else.
func Stacked(path string) ([]string, error) { return host.stacked(path) }

// Loops returns the loop devices whose backing file is the regular file
// path, as /dev/NAME, sorted; none for anything else.
func Loops(path string) ([]string, error) { return host.loops(path) }

// Mounted returns the filesystem type mounted at dir, or "" if dir is not
// a mount point. dir must be absolute and clean.
func Mounted(dir string) (string, error) {
	mounts, err := mounttab.Read(host.mountinfo)
	if err != nil {
		return "", err
	}
	m, _ := mounttab.Top(mounts, dir)
	return m.FSType, nil
}

// system is where the checks look; tests replace it with a fake tree.
type system struct {
	sys       string // /sys
	mountinfo string // /proc/self/mountinfo
	swaps     string // /proc/swaps
	stat      func(path string, st *syscall.Stat_t) error
}

var host = system{sys: "/sys", mountinfo: mounttab.Path, swaps: "/proc/swaps", stat: syscall.Stat}

func (s system) check(path string, mode Mode) error {
	st, err := s.statPath(path)
	if err != nil {
		return err
	}
	switch st.Mode & syscall.S_IFMT {
	case syscall.S_IFBLK:
		w := s.newWalk()
		w.add(devNumOf(st.Rdev), self, "")
		uses, err := s.uses(w, mode)
		if err != nil || len(uses) == 0 {
			return err
		}
		return &Error{Source: path, Mode: mode, Uses: uses}
	case syscall.S_IFREG:
		// The file's own uses first; then each loop device over it, with
		// everything that shares its bytes, reported "through" that loop.
		w := s.newWalk()
		w.files[fileID(&st)] = ""
		uses, err := s.uses(w, mode)
		if err != nil {
			return err
		}
		if len(uses) > 0 {
			return &Error{Source: path, Mode: mode, Uses: uses}
		}
		for _, loop := range s.loopsOf(&st) {
			w := s.newWalk()
			w.files[fileID(&st)] = ""
			w.add(loop, self, "")
			uses, err := s.uses(w, mode)
			if err != nil {
				return err
			}
			if len(uses) > 0 {
				return &Error{Source: path, Via: s.devName(loop), Mode: mode, Uses: uses}
			}
		}
	}
	return nil
}

func (s system) stacked(path string) ([]string, error) {
	st, err := s.statPath(path)
	if err != nil || st.Mode&syscall.S_IFMT != syscall.S_IFBLK {
		return nil, err
	}
	w := s.newWalk()
	w.add(devNumOf(st.Rdev), self, "")
	var devs []devNum
	for d, r := range w.devs {
		if r.rel == stacked {
			devs = append(devs, d)
		}
	}
	return s.devNames(devs), nil
}

func (s system) loops(path string) ([]string, error) {
	st, err := s.statPath(path)
	if err != nil || st.Mode&syscall.S_IFMT != syscall.S_IFREG {
		return nil, err
	}
	return s.devNames(s.loopsOf(&st)), nil
}

func (s system) statPath(path string) (syscall.Stat_t, error) {
	var st syscall.Stat_t
	if err := s.stat(path, &st); err != nil {
		return st, &os.PathError{Op: "stat", Path: path, Err: err}
	}
	return st, nil
}

// devNum is "MAJ:MIN", as sysfs and mountinfo write it.
type devNum string

func newDevNum(major, minor uint64) devNum { return devNum(fmt.Sprintf("%d:%d", major, minor)) }

func devNumOf(rdev uint64) devNum {
	return newDevNum((rdev>>32)&0xfffff000|(rdev>>8)&0xfff, (rdev>>12)&0xffffff00|rdev&0xff)
}

// blockDev returns the device number of p if p is an absolute path to a
// block device. Mount sources such as "none" are names, not paths.
func (s system) blockDev(p string) (devNum, bool) {
	var st syscall.Stat_t
	if !strings.HasPrefix(p, "/") || s.stat(p, &st) != nil || st.Mode&syscall.S_IFMT != syscall.S_IFBLK {
		return "", false
	}
	return devNumOf(st.Rdev), true
}

// regularFile returns the identity of p if p is an absolute path to a
// regular file.
func (s system) regularFile(p string) (fileKey, bool) {
	var st syscall.Stat_t
	if !strings.HasPrefix(p, "/") || s.stat(p, &st) != nil || st.Mode&syscall.S_IFMT != syscall.S_IFREG {
		return fileKey{}, false
	}
	return fileID(&st), true
}

// fileKey identifies a regular file: its device and inode.
type fileKey struct{ dev, ino uint64 }

// fileDevs returns the devices that hold the walk's files.
func (w *walk) fileDevs() map[devNum]bool {
	out := map[devNum]bool{}
	for f := range w.files {
		out[devNumOf(f.dev)] = true
	}
	return out
}

func fileID(st *syscall.Stat_t) fileKey { return fileKey{uint64(st.Dev), st.Ino} }

// uses returns how the devices and files of w are in use, as mode counts.
func (s system) uses(w *walk, mode Mode) ([]Use, error) {
	mounts, err := s.counted(mode)
	if err != nil {
		return nil, err
	}
	swaps := s.readSwaps()
	var uses []Use
	for _, m := range mounts {
		d := devNum(m.Dev)
		r, ok := w.devs[d]
		if !ok {
			// btrfs, FUSE (ntfs-3g) and others show an anonymous device
			// number: try the mount source as a device path.
			if sd, isDev := s.blockDev(m.Source); isDev {
				if r, ok = w.devs[sd]; ok {
					d = sd
				}
			}
		}
		if ok {
			uses = append(uses, Use{Device: s.devName(d), Relation: r.why, MountPoint: m.Point, FSType: m.FSType, ReadOnly: !m.RW})
			continue
		}
		if len(w.files) == 0 {
			continue
		}
		// A filesystem mounted straight from one of the files (FUSE), or
		// for Any a file bind-mounted. A bind mount's rw is that of the
		// filesystem holding the file, not of one on it: it says nothing of
		// who writes the file, so only Any counts it.
		if f, ok := s.regularFile(m.Source); ok {
			if why, ok := w.files[f]; ok {
				uses = append(uses, Use{Device: m.Source, Relation: why, MountPoint: m.Point, FSType: m.FSType, ReadOnly: !m.RW})
				continue
			}
		}
		// Only a mount of a files' own filesystem can be a bind mount of
		// it: other mount points are not stat'ed (a hung FUSE mount
		// would hang the check).
		if mode == Any && w.fileDevs()[d] {
			if f, ok := s.regularFile(m.Point); ok {
				if why, ok := w.files[f]; ok {
					uses = append(uses, Use{Device: m.Source, Relation: why, MountPoint: m.Point, FSType: m.FSType, ReadOnly: !m.RW})
				}
			}
		}
	}
	for _, name := range swaps {
		if d, ok := s.blockDev(name); ok {
			if r, ok := w.devs[d]; ok {
				uses = append(uses, Use{Device: s.devName(d), Relation: r.why, FSType: "swap"})
			}
		} else if f, ok := s.regularFile(name); ok {
			if why, ok := w.files[f]; ok {
				uses = append(uses, Use{Device: name, Relation: why, FSType: "swap"})
			}
		}
	}
	return uses, nil
}

// relation is how a device is related to the one asked about.
type relation int

const (
	self      relation = iota
	partition          // a partition of it, or of a device stacked on it
	disk               // the whole disk it is a partition of
	stacked            // stacked on it or on its partitions: a sysfs holder, or a loop device over the device node
	under              // under a loop device: its backing device, or another loop device over its backing file
)

// maxRelated bounds the walk of a corrupt or looping sysfs tree.
const maxRelated = 4096

// walk collects the devices and files that share bytes with the one asked
// about: whatever is mounted on one of them reads or writes its bytes.
type walk struct {
	s     system
	devs  map[devNum]related
	files map[fileKey]string // backing files of loop devices met, with how they relate
	loops []loopDev          // every loop device of the system, read once
	read  bool               // loops has been read
}

type related struct {
	rel relation
	why string // for Use.Relation; empty where the relation is plain
}

// loopDev is a loop device and what backs it.
type loopDev struct {
	dev     devNum
	backing string  // the backing file's path, as sysfs gives it
	blk     devNum  // the backing device, if backing is a block device
	file    fileKey // the backing file, if it is a regular file
	isFile  bool
}

func (s system) newWalk() *walk {
	return &walk{s: s, devs: map[devNum]related{}, files: map[fileKey]string{}}
}

// add adds d and, recursively, what shares its bytes: its partitions, the
// whole disk of a partition (not its other partitions), the devices stacked
// on it, and the devices and files under a loop device.
func (w *walk) add(d devNum, rel relation, why string) {
	if _, seen := w.devs[d]; seen || len(w.devs) >= maxRelated {
		return
	}
	w.devs[d] = related{rel, why}
	s := w.s
	dir, err := filepath.EvalSymlinks(filepath.Join(s.sys, "dev/block", string(d)))
	if err != nil {
		return
	}
	if _, err := os.Stat(filepath.Join(dir, "partition")); err == nil && (rel == self || rel == under) {
		if p, ok := s.readDev(filepath.Dir(dir)); ok {
			if _, seen := w.devs[p]; !seen {
				w.devs[p] = related{disk, ""} // the whole disk, not its other partitions
			}
		}
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		sub := filepath.Join(dir, e.Name())
		if _, err := os.Stat(filepath.Join(sub, "partition")); err != nil {
			continue
		}
		if p, ok := s.readDev(sub); ok {
			w.add(p, partition, w.why("a partition of", d, rel))
		}
	}
	holders, _ := os.ReadDir(filepath.Join(dir, "holders"))
	for _, h := range holders {
		if p, ok := s.readDev(filepath.Join(s.sys, "class/block", h.Name())); ok {
			w.add(p, stacked, w.why("stacked on", d, rel))
		}
	}
	// Loop devices over this device's node: the kernel lists them in no
	// holders directory.
	for _, l := range w.allLoops() {
		if l.blk == d {
			w.add(l.dev, stacked, "a loop device over "+s.devName(d))
		}
	}
	// What lies under a loop device.
	for _, l := range w.allLoops() {
		if l.dev != d {
			continue
		}
		switch {
		case l.blk != "":
			w.add(l.blk, under, "the backing device of "+s.devName(d))
		case l.isFile:
			if _, seen := w.files[l.file]; seen {
				break
			}
			w.files[l.file] = "the backing file of " + s.devName(d)
			for _, o := range w.allLoops() {
				if o.isFile && o.file == l.file {
					w.add(o.dev, under, "over the same file "+o.backing)
				}
			}
		}
	}
}

// why says how a device found from d relates, unless d is the device
// asked about.
func (w *walk) why(how string, d devNum, rel relation) string {
	if rel == self {
		return ""
	}
	return how + " " + w.s.devName(d)
}

// allLoops reads every loop device's backing file once per walk.
func (w *walk) allLoops() []loopDev {
	if w.read {
		return w.loops
	}
	w.read = true
	s := w.s
	dirs, _ := filepath.Glob(filepath.Join(s.sys, "block/loop*"))
	for _, dir := range dirs {
		name, ok := s.backingFile(dir)
		if !ok {
			continue
		}
		d, ok := s.readDev(dir)
		if !ok {
			continue
		}
		l := loopDev{dev: d, backing: name}
		if b, ok := s.blockDev(name); ok {
			l.blk = b
		} else if f, ok := s.regularFile(name); ok {
			l.file, l.isFile = f, true
		}
		w.loops = append(w.loops, l)
	}
	return w.loops
}

// backingFile reads a loop device's backing file name from sysfs. The
// kernel ends it with one newline and escapes nothing: a name may end in
// a space or a tab.
func (s system) backingFile(dir string) (string, bool) {
	b, err := os.ReadFile(filepath.Join(dir, "loop/backing_file"))
	if err != nil || len(b) == 0 {
		return "", false
	}
	return strings.TrimSuffix(string(b), "\n"), true
}

// readDev reads the "dev" file of a sysfs block directory.
func (s system) readDev(dir string) (devNum, bool) {
	b, err := os.ReadFile(filepath.Join(dir, "dev"))
	if err != nil {
		return "", false
	}
	return devNum(strings.TrimSpace(string(b))), true
}

// devName returns /dev/NAME for dev, or "device MAJ:MIN".
func (s system) devName(dev devNum) string {
	b, err := os.ReadFile(filepath.Join(s.sys, "dev/block", string(dev), "uevent"))
	if err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if name, ok := strings.CutPrefix(line, "DEVNAME="); ok {
				return "/dev/" + name
			}
		}
	}
	return "device " + string(dev)
}

// devNames returns the /dev names of devs, sorted.
func (s system) devNames(devs []devNum) []string {
	var out []string
	for _, d := range devs {
		out = append(out, s.devName(d))
	}
	sort.Strings(out)
	return out
}

// loopsOf returns the loop devices whose backing file is st.
func (s system) loopsOf(st *syscall.Stat_t) []devNum {
	var out []devNum
	for _, l := range s.newWalk().allLoops() {
		if l.isFile && l.file == fileID(st) {
			out = append(out, l.dev)
		}
	}
	return out
}

// counted returns the mounts that mode counts.
func (s system) counted(mode Mode) ([]mounttab.Mount, error) {
	mounts, err := mounttab.Read(s.mountinfo)
	if err != nil || mode == Any {
		return mounts, err
	}
	var rw []mounttab.Mount
	for _, m := range mounts {
		if m.RW {
			rw = append(rw, m)
		}
	}
	return rw, nil
}

// readSwaps returns the active swap areas' file names, which /proc/swaps
// escapes as mountinfo does.
func (s system) readSwaps() []string {
	b, err := os.ReadFile(s.swaps)
	if err != nil {
		return nil
	}
	var out []string
	for i, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); i > 0 && len(f) > 0 {
			out = append(out, mounttab.Unescape(f[0]))
		}
	}
	return out
}
