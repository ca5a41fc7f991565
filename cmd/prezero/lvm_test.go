package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prezero/prezero/internal/imgtest"
)

const lvSwapUUID = "6a1d2c3b-4e5f-4061-8273-94a5b6c7d8e9"

// lvmFixture is a GPT disk whose one partition is an LVM PV with an ext4
// root LV and a swap LV, built with the real lvm2 tools.
type lvmFixture struct {
	img, vg    string
	rootOracle []byte // zerofree'd root filesystem
	swap       []byte // the swap LV as made
}

func newLVMFixture(t *testing.T) *lvmFixture {
	t.Helper()
	imgtest.Need(t, "sfdisk", "mkswap", "blkid", "e2fsck")
	dir := t.TempDir()
	f := &lvmFixture{img: filepath.Join(dir, "disk.img")}
	imgtest.RandomFile(t, f.img, 40<<20)
	imgtest.Partition(t, f.img, 512, "label: gpt\nstart=2048, size=36M, type=E6D6D379-F507-44C2-A23C-238F2A3DF928\n")
	root := filepath.Join(dir, "root.img")
	imgtest.Ext(t, root, 16<<20, "-t", "ext4", "-b", "4096")
	f.rootOracle = readFile(t, imgtest.Zerofree(t, root))
	sw := filepath.Join(dir, "sw.img")
	imgtest.Swap(t, sw, 8<<20, "lvswap", lvSwapUUID)
	f.swap = readFile(t, sw)
	l := imgtest.NewLVM(t)
	l.AddPV(f.img, 1<<20, 36<<20)
	l.Create(4)
	l.LV("root", 16)
	l.LV("swap-1", 8)
	l.WriteLV("root", root)
	l.WriteLV("swap-1", sw)
	l.Detach()
	f.vg = l.VG
	return f
}

