// Package inuse refuses a source that the system may be writing: a block
// device that is mounted read-write or used as swap, where the device, one
// of its partitions, the disk it is a partition of, or a device stacked on
// it (LVM, dm-crypt, md: its sysfs holders, recursively) counts; and an
// image file that backs a loop device in that state.
//
// prezero reads a filesystem's allocation bitmap once and trusts it; a
// mounted read-write filesystem changes its bitmap and blocks afterwards,
// so the zeroed stream would mix old and new. A snapshot (LVM, ZFS, btrfs)
// or an unmounted or read-only device is safe.
//
// Only the mounts of the caller's mount namespace are visible.
package inuse

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Use is one reason a source is busy.
type Use struct {
	Device     string // the device that is mounted or swapped on, /dev/NAME
	MountPoint string // empty for swap
	FSType     string // "swap" for swap
}

func (u Use) String() string {
	if u.MountPoint == "" {
		return fmt.Sprintf("%s is in use as %s", u.Device, u.FSType)
	}
	return fmt.Sprintf("%s is mounted read-write on %s (%s)", u.Device, u.MountPoint, u.FSType)
}

// Error reports a source that is in use.
type Error struct {
	Source string
	Via    string // the loop device, when Source is its backing file
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
	b.WriteString(". Its free-space map would go stale while it is read: back up a snapshot " +
		"instead (e.g. lvcreate --snapshot, zfs snapshot + its zvol), unmount it or remount it " +
		"read-only, or pass --force to read it anyway")
	return b.String()
}

// Check returns an *Error if path, or a block device path stands for, is in
// use read-write, and nil if it is not (or is not a block device or a loop
// device's backing file).
func Check(path string) error { return host.check(path) }

// system is where Check looks; tests replace it with a fake tree.
type system struct {
	sys       string // /sys
	mountinfo string // /proc/self/mountinfo
	swaps     string // /proc/swaps
	stat      func(path string, st *syscall.Stat_t) error
}

var host = system{sys: "/sys", mountinfo: "/proc/self/mountinfo", swaps: "/proc/swaps", stat: syscall.Stat}

func (s system) check(path string) error {
	var st syscall.Stat_t
	if err := s.stat(path, &st); err != nil {
		return &os.PathError{Op: "stat", Path: path, Err: err}
	}
	switch st.Mode & syscall.S_IFMT {
	case syscall.S_IFBLK:
		uses, err := s.uses(devNumOf(st.Rdev))
		if err != nil || len(uses) == 0 {
			return err
		}
		return &Error{Source: path, Uses: uses}
	case syscall.S_IFREG:
		for _, loop := range s.loopsOf(st) {
			uses, err := s.uses(loop)
			if err != nil {
				return err
			}
			if len(uses) > 0 {
				return &Error{Source: path, Via: s.devName(loop), Uses: uses}
			}
		}
	}
	return nil
}

// devNum is "MAJ:MIN", as sysfs and mountinfo write it.
type devNum string

func newDevNum(major, minor uint64) devNum { return devNum(fmt.Sprintf("%d:%d", major, minor)) }

func devNumOf(rdev uint64) devNum {
	return newDevNum((rdev>>32)&0xfffff000|(rdev>>8)&0xfff, (rdev>>12)&0xffffff00|rdev&0xff)
}

// uses returns how dev and the devices related to it are in use.
func (s system) uses(dev devNum) ([]Use, error) {
	related := s.related(dev)
	var uses []Use
	mounts, err := s.readMountinfo()
	if err != nil {
		return nil, err
	}
	for _, m := range mounts {
		if !m.rw {
			continue
		}
		d := m.dev
		if !related[d] {
			// btrfs and others show an anonymous device number: try the
			// mount source as a device path.
			var st syscall.Stat_t
			if !strings.HasPrefix(m.source, "/") || s.stat(m.source, &st) != nil || st.Mode&syscall.S_IFMT != syscall.S_IFBLK {
				continue
			}
			if d = devNumOf(st.Rdev); !related[d] {
				continue
			}
		}
		uses = append(uses, Use{Device: s.devName(d), MountPoint: m.point, FSType: m.fstype})
	}
	for _, name := range s.readSwaps() {
		var st syscall.Stat_t
		if s.stat(name, &st) == nil && st.Mode&syscall.S_IFMT == syscall.S_IFBLK && related[devNumOf(st.Rdev)] {
			uses = append(uses, Use{Device: s.devName(devNumOf(st.Rdev)), FSType: "swap"})
		}
	}
	return uses, nil
}

// related returns dev, its partitions, the disk it is a partition of, and
// every device stacked on any of them, recursively.
func (s system) related(dev devNum) map[devNum]bool {
	set := map[devNum]bool{}
	var add func(d devNum, up bool)
	add = func(d devNum, up bool) {
		if set[d] {
			return
		}
		set[d] = true
		dir, err := filepath.EvalSymlinks(filepath.Join(s.sys, "dev/block", string(d)))
		if err != nil {
			return
		}
		if _, err := os.Stat(filepath.Join(dir, "partition")); err == nil && up {
			if p, ok := s.readDev(filepath.Dir(dir)); ok {
				set[p] = true // the whole disk, not its other partitions
			}
		}
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			sub := filepath.Join(dir, e.Name())
			if _, err := os.Stat(filepath.Join(sub, "partition")); err != nil {
				continue
			}
			if p, ok := s.readDev(sub); ok {
				add(p, false)
			}
		}
		holders, _ := os.ReadDir(filepath.Join(dir, "holders"))
		for _, h := range holders {
			if p, ok := s.readDev(filepath.Join(s.sys, "class/block", h.Name())); ok {
				add(p, false)
			}
		}
	}
	add(dev, true)
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

// loopsOf returns the loop devices whose backing file is st.
func (s system) loopsOf(st syscall.Stat_t) []devNum {
	dirs, _ := filepath.Glob(filepath.Join(s.sys, "block/loop*"))
	var out []devNum
	for _, dir := range dirs {
		b, err := os.ReadFile(filepath.Join(dir, "loop/backing_file"))
		if err != nil {
			continue
		}
		var bst syscall.Stat_t
		if s.stat(strings.TrimSpace(string(b)), &bst) != nil || bst.Dev != st.Dev || bst.Ino != st.Ino {
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

func (s system) readMountinfo() ([]mount, error) {
	b, err := os.ReadFile(s.mountinfo)
	if err != nil {
		return nil, fmt.Errorf("reading the mount table: %w", err)
	}
	return parseMountinfo(string(b)), nil
}

// parseMountinfo parses proc(5)'s mountinfo format:
// ID PARENT MAJ:MIN ROOT POINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS
func parseMountinfo(text string) []mount {
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
	return out
}

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
