package source

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prezero/prezero/internal/imgtest"
	"github.com/prezero/prezero/internal/layout"
)

const swapUUID = "5f3c1b9e-2a4d-4c6e-9f10-0123456789ab"

// lvmDisk is a disk built with the real lvm2 tools, and what prezero must
// make of it: want is the source with every LV's filesystem replaced by its
// peer-zeroed copy and every free extent zeroed; lvs maps each LV to its
// expected stream (nil: it must pass through) .
type lvmDisk struct {
	img   string
	want  []byte
	lvs   map[string][]byte // "VG/LV" → expected stream, or nil
	vg    string
	parts map[string]int64 // loop device → partition start in img
	swaps [][2]int64       // disk ranges of swap areas (want has them zeroed past the first page)
	kept  map[string]bool  // LVs whose expected stream is unchanged bytes (swap without ZeroSwap)
	// rawSwap holds the swap LVs' bytes as made
	rawSwap map[string][]byte
}

// keepSwap returns the expectations without Options.ZeroSwap: swap areas
// unchanged.
func (d *lvmDisk) keepSwap(t *testing.T) *lvmDisk {
	k := *d
	orig := readAll(t, d.img)
	k.want = bytes.Clone(d.want)
	for _, r := range d.swaps {
		copy(k.want[r[0]:r[0]+r[1]], orig[r[0]:r[0]+r[1]])
	}
	k.lvs, k.kept = map[string][]byte{}, map[string]bool{}
	for name, want := range d.lvs {
		k.lvs[name] = want
		if raw, ok := d.rawSwap[name]; ok {
			k.lvs[name] = raw
			k.kept[name] = true
		}
	}
	return &k
}

// fsLV is an LV to make and the filesystem to put in it.
type fsLV struct {
	name string
	fs   string // a testFilesystems name, "swap", or "" for random bytes
}

// build runs after the VG exists: it writes the filesystems into their LVs
// and computes the expected disk.
func (d *lvmDisk) fill(t *testing.T, l *imgtest.LVM, fss map[string]*fsImage, lvs []fsLV) {
	t.Helper()
	dir := t.TempDir()
	d.lvs = map[string][]byte{}
	d.vg = l.VG
	type placed struct {
		segs []imgtest.Segment
		want []byte
	}
	var all []placed
	for _, lv := range lvs {
		segs := l.Segments(lv.name)
		var want []byte
		switch lv.fs {
		case "":
		case "swap":
			var size int64
			for _, s := range segs {
				size += s.Len
			}
			sw := filepath.Join(dir, lv.name+".swap")
			imgtest.Swap(t, sw, size, "lvswap", swapUUID)
			l.WriteLV(lv.name, sw)
			want = readAll(t, sw)
			if d.rawSwap == nil {
				d.rawSwap = map[string][]byte{}
			}
			d.rawSwap[l.VG+"/"+lv.name] = bytes.Clone(want)
			clear(want[4096:])
		default:
			f := fss[lv.fs]
			l.WriteLV(lv.name, f.img)
			want = readAll(t, f.oracle)
		}
		d.lvs[l.VG+"/"+lv.name] = want
		all = append(all, placed{segs, want})
		if lv.fs == "swap" {
			for _, pc := range imgtest.LVPieces(segs) {
				d.swaps = append(d.swaps, [2]int64{d.parts[pc.Dev] + pc.DevOff, pc.Len})
			}
		}
	}
	// Free extents, as pvs --segments reports them.
	var free [][2]int64
	for dev, start := range d.parts {
		for _, f := range l.FreeSegments(dev) {
			free = append(free, [2]int64{start + f[0], f[1]})
		}
	}
	l.Detach()
	d.want = readAll(t, d.img)
	for _, p := range all {
		if p.want == nil {
			continue
		}
		for _, pc := range imgtest.LVPieces(p.segs) {
			copy(d.want[d.parts[pc.Dev]+pc.DevOff:], p.want[pc.LVOff:pc.LVOff+pc.Len])
		}
	}
	for _, f := range free {
		clear(d.want[f[0] : f[0]+f[1]])
	}
}

