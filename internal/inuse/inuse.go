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
// whole disk when it is a partition (not the disk's other partitions), and
// every device stacked on the device or its partitions (LVM, dm-crypt, md:
// the sysfs holders, recursively). For a regular file: a filesystem mounted
// straight from it (FUSE, as ntfs-3g does), swap on it, a loop device over
// it that counts as above, and for Any also the file bind-mounted somewhere.
//
// Only the mounts of the caller's mount namespace are visible.
package inuse

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
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
	MountPoint string // empty for swap
	FSType     string // "swap" for swap
	ReadOnly   bool   // mounted read-only: only Any counts it
}

func (u Use) String() string {
	switch {
	case u.MountPoint == "":
		return fmt.Sprintf("%s is in use as %s", u.Device, u.FSType)
	case u.ReadOnly:
		return fmt.Sprintf("%s is mounted read-only on %s (%s)", u.Device, u.MountPoint, u.FSType)
	}
	return fmt.Sprintf("%s is mounted read-write on %s (%s)", u.Device, u.MountPoint, u.FSType)
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
// partitions (device-mapper, md: the sysfs holders, recursively) as
// /dev/NAME, sorted; none for anything else.
func Stacked(path string) ([]string, error) { return host.stacked(path) }

// Loops returns the loop devices whose backing file is the regular file
// path, as /dev/NAME, sorted; none for anything else.
func Loops(path string) ([]string, error) { return host.loops(path) }

// Mounted returns the filesystem type mounted at dir, or "" if dir is not
// a mount point. dir must be absolute and clean.
func Mounted(dir string) (string, error) {
	mounts, err := host.readMountinfo()
	if err != nil {
		return "", err
	}
	fstype := ""
	for _, m := range mounts {
		if m.point == dir {
			fstype = m.fstype // the last one is on top
		}
	}
	return fstype, nil
}

// system is where the checks look; tests replace it with a fake tree.
type system struct {
	sys       string // /sys
	mountinfo string // /proc/self/mountinfo
	swaps     string // /proc/swaps
	stat      func(path string, st *syscall.Stat_t) error
}

var host = system{sys: "/sys", mountinfo: "/proc/self/mountinfo", swaps: "/proc/swaps", stat: syscall.Stat}

func (s system) check(path string, mode Mode) error {
	st, err := s.statPath(path)
	if err != nil {
		return err
	}
	switch st.Mode & syscall.S_IFMT {
	case syscall.S_IFBLK:
		uses, err := s.deviceUses(devNumOf(st.Rdev), mode)
		if err != nil || len(uses) == 0 {
			return err
		}
		return &Error{Source: path, Mode: mode, Uses: uses}
	case syscall.S_IFREG:
		uses, err := s.fileUses(&st, mode)
		if err != nil {
			return err
		}
		if len(uses) > 0 {
			return &Error{Source: path, Mode: mode, Uses: uses}
		}
		for _, loop := range s.loopsOf(&st) {
			uses, err := s.deviceUses(loop, mode)
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
	var devs []devNum
	for d, rel := range s.related(devNumOf(st.Rdev)) {
		if rel == stacked {
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

// sameFile reports whether p is an absolute path to the regular file st.
func (s system) sameFile(p string, st *syscall.Stat_t) bool {
	var o syscall.Stat_t
	return strings.HasPrefix(p, "/") && s.stat(p, &o) == nil &&
		o.Mode&syscall.S_IFMT == syscall.S_IFREG && o.Dev == st.Dev && o.Ino == st.Ino
}

// deviceUses returns how dev and the devices related to it are in use.
func (s system) deviceUses(dev devNum, mode Mode) ([]Use, error) {
	related := s.related(dev)
	mounts, err := s.counted(mode)
	if err != nil {
		return nil, err
	}
	var uses []Use
	for _, m := range mounts {
		d := m.dev
		if _, ok := related[d]; !ok {
			// btrfs and others show an anonymous device number: try the
			// mount source as a device path.
			if d, ok = s.blockDev(m.source); !ok {
				continue
			}
			if _, ok := related[d]; !ok {
				continue
			}
		}
		uses = append(uses, Use{Device: s.devName(d), MountPoint: m.point, FSType: m.fstype, ReadOnly: !m.rw})
	}
	for _, name := range s.readSwaps() {
		if d, ok := s.blockDev(name); ok {
			if _, ok := related[d]; ok {
				uses = append(uses, Use{Device: s.devName(d), FSType: "swap"})
			}
		}
	}
	return uses, nil
}

// fileUses returns how the regular file st is in use by itself: mounted
// straight from (FUSE), bind-mounted (Any only), or swap.
func (s system) fileUses(st *syscall.Stat_t, mode Mode) ([]Use, error) {
	mounts, err := s.counted(mode)
	if err != nil {
		return nil, err
	}
	var uses []Use
	for _, m := range mounts {
		// A bind mount's rw is that of the filesystem holding the file, not
		// of one on it: it says nothing of who writes the file, so only
		// Any counts it.
		if s.sameFile(m.source, st) || (mode == Any && s.sameFile(m.point, st)) {
			uses = append(uses, Use{Device: m.source, MountPoint: m.point, FSType: m.fstype, ReadOnly: !m.rw})
		}
	}
	for _, name := range s.readSwaps() {
		if s.sameFile(name, st) {
			uses = append(uses, Use{Device: name, FSType: "swap"})
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
	stacked            // stacked on it or on its partitions: a sysfs holder, recursively
)

// maxRelated bounds the walk of a corrupt or looping sysfs tree.
const maxRelated = 4096

// related returns dev, its partitions, the disk it is a partition of, and
// every device stacked on dev or its partitions, recursively: whatever is
// mounted on one of them reads or writes dev's bytes.
func (s system) related(dev devNum) map[devNum]relation {
	set := map[devNum]relation{}
	var add func(d devNum, rel relation)
	add = func(d devNum, rel relation) {
		if _, seen := set[d]; seen || len(set) >= maxRelated {
			return
		}
		set[d] = rel
		dir, err := filepath.EvalSymlinks(filepath.Join(s.sys, "dev/block", string(d)))
		if err != nil {
			return
		}
		if _, err := os.Stat(filepath.Join(dir, "partition")); err == nil && rel == self {
			if p, ok := s.readDev(filepath.Dir(dir)); ok {
				set[p] = disk // the whole disk, not its other partitions
			}
		}
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			sub := filepath.Join(dir, e.Name())
			if _, err := os.Stat(filepath.Join(sub, "partition")); err != nil {
				continue
			}
			if p, ok := s.readDev(sub); ok {
				add(p, partition)
			}
		}
		holders, _ := os.ReadDir(filepath.Join(dir, "holders"))
		for _, h := range holders {
			if p, ok := s.readDev(filepath.Join(s.sys, "class/block", h.Name())); ok {
				add(p, stacked)
			}
		}
	}
	add(dev, self)
	return set
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
	dirs, _ := filepath.Glob(filepath.Join(s.sys, "block/loop*"))
	var out []devNum
	for _, dir := range dirs {
		b, err := os.ReadFile(filepath.Join(dir, "loop/backing_file"))
		if err != nil || !s.sameFile(strings.TrimSpace(string(b)), st) {
			continue
		}
		if d, ok := s.readDev(dir); ok {
			out = append(out, d)
		}
	}
	return out
}

// mount is one line of mountinfo.
type mount struct {
	dev    devNum
	point  string
	fstype string
	source string
	rw     bool // the superblock is writable
}

// counted returns the mounts that mode counts.
func (s system) counted(mode Mode) ([]mount, error) {
	mounts, err := s.readMountinfo()
	if err != nil || mode == Any {
		return mounts, err
	}
	var rw []mount
	for _, m := range mounts {
		if m.rw {
			rw = append(rw, m)
		}
	}
	return rw, nil
}

func (s system) readMountinfo() ([]mount, error) {
	b, err := os.ReadFile(s.mountinfo)
	if err == nil {
		var ms []mount
		if ms, err = parseMountinfo(string(b)); err == nil {
			return ms, nil
		}
	}
	return nil, fmt.Errorf("reading the mount table: %w", err)
}

// parseMountinfo parses proc(5)'s mountinfo format:
// ID PARENT MAJ:MIN ROOT POINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS
// A line it cannot read is an error: a mount left out could be the one
// that matters.
func parseMountinfo(text string) ([]mount, error) {
	var out []mount
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		sep := -1
		for i := 6; i < len(f); i++ {
			if f[i] == "-" {
				sep = i
				break
			}
		}
		if len(f) < 6 || sep < 0 || len(f) < sep+4 {
			continue
		}
		out = append(out, mount{
			dev:    devNum(f[2]),
			point:  unescape(f[4]),
			fstype: f[sep+1],
			source: unescape(f[sep+2]),
			rw:     hasOption(f[sep+3], "rw"),
		})
	}
	return out, sc.Err()
}

func hasOption(opts, name string) bool {
	for _, o := range strings.Split(opts, ",") {
		if o == name {
			return true
		}
	}
	return false
}

// unescape undoes mountinfo's octal escapes (\040 for a space).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// readSwaps returns the active swap areas' file names.
func (s system) readSwaps() []string {
	b, err := os.ReadFile(s.swaps)
	if err != nil {
		return nil
	}
	var out []string
	for i, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); i > 0 && len(f) > 0 {
			out = append(out, unescape(f[0]))
		}
	}
	return out
}
