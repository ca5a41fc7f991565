package xfsmap

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/prezero/prezero/freemap"
	"github.com/prezero/prezero/internal/imgtest"
)

// A variant is one test filesystem, built once per run by the real tools
// on random bytes, so that every free block zeroed by mistake or kept by
// mistake is visible.
type variant struct {
	name  string
	size  int64    // image file size
	mkfs  []string // mkfs.xfs arguments
	proto bool     // populate with mkfs -p, read files back by block map: no mount
	grow  bool     // mkfs on the first 40 MiB, then xfs_growfs to the file size
	aged  int      // this many 1-block files written, every other one deleted
}

var variants = []variant{
	{name: "v5-rmap-reflink", size: 48 << 20, mkfs: []string{"-m", "rmapbt=1,reflink=1"}},
	{name: "v4", size: 48 << 20, mkfs: []string{"-m", "crc=0"}, proto: true},
	{name: "v4-b512", size: 40 << 20, mkfs: []string{"-m", "crc=0", "-b", "size=512"}, proto: true},
	{name: "b1k", size: 40 << 20, mkfs: []string{"-b", "size=1024"}},
	// 64 KiB blocks mount only on kernels with large block sizes (6.12+).
	{name: "b64k", size: 80 << 20, mkfs: []string{"-b", "size=65536", "-d", "agcount=2"}, proto: true},
	{name: "agcount7", size: 120 << 20, mkfs: []string{"-d", "agcount=7"}},
	{name: "s4096", size: 48 << 20, mkfs: []string{"-s", "size=4096"}},
	{name: "grown", size: 72 << 20, mkfs: []string{"-d", "agcount=2,size=40m"}, grow: true},
	{name: "aged-b1k", size: 40 << 20, mkfs: []string{"-b", "size=1024", "-d", "agcount=2"}, aged: 3000},
}

// built is a variant's image and the hashes of the files it holds.
type built struct {
	img    string
	hashes map[string]string
}

var builds = imgtest.Builds[*built]{Prefix: "xfsmap-test-"}

func TestMain(m *testing.M) {
	code := m.Run()
	builds.RemoveAll()
	os.Exit(code)
}

// image builds v once per run.
func image(t *testing.T, v variant) *built {
	t.Helper()
	imgtest.NeedRoot(t)
	imgtest.Need(t, "mkfs.xfs", "xfs_db", "mount", "losetup")
	return builds.Get(t, v.name, func(t *testing.T, path string) *built {
		b := &built{img: path + ".img"}
		buildVariant(t, v, b)
		return b
	})
}

