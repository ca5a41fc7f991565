package restore

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// mount is one line of /proc/self/mountinfo.
type mount struct {
	dev    uint64 // st_dev of the mounted filesystem (major:minor)
	point  string // where it is mounted
	source string // what was mounted: a device, a file (FUSE), or a name
}

// readMounts parses /proc/self/mountinfo.
func readMounts() ([]mount, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("cannot check whether the target is mounted: %w", err)
	}
	defer f.Close()
	var ms []mount
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		fields, rest := strings.Fields(pre), strings.Fields(post)
		if !ok || len(fields) < 5 || len(rest) < 2 {
			continue
		}
		majS, minS, _ := strings.Cut(fields[2], ":")
		maj, err1 := strconv.ParseUint(majS, 10, 32)
		mnr, err2 := strconv.ParseUint(minS, 10, 32)
		if err1 != nil || err2 != nil {
			continue
		}
		ms = append(ms, mount{
			dev:    unix.Mkdev(uint32(maj), uint32(mnr)),
			point:  unescape(fields[4]),
			source: unescape(rest[1]),
		})
	}
	return ms, sc.Err()
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

// sysBlock returns the sysfs directory of a block device number.
func sysBlock(dev uint64) string {
	return fmt.Sprintf("/sys/dev/block/%d:%d", unix.Major(dev), unix.Minor(dev))
}

// family returns dev, its partitions, and every device stacked on any of
// them (device-mapper, md: the sysfs holders), recursively, with names.
// Whatever is mounted on one of them is mounted on dev.
func family(dev uint64) map[uint64]string {
	out := map[uint64]string{}
	var add func(d uint64)
	add = func(d uint64) {
		if _, seen := out[d]; seen || len(out) > 4096 {
			return
		}
		dir := resolve(sysBlock(d))
		out[d] = filepath.Base(dir)
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if _, err := os.Stat(filepath.Join(dir, e.Name(), "partition")); err == nil {
				if p, ok := readDev(filepath.Join(dir, e.Name())); ok {
					add(p)
				}
			}
		}
		hs, _ := os.ReadDir(filepath.Join(dir, "holders"))
		for _, h := range hs {
			if p, ok := readDev(filepath.Join("/sys/class/block", h.Name())); ok {
				add(p)
			}
		}
	}
	add(dev)
	return out
}

// readDev reads the MAJ:MIN in a sysfs block directory's "dev" file.
func readDev(dir string) (uint64, bool) {
	b, err := os.ReadFile(filepath.Join(dir, "dev"))
	if err != nil {
		return 0, false
	}
	majS, minS, _ := strings.Cut(strings.TrimSpace(string(b)), ":")
	maj, err1 := strconv.ParseUint(majS, 10, 32)
	mnr, err2 := strconv.ParseUint(minS, 10, 32)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return unix.Mkdev(uint32(maj), uint32(mnr)), true
}

func resolve(p string) string {
	if r, err := filepath.EvalSymlinks(p); err == nil {
		return r
	}
	return p
}

// isPartition reports whether dev is a partition of a disk.
func isPartition(dev uint64) bool {
	_, err := os.Stat(filepath.Join(sysBlock(dev), "partition"))
	return err == nil
}

// blockRdev returns the device number of path if it is a block device.
func blockRdev(path string) (uint64, bool) {
	var st syscall.Stat_t
	if !strings.HasPrefix(path, "/") || syscall.Stat(path, &st) != nil || st.Mode&syscall.S_IFMT != syscall.S_IFBLK {
		return 0, false
	}
	return st.Rdev, true
}

// mountedDevice returns a description of where dev or one of its partitions
// is mounted or used as swap, or "".
func mountedDevice(dev uint64) (string, error) {
	fam := family(dev)
	ms, err := readMounts()
	if err != nil {
		return "", err
	}
	for _, m := range ms {
		name, ok := fam[m.dev]
		if !ok {
			if d, isBlk := blockRdev(m.source); isBlk {
				name, ok = fam[d]
			}
		}
		if ok {
			return fmt.Sprintf("%s is mounted on %s", name, m.point), nil
		}
	}
	for _, s := range swaps() {
		if d, isBlk := blockRdev(s); isBlk {
			if name, ok := fam[d]; ok {
				return fmt.Sprintf("%s is active swap", name), nil
			}
		}
	}
	return "", nil
}

// swaps returns the paths in /proc/swaps.
func swaps() []string {
	b, err := os.ReadFile("/proc/swaps")
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

// checkDevice refuses a block device that is mounted or swap, itself or
// through one of its partitions.
func checkDevice(path string, dev uint64) error {
	what, err := mountedDevice(dev)
	if err != nil {
		return err
	}
	if what != "" {
		return fmt.Errorf("%w: %s: %s; unmount it first (prezero never overwrites a mounted filesystem, not even with --force)", ErrMounted, path, what)
	}
	return nil
}

// holders lists the devices stacked on dev, its partitions, or on those.
func holders(dev uint64) []string {
	var out []string
	for d, name := range family(dev) {
		if d != dev && !isPartition(d) {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

// checkFile refuses a regular file that is mounted: the source of a mount
// (a FUSE filesystem such as ntfs-3g reads the file itself), a bind-mount
// point, swap, or the backing file of a mounted loop device. A loop device
// over it that is not mounted makes it in use: inUse says so.
func checkFile(path string, st *syscall.Stat_t) (inUse string, err error) {
	same := func(p string) bool {
		var o syscall.Stat_t
		return strings.HasPrefix(p, "/") && syscall.Stat(p, &o) == nil &&
			o.Mode&syscall.S_IFMT == syscall.S_IFREG && o.Dev == st.Dev && o.Ino == st.Ino
	}
	ms, err := readMounts()
	if err != nil {
		return "", err
	}
	mounted := func(what string) error {
		return fmt.Errorf("%w: %s %s; unmount it first (prezero never overwrites a mounted filesystem, not even with --force)", ErrMounted, path, what)
	}
	for _, m := range ms {
		if same(m.source) {
			return "", mounted("is mounted on " + m.point)
		}
		if same(m.point) {
			return "", mounted("is a mount point (" + m.source + " is mounted on it)")
		}
	}
	for _, s := range swaps() {
		if same(s) {
			return "", mounted("is active swap")
		}
	}
	loops, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, bf := range loops {
		b, err := os.ReadFile(bf)
		if err != nil || !same(strings.TrimSpace(string(b))) {
			continue
		}
		name := filepath.Base(filepath.Dir(filepath.Dir(bf)))
		dev, ok := blockRdev("/dev/" + name)
		if ok {
			what, err := mountedDevice(dev)
			if err != nil {
				return "", err
			}
			if what != "" {
				return "", mounted("backs /dev/" + name + ", and " + what)
			}
		}
		inUse = "backs the loop device /dev/" + name
	}
	return inUse, nil
}
