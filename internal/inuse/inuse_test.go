package inuse

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/prezero/prezero/internal/imgtest"
)

// fakeSystem is a disk sda with partitions sda1 and sda2, a device-mapper
// device dm-0 stacked on sda1, an unrelated disk sdb, two loop devices
// loop0 and loop1 over the file /img/disk.img, a loop device loop2 over the
// device node /dev/sda2 and loop3 over /dev/loop2; /img/other.img is
// another file.
func fakeSystem(t *testing.T, mountinfo, swaps string) system {
	t.Helper()
	root := t.TempDir()
	sys := filepath.Join(root, "sys")
	type dev struct{ name, num, dir, holder string }
	devs := []dev{
		{"sda", "8:0", "devices/pci/block/sda", ""},
		{"sda1", "8:1", "devices/pci/block/sda/sda1", "dm-0"},
		{"sda2", "8:2", "devices/pci/block/sda/sda2", ""},
		{"dm-0", "253:0", "devices/virtual/block/dm-0", ""},
		{"sdb", "8:16", "devices/pci/block/sdb", ""},
		{"loop0", "7:0", "devices/virtual/block/loop0", ""},
		{"loop1", "7:1", "devices/virtual/block/loop1", ""},
		{"loop2", "7:2", "devices/virtual/block/loop2", ""},
		{"loop3", "7:3", "devices/virtual/block/loop3", ""},
	}
	backing := map[string]string{"loop0": "/img/disk.img", "loop1": "/img/disk.img", "loop2": "/dev/sda2", "loop3": "/dev/loop2"}
	files := map[string]string{}
	for _, d := range devs {
		files[filepath.Join(d.dir, "dev")] = d.num + "\n"
		files[filepath.Join(d.dir, "uevent")] = "MAJOR=x\nDEVNAME=" + d.name + "\n"
		if strings.Count(d.dir, "/") == 4 {
			files[filepath.Join(d.dir, "partition")] = "1\n"
		}
		if err := os.MkdirAll(filepath.Join(sys, d.dir, "holders"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, file := range backing {
		files["devices/virtual/block/"+name+"/loop/backing_file"] = file + "\n"
		os.MkdirAll(filepath.Join(sys, "devices/virtual/block", name, "loop"), 0o755)
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(sys, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range devs {
		links := []string{"dev/block/" + d.num, "class/block/" + d.name}
		if backing[d.name] != "" {
			links = append(links, "block/"+d.name)
		}
		for _, link := range links {
			p := filepath.Join(sys, link)
			os.MkdirAll(filepath.Dir(p), 0o755)
			if err := os.Symlink(filepath.Join(sys, d.dir), p); err != nil {
				t.Fatal(err)
			}
		}
		if d.holder != "" {
			if err := os.Symlink("../../../"+d.holder, filepath.Join(sys, d.dir, "holders", d.holder)); err != nil {
				t.Fatal(err)
			}
		}
	}
	write := func(name, s string) string {
		p := filepath.Join(root, name)
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	nums := map[string][2]uint64{"sda": {8, 0}, "sda1": {8, 1}, "sda2": {8, 2}, "dm-0": {253, 0}, "sdb": {8, 16},
		"loop0": {7, 0}, "loop1": {7, 1}, "loop2": {7, 2}, "loop3": {7, 3}}
	inodes := map[string]uint64{"/img/disk.img": 10, "/img/other.img": 11}
	return system{
		sys:       sys,
		mountinfo: write("mountinfo", mountinfo),
		swaps:     write("swaps", "Filename Type Size Used Priority\n"+swaps),
		stat: func(path string, st *syscall.Stat_t) error {
			if ino, ok := inodes[path]; ok {
				*st = syscall.Stat_t{Mode: syscall.S_IFREG | 0o644, Dev: mkdev(254, 0), Ino: ino}
				return nil
			}
			n, ok := nums[strings.TrimPrefix(path, "/dev/")]
			if !ok {
				return syscall.ENOENT
			}
			*st = syscall.Stat_t{Mode: syscall.S_IFBLK | 0o660, Rdev: mkdev(n[0], n[1])}
			return nil
		},
	}
}

func mkdev(major, minor uint64) uint64 {
	return minor&0xff | (major&0xfff)<<8 | (minor&^0xff)<<12 | (major&^0xfff)<<32
}

func TestFakeSystem(t *testing.T) {
	const file, other = "/img/disk.img", "/img/other.img"
	for _, c := range []struct {
		name      string
		mountinfo string
		swaps     string
		busy      map[string]bool // source -> refused (Writable)
		anyBusy   map[string]bool // target -> refused (Any)
	}{
		{"nothing mounted", "", "", map[string]bool{"/dev/sda": false, "/dev/sda1": false},
			map[string]bool{"/dev/sda": false, "/dev/sda1": false, "/dev/loop0": false, file: false}},
		{"partition rw", "1 0 8:2 / /home rw - ext4 /dev/sda2 rw\n", "",
			map[string]bool{"/dev/sda": true, "/dev/sda2": true, "/dev/sda1": false, "/dev/sdb": false},
			map[string]bool{"/dev/sda": true, "/dev/sda2": true, "/dev/sda1": false, "/dev/sdb": false}},
		{"partition ro", "1 0 8:2 / /home ro - ext4 /dev/sda2 ro\n", "",
			map[string]bool{"/dev/sda": false, "/dev/sda2": false},
			map[string]bool{"/dev/sda": true, "/dev/sda2": true, "/dev/sda1": false, "/dev/sdb": false}},
		{"holder of a partition rw", "1 0 253:0 / /srv rw - xfs /dev/mapper/vg-srv rw\n", "",
			map[string]bool{"/dev/sda": true, "/dev/sda1": true, "/dev/dm-0": true, "/dev/sda2": false},
			map[string]bool{"/dev/sda": true, "/dev/sda1": true, "/dev/dm-0": true, "/dev/sda2": false}},
		{"holder of a partition ro", "1 0 253:0 / /srv ro - xfs /dev/mapper/vg-srv ro\n", "",
			map[string]bool{"/dev/sda": false, "/dev/sda1": false, "/dev/dm-0": false},
			map[string]bool{"/dev/sda": true, "/dev/sda1": true, "/dev/dm-0": true, "/dev/sda2": false}},
		{"btrfs anonymous dev", "1 0 0:44 / /data rw - btrfs /dev/sda1 rw\n", "",
			map[string]bool{"/dev/sda": true, "/dev/sda1": true, "/dev/sda2": false},
			map[string]bool{"/dev/sda": true, "/dev/sda1": true, "/dev/sda2": false}},
		{"whole disk rw counts for a partition", "1 0 8:0 / /raw rw - ext4 /dev/sda rw\n", "",
			map[string]bool{"/dev/sda1": true, "/dev/sdb": false},
			map[string]bool{"/dev/sda1": true, "/dev/sdb": false}},
		{"swap", "", "/dev/sda2 partition 1000 0 -2\n", map[string]bool{"/dev/sda": true, "/dev/sda1": false},
			map[string]bool{"/dev/sda": true, "/dev/sda1": false, "/dev/sda2": true}},
		{"loop over a file, rw", "1 0 7:0 / /mnt rw - ext4 /dev/loop0 rw\n", "",
			map[string]bool{"/dev/loop0": true, "/dev/loop1": true, file: true, other: false, "/dev/loop2": false},
			map[string]bool{"/dev/loop0": true, "/dev/loop1": true, file: true, other: false}},
		{"loop over a file, ro", "1 0 7:0 / /mnt ro - ext4 /dev/loop0 ro\n", "",
			map[string]bool{"/dev/loop0": false, "/dev/loop1": false, file: false},
			map[string]bool{"/dev/loop0": true, "/dev/loop1": true, file: true, other: false}},
		// ntfs-3g mounts the first loop (an anonymous device number, the
		// loop as its source); the second loop over the same file reads
		// the same bytes.
		{"second loop over a file mounted rw by FUSE through the first", "1 0 0:60 / /mnt rw - fuseblk /dev/loop0 rw\n", "",
			map[string]bool{"/dev/loop1": true, "/dev/loop0": true, file: true, other: false, "/dev/sda": false},
			map[string]bool{"/dev/loop1": true, file: true, "/dev/sda2": false}},
		{"file mounted by FUSE, checked through a loop over it", "1 0 0:50 / /mnt rw - fuseblk /img/disk.img rw\n", "",
			map[string]bool{"/dev/loop0": true, "/dev/loop1": true, "/dev/loop2": false},
			map[string]bool{"/dev/loop0": true, "/dev/loop1": true, "/dev/loop2": false}},
		{"loop over a partition node, mounted", "1 0 7:2 / /mnt rw - ext4 /dev/loop2 rw\n", "",
			map[string]bool{"/dev/sda2": true, "/dev/sda": true, "/dev/loop2": true, "/dev/loop3": true, "/dev/sda1": false, "/dev/loop0": false},
			map[string]bool{"/dev/sda2": true, "/dev/sda": true, "/dev/loop3": true, "/dev/sda1": false, file: false}},
		{"loop over a loop over a partition, mounted", "1 0 7:3 / /mnt ro - ext4 /dev/loop3 ro\n", "",
			map[string]bool{"/dev/sda2": false, "/dev/loop3": false},
			map[string]bool{"/dev/sda2": true, "/dev/sda": true, "/dev/loop2": true, "/dev/loop3": true, "/dev/sda1": false}},
		{"partition mounted, loop over its node checked", "1 0 8:2 / /home rw - ext4 /dev/sda2 rw\n", "",
			map[string]bool{"/dev/loop2": true, "/dev/loop3": true, "/dev/loop0": false},
			map[string]bool{"/dev/loop2": true, "/dev/loop3": true, "/dev/loop0": false}},
		{"swap on a loop over a partition node", "", "/dev/loop2 partition 1000 0 -2\n",
			map[string]bool{"/dev/sda2": true, "/dev/sda": true, "/dev/sda1": false},
			map[string]bool{"/dev/sda2": true, "/dev/loop3": true}},
		{"file mounted by FUSE, rw", "1 0 0:50 / /mnt rw - fuseblk /img/disk.img rw\n", "",
			map[string]bool{file: true, other: false}, map[string]bool{file: true, other: false}},
		{"file mounted by FUSE, ro", "1 0 0:50 / /mnt ro - fuseblk /img/disk.img ro\n", "",
			map[string]bool{file: false}, map[string]bool{file: true, other: false}},
		{"file bind-mounted", "1 0 254:0 /data/disk.img /img/disk.img rw - ext4 /dev/vda rw\n", "",
			map[string]bool{file: false}, map[string]bool{file: true, other: false}},
		{"swap file", "", "/img/disk.img file 1000 0 -2\n",
			map[string]bool{file: true, other: false}, map[string]bool{file: true, other: false}},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := fakeSystem(t, c.mountinfo, c.swaps)
			for src, busy := range c.busy {
				err := s.check(src, Writable)
				var ie *Error
				if got := errors.As(err, &ie); got != busy || (!busy && err != nil) {
					t.Errorf("check(%s) = %v, want busy=%v", src, err, busy)
				}
			}
			for target, busy := range c.anyBusy {
				err := s.check(target, Any)
				var ie *Error
				if got := errors.As(err, &ie); got != busy || (!busy && err != nil) {
					t.Errorf("check(%s, Any) = %v, want busy=%v", target, err, busy)
				}
			}
		})
	}
}

func TestErrorNamesTheUse(t *testing.T) {
	s := fakeSystem(t, "1 0 8:2 / /home\\040dir ro - ext4 /dev/sda2 ro\n", "/dev/sda1 partition 1000 0 -2\n")
	err := s.check("/dev/sda", Any)
	want := "/dev/sda is in use: /dev/sda2 is mounted read-only on /home dir (ext4); /dev/sda1 is in use as swap. Unmount it"
	if err == nil || !strings.HasPrefix(err.Error(), want) || !strings.Contains(err.Error(), "not even with --force") {
		t.Errorf("check(/dev/sda, Any) = %v\nwant it to start %q", err, want)
	}
	s = fakeSystem(t, "1 0 7:0 / /mnt rw - ext4 /dev/loop0 rw\n", "")
	err = s.check("/img/disk.img", Writable)
	var ie *Error
	if !errors.As(err, &ie) || ie.Via != "/dev/loop0" || !strings.Contains(err.Error(), "through /dev/loop0: /dev/loop0 is mounted read-write on /mnt") ||
		!strings.Contains(err.Error(), "snapshot") || !strings.Contains(err.Error(), "--force") {
		t.Errorf("check(file behind a loop, Writable) = %v", err)
	}
}

func TestStackedAndLoops(t *testing.T) {
	s := fakeSystem(t, "", "")
	for path, want := range map[string]string{
		"/dev/sda":       "/dev/dm-0,/dev/loop2,/dev/loop3", // through its partitions
		"/dev/sda1":      "/dev/dm-0",                       // not the disk it is on
		"/dev/sda2":      "/dev/loop2,/dev/loop3",           // loops over the node, recursively
		"/dev/loop2":     "/dev/loop3",
		"/dev/dm-0":      "",
		"/img/disk.img":  "",
		"/dev/loop0":     "", // not loop1, which is beside it, not on it
		"/img/other.img": "",
	} {
		got, err := s.stacked(path)
		if err != nil || strings.Join(got, ",") != want {
			t.Errorf("stacked(%s) = %q, %v; want %q", path, got, err, want)
		}
	}
	for path, want := range map[string]string{"/img/disk.img": "/dev/loop0,/dev/loop1", "/img/other.img": "", "/dev/sda": ""} {
		got, err := s.loops(path)
		if err != nil || strings.Join(got, ",") != want {
			t.Errorf("loops(%s) = %q, %v; want %q", path, got, err, want)
		}
	}
	if _, err := s.stacked("/dev/missing"); err == nil {
		t.Errorf("stacked of a missing path: no error")
	}
}

func TestLoopMountedRW(t *testing.T) {
	imgtest.NeedRoot(t)
	imgtest.Need(t, "losetup", "mkfs.ext4", "mount", "umount")
	img := filepath.Join(t.TempDir(), "ext.img")
	imgtest.RandomFile(t, img, 16<<20)
	imgtest.Run(t, "mkfs.ext4", "-q", "-F", "-E", "nodiscard", img)
	dev := strings.TrimSpace(imgtest.Run(t, "losetup", "-f", "--show", img))
	t.Cleanup(func() { imgtest.Detach(t, dev, img) })
	if err := Check(dev, Writable); err != nil {
		t.Fatalf("unmounted device: %v", err)
	}
	mnt := t.TempDir()
	imgtest.Run(t, "mount", "-o", "rw", dev, mnt)
	t.Cleanup(func() { imgtest.Output("umount", mnt) })

	var ie *Error
	err := Check(dev, Writable)
	if !errors.As(err, &ie) || len(ie.Uses) != 1 || ie.Uses[0].MountPoint != mnt {
		t.Fatalf("device mounted rw: %v", err)
	}
	if !strings.Contains(err.Error(), "snapshot") || !strings.Contains(err.Error(), "--force") {
		t.Errorf("error gives no way out: %v", err)
	}
	if err := Check(img, Writable); !errors.As(err, &ie) || ie.Via != dev {
		t.Fatalf("backing file of a device mounted rw: %v", err)
	}
	imgtest.Run(t, "mount", "-o", "remount,ro", mnt)
	if err := Check(dev, Writable); err != nil {
		t.Fatalf("device mounted read-only: %v", err)
	}
	if fstype, err := Mounted(mnt); err != nil || fstype != "ext4" {
		t.Errorf("Mounted(%s) = %q, %v; want ext4", mnt, fstype, err)
	}
}

// loop attaches a loop device over path (with extra losetup arguments, such
// as -o and --sizelimit) and detaches it at cleanup.
func loop(t *testing.T, path string, args ...string) string {
	t.Helper()
	dev := strings.TrimSpace(imgtest.Run(t, "losetup", append(append([]string{"-f", "--show"}, args...), path)...))
	t.Cleanup(func() { imgtest.Detach(t, dev, path) })
	return dev
}

// A loop device over the node of another one (losetup -o 1M --sizelimit
// over /dev/loopN) appears in no holders directory; mounted, it makes the
// lower device busy, for a restore (Any) and for a reader (Writable).
func TestLoopOverDeviceNode(t *testing.T) {
	imgtest.NeedRoot(t)
	imgtest.Need(t, "losetup", "mkfs.ext4", "mount", "umount")
	img := filepath.Join(t.TempDir(), "disk.img")
	imgtest.RandomFile(t, img, 24<<20)
	lower := loop(t, img)
	upper := loop(t, lower, "-o", "1M", "--sizelimit", "16M")
	imgtest.Run(t, "mkfs.ext4", "-q", "-F", "-E", "nodiscard", upper)
	if err := Check(lower, Any); err != nil {
		t.Fatalf("nothing mounted: %v", err)
	}
	if got, err := Stacked(lower); err != nil || strings.Join(got, ",") != upper {
		t.Errorf("Stacked(%s) = %q, %v; want %s", lower, got, err, upper)
	}
	mnt := t.TempDir()
	imgtest.Run(t, "mount", upper, mnt)
	t.Cleanup(func() { imgtest.Output("umount", mnt) })

	for _, mode := range []Mode{Any, Writable} {
		var ie *Error
		err := Check(lower, mode)
		if !errors.As(err, &ie) || len(ie.Uses) != 1 || ie.Uses[0].Device != upper || ie.Uses[0].MountPoint != mnt ||
			!strings.Contains(err.Error(), "a loop device over "+lower) {
			t.Errorf("Check(%s, %d) with %s mounted: %v", lower, mode, upper, err)
		}
	}
	var ie *Error
	if err := Check(img, Any); !errors.As(err, &ie) || ie.Via != lower {
		t.Errorf("Check of the backing file: %v", err)
	}
	// Seen from the upper device, the lower one is under it.
	imgtest.Umount(t, mnt)
	imgtest.Run(t, "mkfs.ext4", "-q", "-F", "-E", "nodiscard", lower)
	imgtest.Run(t, "mount", lower, mnt)
	if err := Check(upper, Writable); !errors.As(err, &ie) || ie.Uses[0].Device != lower ||
		!strings.Contains(err.Error(), "the backing device of "+upper) {
		t.Errorf("Check(%s) with its backing device %s mounted: %v", upper, lower, err)
	}
	imgtest.Run(t, "mount", "-o", "remount,ro", mnt)
	if err := Check(upper, Writable); err != nil {
		t.Errorf("backing device mounted read-only: %v", err)
	}
	if err := Check(upper, Any); !errors.As(err, &ie) {
		t.Errorf("backing device mounted read-only, Any: %v", err)
	}
}

// A second loop device over a file that is mounted read-write through a
// first one reads bytes that change: the kernel's ext4 and ntfs-3g (FUSE,
// with the first loop as its source) alike.
func TestSecondLoopOverMountedFile(t *testing.T) {
	imgtest.NeedRoot(t)
	imgtest.Need(t, "losetup", "mount", "umount")
	for _, fs := range []string{"ext4", "ntfs-3g"} {
		t.Run(fs, func(t *testing.T) {
			img := filepath.Join(t.TempDir(), "disk.img")
			first := ""
			mnt := t.TempDir()
			if fs == "ext4" {
				imgtest.Need(t, "mkfs.ext4")
				imgtest.RandomFile(t, img, 16<<20)
				imgtest.Run(t, "mkfs.ext4", "-q", "-F", "-E", "nodiscard", img)
				first = loop(t, img)
				imgtest.Run(t, "mount", first, mnt)
				t.Cleanup(func() { imgtest.Output("umount", mnt) })
			} else {
				imgtest.MakeNTFS(t, img, 16<<20, 0, 0)
				first = loop(t, img)
				imgtest.MountNTFS(t, first, mnt, false)
			}
			second := loop(t, img)
			var ie *Error
			err := Check(second, Writable)
			if !errors.As(err, &ie) || ie.Uses[0].Device != first || ie.Uses[0].MountPoint != mnt ||
				!strings.Contains(err.Error(), "over the same file "+img) {
				t.Fatalf("Check(%s) while %s over the same file is mounted rw on %s: %v", second, first, mnt, err)
			}
			if err := Check(second, Any); !errors.As(err, &ie) {
				t.Errorf("Check(%s, Any): %v", second, err)
			}
			if err := Check(img, Writable); !errors.As(err, &ie) {
				t.Errorf("Check(%s): %v", img, err)
			}
		})
	}
}