func buildVariant(t *testing.T, v variant, b *built) {
	src := t.TempDir()
	files := map[string]int64{}
	for i := range 24 {
		files[fmt.Sprintf("d%d/f%02d.bin", i%3, i)] = int64(1+i*i*7919) % (640 << 10)
	}
	imgtest.WriteRandomFiles(t, src, files)
	if v.proto {
		imgtest.MakeXFS(t, b.img, v.size, append(v.mkfs, "-p", protoFile(t, src))...)
		b.hashes = imgtest.HashTree(t, src)
		return
	}
	imgtest.MakeXFS(t, b.img, v.size, v.mkfs...)
	mnt := t.TempDir()
	unmount := imgtest.MountXFS(t, b.img, mnt, "", false)
	if v.grow {
		imgtest.RunXFS(t, "xfs_growfs", mnt)
	}
	imgtest.Run(t, "cp", "-r", src+"/.", mnt)
	for name := range files { // delete every other file: its data stays behind in free space
		if n, _ := strconv.Atoi(name[len(name)-6 : len(name)-4]); n%2 == 0 {
			os.Remove(filepath.Join(mnt, name))
		}
	}
	if v.aged > 0 {
		dir := filepath.Join(mnt, "aged")
		os.Mkdir(dir, 0o755)
		blk := bytes.Repeat([]byte{0xa5}, 1000)
		for i := range v.aged {
			if err := os.WriteFile(filepath.Join(dir, strconv.Itoa(i)), blk, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		imgtest.Run(t, "sync", "-f", mnt) // this filesystem only: see TestCrashCopies in extfsmap
		for i := 0; i < v.aged; i += 2 {
			os.Remove(filepath.Join(dir, strconv.Itoa(i)))
		}
	}
	b.hashes = imgtest.HashTree(t, mnt)
	unmount()
}

// protoFile writes an mkfs.xfs prototype file that copies the tree src
// (one level of subdirectories) into the new filesystem's root.
func protoFile(t *testing.T, src string) string {
	t.Helper()
	var p strings.Builder
	p.WriteString("/dev/null\n0 0\nd--755 0 0\n")
	var walk func(dir string)
	walk = func(dir string) {
		ents, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			path := filepath.Join(dir, e.Name())
			if e.IsDir() {
				fmt.Fprintf(&p, "%s d--755 0 0\n", e.Name())
				walk(path)
				p.WriteString("$\n")
			} else {
				fmt.Fprintf(&p, "%s ---644 0 0 %s\n", e.Name(), path)
			}
		}
	}
	walk(src)
	p.WriteString("$\n")
	f := filepath.Join(t.TempDir(), "proto")
	if err := os.WriteFile(f, []byte(p.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

// readImage maps the image file img.
func readImage(t *testing.T, img string) (*Volume, error) {
	t.Helper()
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	return Read(f, fi.Size())
}

// extent is a free extent in AG blocks, as xfs_db prints it.
type extent struct{ ag, bno, n int64 }

// freespOracle returns the free extents xfs_db's "freesp -d" lists, minus
// the AGFL blocks (freesp counts them free; they are reserved for btree
// growth and prezero keeps them).
func freespOracle(t *testing.T, img string) []extent {
	t.Helper()
	sb := imgtest.RunXFS(t, "xfs_db", "-r", "-c", "sb 0", "-c", "p agcount", img)
	agcount, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(sb, "agcount =")))
	if err != nil {
		t.Fatalf("xfs_db agcount: %q", sb)
	}
	agfl := map[[2]int64]bool{}
	for ag := range agcount {
		out := imgtest.RunXFS(t, "xfs_db", "-r", "-c", fmt.Sprintf("agf %d", ag), "-c", "p flfirst fllast flcount",
			"-c", fmt.Sprintf("agfl %d", ag), "-c", "p bno", img)
		num := func(name string) int {
			m := regexp.MustCompile(`(?m)^` + name + ` = (\d+)`).FindStringSubmatch(out)
			if m == nil {
				t.Fatalf("xfs_db: no %s in %s", name, out)
			}
			n, _ := strconv.Atoi(m[1])
			return n
		}
		first, last, count := num("flfirst"), num("fllast"), num("flcount")
		slots := map[int]int64{}
		for _, m := range regexp.MustCompile(`(\d+):(\d+)`).FindAllStringSubmatch(out, -1) {
			i, _ := strconv.Atoi(m[1])
			b, _ := strconv.ParseInt(m[2], 10, 64)
			slots[i] = b
		}
		size := len(regexp.MustCompile(`\d+:(\d+|null)`).FindAllString(out, -1))
		for i, k := first, 0; k < count; i, k = (i+1)%size, k+1 {
			b, ok := slots[i]
			if !ok {
				t.Fatalf("AG %d: AGFL slot %d empty (first %d last %d count %d)", ag, i, first, last, count)
			}
			agfl[[2]int64{int64(ag), b}] = true
		}
	}
	var out []extent
	for _, line := range strings.Split(imgtest.RunXFS(t, "xfs_db", "-r", "-c", "freesp -d", img), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 {
			continue
		}
		var e extent
		var err1, err2, err3 error
		e.ag, err1 = strconv.ParseInt(f[0], 10, 64)
		e.bno, err2 = strconv.ParseInt(f[1], 10, 64)
		e.n, err3 = strconv.ParseInt(f[2], 10, 64)
		if err1 != nil || err2 != nil || err3 != nil {
			continue
		}
		if e.n == 1 && agfl[[2]int64{e.ag, e.bno}] {
			delete(agfl, [2]int64{e.ag, e.bno})
			continue
		}
		out = append(out, e)
	}
	if len(agfl) != 0 {
		t.Fatalf("AGFL blocks missing from freesp: %v", agfl)
	}
	return out
}

// extentsOf converts a map to AG extents (no free extent spans two AGs:
// every AG starts with its headers).
func extentsOf(t *testing.T, v *Volume, agblocks int64) []extent {
	bs := int64(v.BlockSize)
	var out []extent
	for _, e := range v.Free.Extents() {
		if e.Off%bs != 0 || e.Len%bs != 0 {
			t.Fatalf("extent %+v not block-aligned", e)
		}
		b := e.Off / bs
		if (b+e.Len/bs-1)/agblocks != b/agblocks {
			t.Fatalf("extent %+v spans AGs", e)
		}
		out = append(out, extent{b / agblocks, b % agblocks, e.Len / bs})
	}
	return out
}

func sbField(t *testing.T, img, field string) int64 {
	t.Helper()
	out := imgtest.RunXFS(t, "xfs_db", "-r", "-c", "sb 0", "-c", "p "+field, img)
	n, err := strconv.ParseInt(strings.TrimSpace(strings.TrimPrefix(out, field+" =")), 10, 64)
	if err != nil {
		t.Fatalf("xfs_db %s: %q", field, out)
	}
	return n
}

func sameFiles(t *testing.T, a, b string) {
	t.Helper()
	fa, err := os.ReadFile(a)
	if err != nil {
		t.Fatal(err)
	}
	fb, err := os.ReadFile(b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(fa, fb) {
		i := 0
		for i < len(fa) && i < len(fb) && fa[i] == fb[i] {
			i++
		}
		t.Fatalf("%s and %s differ from byte %d (sizes %d, %d)", a, b, i, len(fa), len(fb))
	}
}

// TestVariants maps every variant and checks it against the oracles:
// xfs_db's free extents exactly, xfs_copy -d's output byte for byte,
// xfs_repair -n on the stream, and the files read back from the stream.
func TestVariants(t *testing.T) {
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			t.Parallel()
			b := image(t, v)
			imgtest.Need(t, "xfs_copy", "xfs_repair")
			vol, err := readImage(t, b.img)
			if err != nil {
				t.Fatal(err)
			}
			if vol.Fallbacks != 0 || vol.Log != logClean || vol.FS != "xfs" {
				t.Fatalf("fallbacks %d, log %q, fs %q, notes %q", vol.Fallbacks, vol.Log, vol.FS, vol.Notes)
			}
			if want := sbField(t, b.img, "blocksize"); int64(vol.BlockSize) != want {
				t.Errorf("block size %d, xfs_db says %d", vol.BlockSize, want)
			}
			agblocks := sbField(t, b.img, "agblocks")
			got, want := extentsOf(t, vol, agblocks), freespOracle(t, b.img)
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("free extents differ from xfs_db freesp:\n got %d: %v\nwant %d: %v", len(got), got, len(want), want)
			}
			var sum int64
			for _, e := range want {
				sum += e.n
			}
			if vol.FreeBlocks != sum || sum == 0 {
				t.Errorf("FreeBlocks %d, oracle %d", vol.FreeBlocks, sum)
			}
			switch v.name {
			case "grown":
				if dblocks := sbField(t, b.img, "dblocks"); dblocks%agblocks == 0 {
					t.Errorf("grown filesystem has no short last AG (%d blocks, AG %d)", dblocks, agblocks)
				}
			case "aged-b1k":
				if lv := maxBnoLevel(t, b.img, vol.AGCount); lv < 2 {
					t.Errorf("aged filesystem's bnobt has %d levels, want > 1", lv)
				}
			}

			zeroed := imgtest.WriteStream(t, b.img, vol.Free)
			cp := filepath.Join(t.TempDir(), "copy.img")
			imgtest.RunXFS(t, "xfs_copy", "-d", b.img, cp)
			if err := os.Truncate(cp, vol.Free.Size()); err != nil { // xfs_copy stops at the last used block
				t.Fatal(err)
			}
			sameFiles(t, zeroed, cp)
			imgtest.RunXFS(t, "xfs_repair", "-n", "-f", zeroed)

			var got2 map[string]string
			if v.proto {
				got2 = hashByBmap(t, zeroed, b.hashes)
			} else {
				mnt := t.TempDir()
				imgtest.MountXFS(t, zeroed, mnt, "ro,norecovery", true)
				got2 = imgtest.HashTree(t, mnt)
			}
			if fmt.Sprint(got2) != fmt.Sprint(b.hashes) {
				t.Fatalf("files read back from the stream differ")
			}
		})
	}
}