// TestLVMCommands: map shows the LVs under their partition (text and
// JSON), cat and mount serve each LV, the swap LV is zeroed only with
// --zero-swap and keeps its header, and restore writes an LV stream back.
func TestLVMCommands(t *testing.T) {
	imgtest.NeedRoot(t)
	f := newLVMFixture(t)
	before := imgtest.SHA256File(t, f.img)
	dmSwap := f.vg + "-swap--1"

	out, errOut, code := pz(t, nil, "map", f.img)
	if code != 0 {
		t.Fatalf("map: %d %s", code, errOut)
	}
	t.Logf("map:\n%s", out)
	for _, want := range []string{
		"1/" + f.vg + "/root ", "1/" + f.vg + "/swap-1 ",
		"pass-through: swap: kept; --zero-swap would zero 8.0MiB",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("map lacks %q", want)
		}
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "1/"+f.vg+"/root ") && (!strings.Contains(line, "ext4") || !strings.HasSuffix(line, "zeroed")) {
			t.Errorf("root row: %q", line)
		}
	}

	js, _, code := pz(t, nil, "map", "--json", "--zero-swap", f.img)
	if code != 0 {
		t.Fatal("map --json failed")
	}
	var m mapJSON
	if err := json.Unmarshal([]byte(js), &m); err != nil {
		t.Fatal(err)
	}
	if len(m.Partitions) != 1 || len(m.Partitions[0].Volumes) != 2 {
		t.Fatalf("json: %s", js)
	}
	for _, v := range m.Partitions[0].Volumes {
		if !v.Zeroed || v.Number != 1 || !strings.HasPrefix(v.File, "lv/"+f.vg+"-") {
			t.Errorf("json volume %+v", v)
		}
	}

	cat := func(args ...string) []byte {
		t.Helper()
		o, e, code := pz(t, nil, append([]string{"cat"}, args...)...)
		if code != 0 {
			t.Fatalf("cat %v: %d %s", args, code, e)
		}
		return []byte(o)
	}
	if got := cat(f.img, f.vg+"/root"); !bytes.Equal(got, f.rootOracle) {
		t.Errorf("cat VG/root differs from zerofree's root (at %d)", firstDiff(got, f.rootOracle))
	}
	if got := cat(f.img, dmSwap); !bytes.Equal(got, f.swap) {
		t.Error("cat of the swap LV without --zero-swap is not the swap as made")
	}
	zs := cat("--zero-swap", f.img, f.vg+"/swap-1")
	want := bytes.Clone(f.swap)
	clear(want[4096:])
	if !bytes.Equal(zs, want) {
		t.Errorf("cat --zero-swap of the swap LV: first difference at %d", firstDiff(zs, want))
	}

	// Restore both LV streams to files; the swap keeps its identity.
	dir := t.TempDir()
	for _, c := range []struct {
		name string
		data []byte
	}{{"root", f.rootOracle}, {"swap", zs}} {
		in := filepath.Join(dir, c.name+".stream")
		writeFile(t, in, c.data)
		target := filepath.Join(dir, c.name+".restored")
		if _, e, code := pz(t, nil, "restore", "--input", in, target); code != 0 {
			t.Fatalf("restore %s: %s", c.name, e)
		}
		if got := readFile(t, target); !bytes.Equal(got, c.data) {
			t.Fatalf("restored %s differs", c.name)
		}
	}
	imgtest.Run(t, "e2fsck", "-fn", filepath.Join(dir, "root.restored"))
	blk := func(p string) string {
		out := imgtest.Run(t, "blkid", "-p", "-o", "export", "-s", "UUID", "-s", "LABEL", "-s", "TYPE", p)
		_, rest, _ := strings.Cut(out, "\n") // DEVNAME=...
		return rest
	}
	orig := filepath.Join(dir, "swap.orig")
	writeFile(t, orig, f.swap)
	if got, want := blk(filepath.Join(dir, "swap.restored")), blk(orig); got != want || !strings.Contains(got, lvSwapUUID) {
		t.Errorf("blkid of the restored swap:\n%s\nof the original:\n%s", got, want)
	}
	swaponCheck(t, filepath.Join(dir, "swap.restored"))

	// Onto the LV itself: a block device named like /dev/VG/LV (here a
	// loop device over old random bytes, through a VG/LV symlink, as
	// udev makes for a device-mapper LV).
	lvImg := filepath.Join(dir, "lv.img")
	imgtest.RandomFile(t, lvImg, int64(len(f.rootOracle)))
	dev := strings.TrimSpace(imgtest.Run(t, "losetup", "-f", "--show", lvImg))
	t.Cleanup(func() { imgtest.Detach(t, dev, lvImg) })
	link := filepath.Join(dir, "dev", f.vg, "root")
	if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(dev, link); err != nil {
		t.Fatal(err)
	}
	if _, e, code := pz(t, nil, "restore", "--input", filepath.Join(dir, "root.stream"), link); code != 0 {
		t.Fatalf("restore onto %s: %s", link, e)
	}
	if got := readFile(t, dev); !bytes.Equal(got, f.rootOracle) {
		t.Errorf("the block device after restore differs from the LV stream at %d", firstDiff(got, f.rootOracle))
	}
	imgtest.Run(t, "e2fsck", "-fn", dev)

	// backup --zero-swap: the archived partition holds the zeroed swap LV
	// (and the root LV as zerofree leaves it).
	if _, err := exec.LookPath("borg"); err == nil || imgtest.InCI() {
		b, repo, env := borgRepo(t, "borg")
		backup(t, env, "--zero-swap", "--partitions", f.img, repo+"::parts")
		got := readFile(t, extract(t, b, env, repo, "parts", "part1.img"))
		want := readFile(t, catFile(t, f.img, "1"))
		zsPart := cat("--zero-swap", f.img, "1")
		if !bytes.Equal(got, zsPart) || bytes.Equal(zsPart, want) {
			t.Errorf("backup --zero-swap: part1.img differs from cat --zero-swap 1 at %d (or --zero-swap changed nothing)", firstDiff(got, zsPart))
		}
	}

	// The mount serves lv/VG-LV.img.
	mnt := t.TempDir()
	mountBG(t, f.img, mnt, "--zero-swap")
	if got := readFile(t, filepath.Join(mnt, "lv", f.vg+"-root.img")); !bytes.Equal(got, f.rootOracle) {
		t.Error("lv/VG-root.img differs from zerofree's root")
	}
	if got := readFile(t, filepath.Join(mnt, "lv", dmSwap+".img")); !bytes.Equal(got, zs) {
		t.Error("lv/VG-swap--1.img differs from the zeroed swap")
	}
	if _, e, code := pz(t, nil, "umount", mnt); code != 0 {
		t.Fatalf("umount: %s", e)
	}
	if imgtest.SHA256File(t, f.img) != before {
		t.Fatal("source changed")
	}
}

// swaponCheck activates a restored swap area on a loop device and
// deactivates it at once, where this machine allows swapon.
func swaponCheck(t *testing.T, img string) {
	t.Helper()
	dev := strings.TrimSpace(imgtest.Run(t, "losetup", "-f", "--show", img))
	defer imgtest.Detach(t, dev, img)
	out, err := imgtest.Output("swapon", dev)
	if err != nil {
		if strings.Contains(out, "Operation not permitted") || (strings.Contains(out, "Invalid argument") && !imgtest.InCI()) {
			t.Logf("swapon is not permitted on this machine, step skipped: %s", out)
			return
		}
		t.Fatalf("swapon refused the restored swap: %v\n%s", err, out)
	}
	imgtest.Run(t, "swapoff", dev)
}