// checkLVM maps img and compares every stream with the expectations.
func checkLVM(t *testing.T, d *lvmDisk, opt Options) *Source {
	t.Helper()
	before := imgtest.SHA256File(t, d.img)
	src, err := Open(d.img, opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	for _, p := range src.Parts {
		t.Logf("part %s: %s %s; notes %q", p.Label(), p.FS, p.Status(), p.Notes)
	}
	for _, lv := range src.LVs {
		t.Logf("lv %s (%s): %s %s", lv.Label(), lv.TypeName, lv.FS, lv.Status())
	}
	compare(t, "disk", src.Disk(), d.want)
	for name, want := range d.lvs {
		var lv *Part
		for _, p := range src.LVs {
			if p.LV == name {
				lv = p
			}
		}
		if lv == nil {
			t.Fatalf("LV %s not found", name)
		}
		if want == nil {
			continue
		}
		if !lv.Zeroed && !d.kept[name] {
			t.Errorf("LV %s passes through: %s", name, lv.Status())
		}
		r, err := src.Lookup(name)
		if err != nil {
			t.Fatal(err)
		}
		compare(t, name, r, want)
	}
	if after := imgtest.SHA256File(t, d.img); after != before {
		t.Fatal("source image changed")
	}
	return src
}

func findLV(t *testing.T, src *Source, name string) *Part {
	t.Helper()
	for _, p := range src.LVs {
		if p.LV == name {
			return p
		}
	}
	t.Fatalf("LV %s not found among %d", name, len(src.LVs))
	return nil
}

// newLVMDisk makes a random-filled GPT disk with an sfdisk script.
func newLVMDisk(t *testing.T, size int64, script string) (*lvmDisk, []int64, []int64) {
	t.Helper()
	d := &lvmDisk{img: filepath.Join(t.TempDir(), "disk.img"), parts: map[string]int64{}}
	imgtest.RandomFile(t, d.img, size)
	imgtest.Partition(t, d.img, 512, script)
	l := readLayout(t, d.img)
	var starts, sizes []int64
	for _, p := range l.Partitions {
		starts = append(starts, p.Start)
		sizes = append(sizes, p.Size)
	}
	return d, starts, sizes
}

// TestLVM is the main case: a GPT disk with an ext2 partition, a swap
// partition and two PVs of one VG holding an LV in two non-adjacent
// segments (ext4), a striped LV across both PVs (NTFS), a swap LV, an LV of
// random bytes, and the remains of a deleted LV in the free extents.
func TestLVM(t *testing.T) {
	fss := testFilesystems(t)
	imgtest.Need(t, "mkswap", "blkid")
	d, starts, sizes := newLVMDisk(t, 160*mib, "label: gpt\nsize=16M, type=L\nsize=8M, type=S\nsize=64M, type=E6D6D379-F507-44C2-A23C-238F2A3DF928\nsize=40M, type=E6D6D379-F507-44C2-A23C-238F2A3DF928\n")
	imgtest.WriteAt(t, d.img, starts[0], fss["ext2-1k"].img)
	sw := filepath.Join(t.TempDir(), "part.swap")
	imgtest.Swap(t, sw, sizes[1], "partswap", swapUUID)
	imgtest.WriteAt(t, d.img, starts[1], sw)
	l := imgtest.NewLVM(t)
	pv0 := l.AddPV(d.img, starts[2], sizes[2])
	// pv1 keeps no metadata of its own: it joins the VG through pv0's.
	pv1 := l.AddPV(d.img, starts[3], sizes[3], "--metadatacopies", "0")
	d.parts[pv0], d.parts[pv1] = starts[2], starts[3]
	l.Create(1)
	l.LV("root", 16, pv0)
	l.LV("raw", 4, pv0)
	l.LV("old", 8, pv1)
	l.Run("lvextend", "-y", "-L", "+16m", l.VG+"/root", pv0)
	l.LV("data", 24, "-i2", "-I64k", pv0, pv1)
	l.Run("lvremove", "-y", l.VG+"/old")
	l.LV("my-swap", 8, pv1)
	if n := len(l.Segments("root")); n != 2 {
		t.Fatalf("root has %d segments, want 2", n)
	}
	d.fill(t, l, fss, []fsLV{{"root", "ext4"}, {"data", "ntfs"}, {"my-swap", "swap"}, {"raw", ""}})
	copy(d.want[starts[0]:], readAll(t, fss["ext2-1k"].oracle))
	clear(d.want[starts[1]+4096 : starts[1]+sizes[1]])
	d.swaps = append(d.swaps, [2]int64{starts[1], sizes[1]})

	t.Run("zero-swap", func(t *testing.T) {
		src := checkLVM(t, d, Options{ZeroSwap: true})
		if got := findLV(t, src, d.vg+"/raw").Status(); got != "pass-through: no supported filesystem" {
			t.Errorf("raw: %s", got)
		}
		sw := findLV(t, src, d.vg+"/my-swap")
		if sw.Name != d.vg+"-my--swap" || LVFileName(sw) != "lv/"+d.vg+"-my--swap.img" {
			t.Errorf("swap LV named %q, file %q", sw.Name, LVFileName(sw))
		}
		if r, err := src.Lookup(d.vg + "-my--swap"); err != nil || r != sw.Stream {
			t.Errorf("lookup by device-mapper name: %v", err)
		}
		if lv := findLV(t, src, d.vg+"/data"); lv.Number != 3 || lv.TypeName != "LV striped x2" {
			t.Errorf("data: under partition %d, type %q", lv.Number, lv.TypeName)
		}
		if p := src.Parts[2]; len(p.Volumes) != 3 || !p.Zeroed || p.FS != pvFS {
			t.Errorf("partition 3: %d volumes, %s %s", len(p.Volumes), p.FS, p.Status())
		}
	})
	t.Run("keep-swap", func(t *testing.T) {
		src := checkLVM(t, d.keepSwap(t), Options{})
		for _, p := range []*Part{src.Parts[1], findLV(t, src, d.vg+"/my-swap")} {
			if p.Zeroed || p.FS != "swap" || !strings.Contains(p.Reason, "--zero-swap would zero") {
				t.Errorf("%s: %s %s", p.Label(), p.FS, p.Status())
			}
		}
	})
	t.Run("corrupt-checksum", func(t *testing.T) {
		// One byte of the metadata text of the first PV: the whole VG
		// passes through, both PVs unchanged.
		flipMetadataByte(t, d.img, starts[2])
		orig := readAll(t, d.img)
		c := *d
		c.want = bytes.Clone(d.want)
		for _, i := range []int{2, 3} {
			copy(c.want[starts[i]:starts[i]+sizes[i]], orig[starts[i]:starts[i]+sizes[i]])
		}
		c.lvs = nil
		src := checkLVM(t, &c, Options{ZeroSwap: true})
		if len(src.LVs) != 0 {
			t.Errorf("%d LVs from a VG with a broken PV", len(src.LVs))
		}
		if p := src.Parts[2]; p.Zeroed || !strings.Contains(p.Reason, "checksum") {
			t.Errorf("part3: %s", p.Status())
		}
		if p := src.Parts[3]; p.Zeroed || !strings.Contains(p.Reason, "no metadata area") {
			t.Errorf("part4: %s", p.Status())
		}
	})
}

// flipMetadataByte changes one byte inside the committed metadata text of
// the PV at byte start of img (its first metadata area at 4 KiB).
func flipMetadataByte(t *testing.T, img string, start int64) {
	t.Helper()
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var h [512]byte
	if _, err := f.ReadAt(h[:], start+4096); err != nil {
		t.Fatal(err)
	}
	off := int64(binary.LittleEndian.Uint64(h[40:]))
	var b [1]byte
	pos := start + 4096 + off + 20
	f.ReadAt(b[:], pos)
	b[0] ^= 0x01
	if _, err := f.WriteAt(b[:], pos); err != nil {
		t.Fatal(err)
	}
}

// TestLVMSpanning: a VG over two disks, each a source of its own. On the
// GPT disk, an LV wholly on it is mapped; the LV that continues on the
// other disk passes through, and so do its extents. The other disk is a
// bare PV (no partition table).
func TestLVMSpanning(t *testing.T) {
	fss := testFilesystems(t)
	a, starts, sizes := newLVMDisk(t, 48*mib, "label: gpt\nsize=40M, type=E6D6D379-F507-44C2-A23C-238F2A3DF928\n")
	b := &lvmDisk{img: filepath.Join(t.TempDir(), "bare.img"), parts: map[string]int64{}}
	imgtest.RandomFile(t, b.img, 24*mib)
	l := imgtest.NewLVM(t)
	pa := l.AddPV(a.img, starts[0], sizes[0])
	pb := l.AddPV(b.img, 0, 24*mib, "--metadatacopies", "0")
	l.Create(1)
	l.LV("span", 16, pa)
	l.LV("local", 16, pa)
	l.Run("lvextend", "-y", "-L", "+8m", l.VG+"/span", pb)
	l.LV("other", 4, pb)
	freeA := l.FreeSegments(pa)
	freeB := l.FreeSegments(pb)
	l.WriteLV("local", fss["ext2-1k"].img)
	l.Detach()

	a.want = readAll(t, a.img)
	a.vg = l.VG
	oracle := readAll(t, fss["ext2-1k"].oracle)
	a.lvs = map[string][]byte{l.VG + "/local": oracle, l.VG + "/span": nil}
	// local is the second 16 extents of pa: pe_start is 1 MiB.
	copy(a.want[starts[0]+1*mib+16*mib:], oracle)
	for _, f := range freeA {
		clear(a.want[starts[0]+f[0] : starts[0]+f[0]+f[1]])
	}
	src := checkLVM(t, a, Options{})
	span := findLV(t, src, l.VG+"/span")
	if span.Zeroed || span.Stream != nil || !strings.Contains(span.Reason, "not in this source") {
		t.Errorf("span: %s", span.Status())
	}
	if _, err := src.Lookup(l.VG + "/span"); err == nil {
		t.Error("Lookup served an LV that is not wholly in the source")
	}

	// The other disk, a bare PV without metadata of its own: its VG is
	// unknown there, so it passes through whole.
	_ = freeB
	b.want = readAll(t, b.img)
	src = checkLVM(t, b, Options{})
	if p := src.Parts[0]; p.Zeroed || p.FS != pvFS || !strings.Contains(p.Reason, "no metadata area") || len(src.LVs) != 0 {
		t.Errorf("bare PV: %s %s, %d LVs", p.FS, p.Status(), len(src.LVs))
	}
}

// TestLVMWrapped updates the metadata until its circular buffer wraps:
// the newest copy, read across the wrap, must be the one used. The PV is a
// whole disk without a partition table.
func TestLVMWrapped(t *testing.T) {
	fss := testFilesystems(t)
	d := &lvmDisk{img: filepath.Join(t.TempDir(), "bare.img"), parts: map[string]int64{}}
	imgtest.RandomFile(t, d.img, 32*mib)
	l := imgtest.NewLVM(t)
	pv := l.AddPV(d.img, 0, 32*mib, "--metadatasize", "32k", "--dataalignment", "64k")
	d.parts[pv] = 0
	l.Create(1)
	l.LV("w", 16, pv)
	wrapped := false
	for i := 0; i < 60 && !wrapped; i++ {
		l.Run("lvchange", "--addtag", fmt.Sprintf("a_long_tag_to_make_the_metadata_grow_%03d", i), l.VG+"/w")
		wrapped = metadataWraps(t, pv)
	}
	if !wrapped {
		t.Fatal("the metadata never wrapped around its circular buffer")
	}
	d.fill(t, l, fss, []fsLV{{"w", "ext2-1k"}})
	src := checkLVM(t, d, Options{})
	if src.Layout.Scheme != layout.Bare || !src.Parts[0].Zeroed || src.Parts[0].FS != pvFS {
		t.Fatalf("bare PV: %s, %s %s", src.Layout.Scheme, src.Parts[0].FS, src.Parts[0].Status())
	}
}

// metadataWraps reports whether the committed metadata of the PV on dev
// runs past the end of its metadata area (read from the raw header).
func metadataWraps(t *testing.T, dev string) bool {
	t.Helper()
	f, err := os.Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var h [512]byte
	if _, err := f.ReadAt(h[:], 4096); err != nil {
		t.Fatal(err)
	}
	size := binary.LittleEndian.Uint64(h[32:])
	off, n := binary.LittleEndian.Uint64(h[40:]), binary.LittleEndian.Uint64(h[48:])
	return off+n > size
}

// TestLVMThinSnapshot injects a thin pool and an old-style snapshot with
// vgcfgrestore --force: the pool, its data and metadata LVs, the snapshot,
// its COW store and its origin all pass through (the snapshot reads the
// origin's unchanged chunks); a plain LV beside them is still mapped.
func TestLVMThinSnapshot(t *testing.T) {
	fss := testFilesystems(t)
	imgtest.Need(t, "vgcfgbackup", "vgcfgrestore")
	d, starts, sizes := newLVMDisk(t, 80*mib, "label: gpt\nsize=72M, type=E6D6D379-F507-44C2-A23C-238F2A3DF928\n")
	l := imgtest.NewLVM(t)
	pv := l.AddPV(d.img, starts[0], sizes[0])
	d.parts[pv] = starts[0]
	l.Create(1)
	for _, lv := range []struct {
		name string
		mib  int
	}{{"origin", 16}, {"snapcow", 8}, {"ptdata", 16}, {"ptmeta", 4}, {"plain", 16}} {
		l.LV(lv.name, lv.mib, pv)
	}
	l.WriteLV("origin", fss["ext2-1k"].img)
	l.WriteLV("snapcow", fss["ext2-1k"].img) // any bytes
	l.WriteLV("ptdata", fss["ext2-1k"].img)
	backup := filepath.Join(t.TempDir(), "vg.txt")
	l.Run("vgcfgbackup", "-f", backup, l.VG)
	text := string(readAll(t, backup))
	text = injectLVs(t, text)
	if err := os.WriteFile(backup, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := l.Try("vgcfgrestore", "--force", "-y", "-f", backup, l.VG); err != nil {
		t.Fatalf("vgcfgrestore: %v\n%s", err, out)
	}
	lvs := l.Run("lvs", "-a", "--noheadings", "-o", "lv_name,segtype,lv_attr,origin", l.VG)
	t.Logf("lvs after vgcfgrestore:\n%s", lvs)
	for _, want := range []string{"pool thin-pool", "snapcow linear s"} {
		if !strings.Contains(strings.Join(strings.Fields(lvs), " "), want) {
			t.Fatalf("lvs does not show %q:\n%s", want, lvs)
		}
	}
	d.fill(t, l, fss, []fsLV{{"plain", "ext2-1k"}})
	src := checkLVM(t, d, Options{})
	for _, name := range []string{"origin", "snapcow", "pool", "pool_tdata", "pool_tmeta", "snapshot0"} {
		lv := findLV(t, src, l.VG+"/"+name)
		if lv.Zeroed {
			t.Errorf("%s zeroed", name)
		}
		t.Logf("%s: %s", name, lv.Status())
	}
	if r := findLV(t, src, l.VG+"/origin").Reason; !strings.Contains(r, "origin of snapshot snapshot0") {
		t.Errorf("origin: %s", r)
	}
	if r := findLV(t, src, l.VG+"/pool_tdata").Reason; !strings.Contains(r, "thin pool") {
		t.Errorf("pool_tdata: %s", r)
	}
	// The origin is served unchanged on its own.
	origin, err := src.Lookup(l.VG + "/origin")
	if err != nil {
		t.Fatal(err)
	}
	compare(t, "origin", origin, readAll(t, fss["ext2-1k"].img))
}

// injectLVs turns the LVs of a vgcfgbackup text into an old-style snapshot
// (snapshot0: origin + snapcow) and a thin pool (pool: pool_tdata +
// pool_tmeta, both hidden).
func injectLVs(t *testing.T, text string) string {
	t.Helper()
	i := strings.Index(text, "logical_volumes {")
	if i < 0 {
		t.Fatalf("no logical_volumes in\n%s", text)
	}
	i += len("logical_volumes {")
	extra := `
snapshot0 {
id = "Snap00-0000-0000-0000-0000-0000-000000"
status = ["READ"]
flags = []
segment_count = 1
segment1 {
start_extent = 0
extent_count = 16
type = "snapshot"
chunk_size = 8
origin = "origin"
cow_store = "snapcow"
}
}
pool {
id = "Pool00-0000-0000-0000-0000-0000-000000"
status = ["READ", "WRITE", "VISIBLE"]
flags = []
segment_count = 1
segment1 {
start_extent = 0
extent_count = 16
type = "thin-pool"
metadata = "pool_tmeta"
pool = "pool_tdata"
transaction_id = 0
chunk_size = 128
discards = "passdown"
zero_new_blocks = 1
}
}
`
	text = text[:i] + extra + text[i:]
	// The pool's sub-LVs (made as ptdata and ptmeta: lvcreate reserves
	// the _tdata and _tmeta suffixes) are renamed and hidden.
	text = strings.Replace(text, "ptdata {", "pool_tdata {", 1)
	text = strings.Replace(text, "ptmeta {", "pool_tmeta {", 1)
	for _, name := range []string{"pool_tdata", "pool_tmeta"} {
		j := strings.Index(text, "\n"+name+" {")
		if j < 0 {
			j = strings.Index(text, "\t"+name+" {")
		}
		if j < 0 {
			t.Fatalf("no %s in the backup", name)
		}
		k := j + strings.Index(text[j:], `"VISIBLE"`)
		text = text[:k-2] + text[k+len(`"VISIBLE"`):]
	}
	return text
}

// TestSignatures: encrypted and other known volumes are named.
func TestSignatures(t *testing.T) {
	for _, c := range []struct {
		name   string
		off    int64
		magic  string
		fs     string
		reason string
	}{
		{"luks1", 0, "LUKS\xba\xbe\x00\x01", "crypto_LUKS", "LUKS1 (encrypted)"},
		{"luks2", 0, "LUKS\xba\xbe\x00\x02", "crypto_LUKS", "LUKS2 (encrypted)"},
		{"luks2-secondary", 16 << 10, "SKUL\xba\xbe\x00\x02", "crypto_LUKS", "LUKS2 (encrypted)"},
		{"bitlocker", 3, "-FVE-FS-", "BitLocker", "BitLocker (encrypted)"},
		{"md-1.2", 4096, "\xfc\x4e\x2b\xa9", "linux_raid_member", "Linux software RAID member (md)"},
		{"btrfs", 65536 + 64, "_BHRfS_M", "btrfs", "btrfs (not supported yet)"},
		{"hibernated-swap", 4096 - 10, "S1SUSPEND\x00", "swap", "hibernation image (S1SUSPEND)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			vol := make([]byte, 1<<20)
			copy(vol[c.off:], c.magic)
			p := &Part{}
			mapVolume(p, bytes.NewReader(vol), int64(len(vol)), Options{ZeroSwap: true})
			if p.Zeroed || p.FS != c.fs || !strings.Contains(p.Reason, c.reason) {
				t.Errorf("%s: %q, want %s and %q", c.name, p.FS+" "+p.Status(), c.fs, c.reason)
			}
		})
	}
}

// TestLVMDuplicatePV: a PV copied into a second partition of the same
// source (a cloned disk): which copy is current is unknown, so both pass
// through whole.
func TestLVMDuplicatePV(t *testing.T) {
	fss := testFilesystems(t)
	d, starts, sizes := newLVMDisk(t, 48*mib, "label: gpt\nsize=20M, type=E6D6D379-F507-44C2-A23C-238F2A3DF928\nsize=20M, type=E6D6D379-F507-44C2-A23C-238F2A3DF928\n")
	l := imgtest.NewLVM(t)
	l.AddPV(d.img, starts[0], sizes[0])
	l.Create(1)
	l.LV("x", 16)
	l.WriteLV("x", fss["ext2-1k"].img)
	l.Detach()
	b := readAll(t, d.img)
	copy(b[starts[1]:starts[1]+sizes[1]], b[starts[0]:starts[0]+sizes[0]])
	if err := os.WriteFile(d.img, b, 0o600); err != nil {
		t.Fatal(err)
	}
	d.want = b
	src := checkLVM(t, d, Options{})
	for _, p := range src.Parts {
		if p.Zeroed || !strings.Contains(p.Reason, "twice") {
			t.Errorf("part%d: %s", p.Number, p.Status())
		}
	}
}

// TestSwapTypeWithoutSignature: a swap partition whose signature is
// neither swap nor a known hibernation image says so.
func TestSwapTypeWithoutSignature(t *testing.T) {
	for _, typ := range []string{"0x82", "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F"} {
		vol := make([]byte, 1<<20)
		copy(vol[4086:], "XXSUSPEND!")
		p := &Part{}
		p.Type = typ
		mapVolume(p, bytes.NewReader(vol), int64(len(vol)), Options{ZeroSwap: true})
		if p.Zeroed || !strings.Contains(p.Reason, "hibernation image or an unknown format") {
			t.Errorf("%s: %s", typ, p.Status())
		}
	}
}

// TestLVMMetadataAreas: a PV with a second metadata area at its end
// (--pvmetadatacopies 2), a PV whose metadata area is marked ignored
// (--metadataignore y), and an LV whose second segment lies before its
// first on the PV. The metadata areas at both ends stay unchanged (the
// whole-disk comparison), the LVs are mapped through lvm's own segments.
func TestLVMMetadataAreas(t *testing.T) {
	fss := testFilesystems(t)
	d, starts, sizes := newLVMDisk(t, 72*mib, "label: gpt\nsize=32M, type=E6D6D379-F507-44C2-A23C-238F2A3DF928\nsize=32M, type=E6D6D379-F507-44C2-A23C-238F2A3DF928\n")
	l := imgtest.NewLVM(t)
	pv0 := l.AddPV(d.img, starts[0], sizes[0], "--pvmetadatacopies", "2", "--metadatasize", "256k")
	pv1 := l.AddPV(d.img, starts[1], sizes[1], "--metadataignore", "y")
	d.parts[pv0], d.parts[pv1] = starts[0], starts[1]
	l.Create(1)
	l.LV("filler", 4, pv0)
	l.LV("back", 12, pv0)
	l.Run("lvremove", "-y", l.VG+"/filler")
	l.Run("lvextend", "-y", "-L", "+4m", l.VG+"/back", pv0+":0-3")
	l.LV("other", 16, pv1)
	segs := l.Segments("back")
	if len(segs) != 2 || segs[1].DevOff >= segs[0].DevOff {
		t.Fatalf("back's segments %+v: want the second before the first on the PV", segs)
	}
	for dev, want := range map[string]string{pv0: "2 2", pv1: "1 0"} {
		mdas := strings.Fields(l.Run("pvs", "--noheadings", "-o", "pv_mda_count,pv_mda_used_count", dev))
		if strings.Join(mdas, " ") != want {
			t.Fatalf("pvs %s: mda count, used: %q, want %s", dev, mdas, want)
		}
	}
	d.fill(t, l, fss, []fsLV{{"back", "ext2-1k"}, {"other", "ext2-1k"}})
	src := checkLVM(t, d, Options{})
	for _, name := range []string{"back", "other"} {
		if lv := findLV(t, src, d.vg+"/"+name); !lv.Zeroed || lv.FS != "ext2" {
			t.Errorf("%s: %s %s", name, lv.FS, lv.Status())
		}
	}
	if lv := findLV(t, src, d.vg+"/back"); lv.TypeName != "LV linear (2 segments)" {
		t.Errorf("back: type %q", lv.TypeName)
	}
}

// TestLUKSReal: volumes made by cryptsetup luksFormat (over random bytes)
// are named with their version, also when only LUKS2's second header is
// left, and a LUKS partition of a GPT disk passes through unchanged.
func TestLUKSReal(t *testing.T) {
	imgtest.Need(t, "cryptsetup", "sfdisk")
	dir := t.TempDir()
	format := func(name string, args ...string) string {
		img := filepath.Join(dir, name)
		imgtest.RandomFile(t, img, 8*mib)
		cmd := exec.Command("cryptsetup", append([]string{"luksFormat", "-q", "--key-file", "-", "--pbkdf-force-iterations", "1000"}, append(args, img)...)...)
		cmd.Stdin = strings.NewReader("demo-passphrase")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("luksFormat %v: %v\n%s", args, err, out)
		}
		return img
	}
	wipe := func(img string, n int) string {
		b := readAll(t, img)
		clear(b[:n])
		out := img + ".wiped"
		if err := os.WriteFile(out, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return out
	}
	luks2 := format("luks2.img", "--type", "luks2", "--pbkdf", "pbkdf2")
	big := format("luks2-256k.img", "--type", "luks2", "--pbkdf", "pbkdf2", "--luks2-metadata-size", "256k", "--luks2-keyslots-size", "1m")
	for _, c := range []struct {
		name, img, reason string
	}{
		{"luks1", format("luks1.img", "--type", "luks1"), "LUKS1 (encrypted)"},
		{"luks2", luks2, "LUKS2 (encrypted)"},
		{"luks2 primary wiped", wipe(luks2, 4096), "LUKS2 (encrypted)"},
		{"luks2 256k metadata, primary wiped", wipe(big, 4096), "LUKS2 (encrypted)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := readAll(t, c.img)
			p := &Part{}
			mapVolume(p, bytes.NewReader(b), int64(len(b)), Options{ZeroSwap: true})
			if p.Zeroed || p.FS != "crypto_LUKS" || p.Status() != "pass-through: "+c.reason {
				t.Errorf("%s %q, want crypto_LUKS and %q", p.FS, p.Status(), c.reason)
			}
		})
	}
	img := filepath.Join(dir, "disk.img")
	imgtest.RandomFile(t, img, 12*mib)
	imgtest.Partition(t, img, 512, "label: gpt\nstart=2048, size=8M, type=L\n")
	imgtest.WriteAt(t, img, 1*mib, luks2)
	want := readAll(t, img)
	src, err := Open(img, Options{ZeroSwap: true})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if p := src.Parts[0]; p.Zeroed || p.Status() != "pass-through: LUKS2 (encrypted)" {
		t.Errorf("partition 1: %s", p.Status())
	}
	compare(t, "disk", src.Disk(), want)
}