// maxBnoLevel returns the deepest bnobt of the filesystem.
func maxBnoLevel(t *testing.T, img string, agcount int) int {
	lv := 0
	for ag := range agcount {
		out := imgtest.RunXFS(t, "xfs_db", "-r", "-c", fmt.Sprintf("agf %d", ag), "-c", "p bnolevel", img)
		n, _ := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(out, "bnolevel =")))
		lv = max(lv, n)
	}
	return lv
}

// hashByBmap reads each file of want from img through xfs_db's block map
// (for filesystems the kernel may not mount: v4 needs CONFIG_XFS_SUPPORT_V4,
// 64 KiB blocks a 6.12+ kernel) and returns their hashes.
func hashByBmap(t *testing.T, img string, want map[string]string) map[string]string {
	t.Helper()
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	bs := sbField(t, img, "blocksize")
	agblocks := sbField(t, img, "agblocks")
	out := map[string]string{}
	dir := t.TempDir()
	re := regexp.MustCompile(`data offset (\d+) startblock \d+ \((\d+)/(\d+)\) count (\d+)`)
	for name := range want {
		res := imgtest.RunXFS(t, "xfs_db", "-r", "-c", "path /"+name, "-c", "p core.size", "-c", "bmap", img)
		m := regexp.MustCompile(`core.size = (\d+)`).FindStringSubmatch(res)
		if m == nil {
			t.Fatalf("xfs_db %s: %s", name, res)
		}
		size, _ := strconv.ParseInt(m[1], 10, 64)
		data := make([]byte, size)
		for _, e := range re.FindAllStringSubmatch(res, -1) {
			var v [4]int64
			for i := range v {
				v[i], _ = strconv.ParseInt(e[i+1], 10, 64)
			}
			buf := make([]byte, v[3]*bs)
			if _, err := f.ReadAt(buf, (v[1]*agblocks+v[2])*bs); err != nil {
				t.Fatal(err)
			}
			if o := v[0] * bs; o < size {
				copy(data[o:], buf)
			}
		}
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for k, v := range imgtest.HashTree(t, dir) {
		out[k] = v
	}
	return out
}

// TestFrozenAndCrash: a copy taken under fsfreeze (what an LVM snapshot of
// a mounted XFS is) has a covered log and is zeroed, and its map is the
// truth after log recovery; a copy taken right after conv=fsync writes (a
// crash-consistent copy) needs recovery and is refused, and once a mount
// replays its log every file is intact.
func TestFrozenAndCrash(t *testing.T) {
	imgtest.NeedRoot(t)
	imgtest.Need(t, "mkfs.xfs", "xfs_db", "fsfreeze", "dd", "losetup", "mount")
	dir := t.TempDir()
	img := filepath.Join(dir, "x.img")
	imgtest.MakeXFS(t, img, 64<<20)
	mnt := t.TempDir()
	unmount := imgtest.MountXFS(t, img, mnt, "", false)
	files := map[string]int64{}
	for i := range 12 {
		files[fmt.Sprintf("f%02d", i)] = 1<<20 + int64(i)*4099
	}
	imgtest.WriteRandomFiles(t, mnt, files)
	for _, n := range []string{"f02", "f05", "f07"} {
		os.Remove(filepath.Join(mnt, n))
	}
	imgtest.Run(t, "sync", "-f", mnt)
	frozen := filepath.Join(dir, "frozen.img")
	imgtest.Run(t, "fsfreeze", "-f", mnt)
	imgtest.CopyFile(t, frozen, img)
	imgtest.Run(t, "fsfreeze", "-u", mnt)
	frozenHashes := imgtest.HashTree(t, mnt)
	for i := range 3 {
		imgtest.Run(t, "dd", "if=/dev/urandom", fmt.Sprintf("of=%s/g%d", mnt, i), "bs=1M", "count=2", "conv=fsync", "status=none")
	}
	live := filepath.Join(dir, "live.img")
	imgtest.CopyFile(t, live, img)
	liveHashes := imgtest.HashTree(t, mnt)
	unmount()

	// Frozen: covered, zeroed, and equal to the truth after recovery.
	vol, err := readImage(t, frozen)
	if err != nil {
		t.Fatalf("frozen copy: %v", err)
	}
	if vol.Log != logCovered || vol.Fallbacks != 0 {
		t.Fatalf("frozen copy: log %q, %d fallbacks %q", vol.Log, vol.Fallbacks, vol.Notes)
	}
	zeroed := imgtest.WriteStream(t, frozen, vol.Free)
	m := t.TempDir()
	um := imgtest.MountXFS(t, zeroed, m, "ro,norecovery", true)
	if got := imgtest.HashTree(t, m); fmt.Sprint(got) != fmt.Sprint(frozenHashes) {
		t.Fatalf("files of the frozen copy's stream differ (norecovery)")
	}
	um()
	recovered := filepath.Join(dir, "frozen-recovered.img")
	imgtest.CopyFile(t, recovered, zeroed)
	m2 := t.TempDir()
	um = imgtest.MountXFS(t, recovered, m2, "", false) // replays the covering records
	if got := imgtest.HashTree(t, m2); fmt.Sprint(got) != fmt.Sprint(frozenHashes) {
		t.Fatalf("files of the frozen copy's stream differ after recovery")
	}
	um()
	agblocks := sbField(t, frozen, "agblocks")
	if got, want := extentsOf(t, vol, agblocks), freespOracle(t, recovered); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("frozen map differs from freesp after recovery:\n got %v\nwant %v", got, want)
	}

	// Crash copy: refused as unsafe, and every file survives recovery.
	_, err = readImage(t, live)
	if !errors.Is(err, freemap.ErrUnsafe) || !strings.Contains(err.Error(), "xfs: the log needs recovery") {
		t.Fatalf("crash copy: err = %v, want ErrUnsafe", err)
	}
	m3 := t.TempDir()
	imgtest.MountXFS(t, live, m3, "", false)
	if got := imgtest.HashTree(t, m3); fmt.Sprint(got) != fmt.Sprint(liveHashes) {
		t.Fatalf("crash copy: files differ after recovery")
	}
}
