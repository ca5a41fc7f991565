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

func TestParseMountinfo(t *testing.T) {
	text := `27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard
28 27 0:25 / /mnt/with\040space ro,nosuid shared:5 master:1 - tmpfs none ro,size=4k
29 27 0:40 / /data rw,relatime - btrfs /dev/sdb1 rw,space_cache=v2
30 27 7:0 / /ro-bind ro,relatime - ext4 /dev/loop0 rw
garbage line
`
	got, err := parseMountinfo(text)
	if err != nil {
		t.Fatal(err)
	}
	want := []mount{
		{dev: "254:0", point: "/", fstype: "ext4", source: "/dev/vda", rw: true},
		{dev: "0:25", point: "/mnt/with space", fstype: "tmpfs", source: "none", rw: false},
		{dev: "0:40", point: "/data", fstype: "btrfs", source: "/dev/sdb1", rw: true},
		{dev: "7:0", point: "/ro-bind", fstype: "ext4", source: "/dev/loop0", rw: true},
	}
	if len(got) != len(want) {
		t.Fatalf("parsed %d mounts, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("line %d: %+v, want %+v", i, got[i], want[i])
		}
	}
}

// TestParseMountinfoTooLong: a line the parser cannot read is an error, not
// a mount left out.
func TestParseMountinfoTooLong(t *testing.T) {
	text := "27 1 254:0 / / rw - ext4 /dev/vda rw\n28 27 0:25 / /" + strings.Repeat("x", 2<<20) + " rw - tmpfs none rw\n"
	if _, err := parseMountinfo(text); err == nil {
		t.Errorf("a 2 MiB line was read without an error")
	}
}

// fakeSystem is a disk sda with partitions sda1 and sda2, a device-mapper
// device dm-0 stacked on sda1, an unrelated disk sdb, and a loop device
// loop0 over the file /img/disk.img; /img/other.img is another file.
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
	}
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
	files["devices/virtual/block/loop0/loop/backing_file"] = "/img/disk.img\n"
	os.MkdirAll(filepath.Join(sys, "devices/virtual/block/loop0/loop"), 0o755)
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(sys, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range devs {
		links := []string{"dev/block/" + d.num, "class/block/" + d.name}
		if d.name == "loop0" {
			links = append(links, "block/loop0")
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
	nums := map[string][2]uint64{"sda": {8, 0}, "sda1": {8, 1}, "sda2": {8, 2}, "dm-0": {253, 0}, "sdb": {8, 16}, "loop0": {7, 0}}
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
			map[string]bool{"/dev/loop0": true, file: true, other: false},
			map[string]bool{"/dev/loop0": true, file: true, other: false}},
		{"loop over a file, ro", "1 0 7:0 / /mnt ro - ext4 /dev/loop0 ro\n", "",
			map[string]bool{"/dev/loop0": false, file: false},
			map[string]bool{"/dev/loop0": true, file: true, other: false}},
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
		"/dev/sda":       "/dev/dm-0", // through its partition sda1
		"/dev/sda1":      "/dev/dm-0", // not the disk it is on
		"/dev/sda2":      "",
		"/dev/dm-0":      "",
		"/img/disk.img":  "",
		"/dev/loop0":     "",
		"/img/other.img": "",
	} {
		got, err := s.stacked(path)
		if err != nil || strings.Join(got, ",") != want {
			t.Errorf("stacked(%s) = %q, %v; want %q", path, got, err, want)
		}
	}
	for path, want := range map[string]string{"/img/disk.img": "/dev/loop0", "/img/other.img": "", "/dev/sda": ""} {
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
	t.Cleanup(func() { imgtest.Output("losetup", "-d", dev) })
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
