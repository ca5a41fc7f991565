package extfsmap

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/iotest"

	"github.com/prezero/prezero/freemap"
	"github.com/prezero/prezero/internal/imgtest"
	"github.com/prezero/prezero/stream"
)

// variant is one way of making a filesystem. Every image is made the hard
// way: random bytes first, then mkfs -d with a tree of random files, then
// half the files deleted with debugfs, so that free space is full of
// non-zero garbage and every mapping mistake shows.
type variant struct {
	name   string
	size   int64    // image file size
	mkfs   []string // extra mkfs.ext4 options
	fsSize string   // mkfs fs-size argument, "" for the whole file
	kind   string   // expected Volume.FS
	uninit bool     // expect BLOCK_UNINIT groups
}

var variants = []variant{
	{name: "ext2", size: 64 << 20, mkfs: []string{"-t", "ext2", "-b", "4096", "-g", "2048"}, kind: "ext2"},
	{name: "ext2-rev0", size: 32 << 20, mkfs: []string{"-t", "ext2", "-r", "0", "-b", "2048"}, kind: "ext2"},
	{name: "ext3", size: 64 << 20, mkfs: []string{"-t", "ext3", "-b", "1024", "-g", "2048"}, kind: "ext3"},
	{name: "ext4", size: 64 << 20, mkfs: []string{"-t", "ext4"}, kind: "ext4", uninit: true},
	{name: "ext4-4k", size: 64 << 20, mkfs: []string{"-t", "ext4", "-b", "4096", "-g", "2048"}, kind: "ext4", uninit: true},
	{name: "ext4-1k", size: 64 << 20, mkfs: []string{"-t", "ext4", "-b", "1024", "-g", "1024"}, kind: "ext4", uninit: true},
	// With bigalloc, -g counts clusters: 256 64-KiB clusters = 16 MiB groups.
	{name: "bigalloc", size: 128 << 20, mkfs: []string{"-t", "ext4", "-b", "4096", "-O", "bigalloc", "-C", "65536", "-g", "256"}, kind: "ext4", uninit: true},
	// 1 KiB blocks with bigalloc: s_first_data_block is 0 and block 0
	// shares cluster 0 with the superblock; 20 groups need 2 descriptor
	// blocks.
	{name: "bigalloc-1k", size: 80 << 20, mkfs: []string{"-t", "ext4", "-b", "1024", "-O", "bigalloc", "-C", "16384", "-g", "256"}, kind: "ext4", uninit: true},
	{name: "meta_bg", size: 64 << 20, mkfs: []string{"-t", "ext4", "-b", "1024", "-g", "1024", "-O", "meta_bg,^resize_inode"}, kind: "ext4", uninit: true},
	{name: "gdt_csum", size: 64 << 20, mkfs: []string{"-t", "ext4", "-b", "4096", "-g", "2048", "-O", "^64bit,^metadata_csum,uninit_bg"}, kind: "ext4", uninit: true},
	{name: "no_flex_bg", size: 64 << 20, mkfs: []string{"-t", "ext4", "-b", "4096", "-g", "2048", "-O", "^flex_bg"}, kind: "ext4", uninit: true},
	{name: "sparse_super2", size: 64 << 20, mkfs: []string{"-t", "ext4", "-b", "1024", "-g", "1024", "-O", "sparse_super2"}, kind: "ext4", uninit: true},
	{name: "short_fs", size: 64 << 20, mkfs: []string{"-t", "ext4", "-b", "4096", "-g", "2048"}, fsSize: "61M", kind: "ext4", uninit: true},
}

// built is a variant's image, its zerofree'd copy and dumpe2fs's view.
type built struct {
	img, zerofreed string
	size           int64
	blockSize      int64
	blocks         int64   // dumpe2fs "Block count"
	freeBlocks     int64   // dumpe2fs "Free blocks"
	uninitGroups   int     // groups dumpe2fs shows as BLOCK_UNINIT
	superblocks    []int64 // byte offsets of the superblock copies, from dumpe2fs
}

var (
	workDir  string
	builds   = imgtest.Builds[*built]{Prefix: "variants-"}
	treeOnce sync.Once
	treeDir  string
	treeRm   []string
)

func TestMain(m *testing.M) {
	var err error
	workDir, err = os.MkdirTemp(scratchRoot(), "extfsmap-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// t.TempDir() goes there too.
	os.Setenv("TMPDIR", workDir)
	code := m.Run()
	builds.RemoveAll()
	crashBuilds.RemoveAll()
	os.RemoveAll(workDir)
	os.Exit(code)
}

// scratchRoot is where the test images go: tmpfs when the machine has
// memory to spare, since the crash-copy workloads fsync a few hundred
// times through loop devices (on a disk, each a real flush; this halves
// the package's time), else the default temporary directory. The
// package's images peak at about 2.2 GiB.
func scratchRoot() string {
	return tmpfsWithRoom(8 << 30)
}

// tmpfsWithRoom returns "/dev/shm" if it is a tmpfs with room for need
// bytes and the machine has need bytes of memory available, else "".
func tmpfsWithRoom(need int64) string {
	var st syscall.Statfs_t
	if err := syscall.Statfs("/dev/shm", &st); err != nil || st.Type != 0x01021994 || // TMPFS_MAGIC
		int64(st.Bavail)*st.Bsize < need {
		return ""
	}
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return ""
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "MemAvailable:" {
			if kb, err := strconv.ParseInt(f[1], 10, 64); err == nil && kb<<10 >= need {
				return "/dev/shm"
			}
		}
	}
	return ""
}

// fileTree makes (once) a directory of random files and subdirectories for
// mkfs -d, and returns it with the paths (relative, "/"-rooted) to delete.
func fileTree(t testing.TB) (string, []string) {
	treeOnce.Do(func() {
		dir := filepath.Join(workDir, "tree")
		rng := rand.New(rand.NewPCG(1, 2))
		var files []string
		write := func(rel string, n int) {
			p := filepath.Join(dir, rel)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				panic(err)
			}
			b := make([]byte, n)
			for i := range b {
				b[i] = byte(rng.Uint32())
			}
			if err := os.WriteFile(p, b, 0o644); err != nil {
				panic(err)
			}
			files = append(files, "/"+rel)
		}
		write("big0.bin", 5<<20)
		write("big1.bin", 3<<20)
		write("d1/big2.bin", 2<<20)
		for i := range 36 {
			sub := []string{"", "d1/", "d2/", "d2/sub/", "d3/deep/er/"}[i%5]
			write(fmt.Sprintf("%sf%02d.dat", sub, i), 1+rng.IntN(200<<10))
		}
		sort.Strings(files)
		for i, f := range files {
			if i%2 == 0 {
				treeRm = append(treeRm, f)
			}
		}
		treeDir = dir
	})
	if treeDir == "" {
		t.Fatal("file tree not built")
	}
	return treeDir, treeRm
}

// buildImage makes (once per test binary) the image of variant v.
func buildImage(t *testing.T, v variant) *built {
	t.Helper()
	imgtest.Need(t, "mkfs.ext4", "debugfs", "dumpe2fs", "zerofree", "e2fsck")
	return builds.Get(t, v.name, func(t *testing.T, path string) *built { return makeImage(t, v, path) })
}

// makeImage makes v's image at path.img: mkfs -d of the file tree, then
// half of its files deleted with debugfs. Its zerofree'd copy goes to
// path.zerofree.
func makeImage(t *testing.T, v variant, path string) *built {
	tree, rm := fileTree(t)
	img := path + ".img"
	imgtest.RandomFile(t, img, v.size)
	args := append([]string{"-F", "-q", "-E", "nodiscard"}, v.mkfs...)
	args = append(args, "-d", tree, img)
	if v.fsSize != "" {
		args = append(args, v.fsSize)
	}
	imgtest.Run(t, "mkfs.ext4", args...)
	cmds := path + ".debugfs"
	var sb strings.Builder
	for _, p := range rm {
		fmt.Fprintf(&sb, "rm %s\n", p)
	}
	if err := os.WriteFile(cmds, []byte(sb.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	imgtest.Run(t, "debugfs", "-w", "-f", cmds, img)
	if out, err := imgtest.Output("e2fsck", "-fn", img); err != nil {
		t.Fatalf("the source image of %s is not clean: %v\n%s", v.name, err, out)
	}

	b := &built{img: img, size: v.size, zerofreed: path + ".zerofree"}
	dump := imgtest.Run(t, "dumpe2fs", img)
	b.blockSize = dumpField(t, dump, "Block size")
	b.blocks = dumpField(t, dump, "Block count")
	b.freeBlocks = dumpField(t, dump, "Free blocks")
	b.uninitGroups = strings.Count(dump, "BLOCK_UNINIT")
	b.superblocks = superblockOffsets(t, dump, b.blockSize)

	imgtest.CopyFile(t, b.zerofreed, img)
	imgtest.Run(t, "zerofree", b.zerofreed)
	return b
}

// dumpField returns the number after "name:" in dumpe2fs output.
func dumpField(t testing.TB, dump, name string) int64 {
	t.Helper()
	for _, line := range strings.Split(dump, "\n") {
		if v, ok := strings.CutPrefix(line, name+":"); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				t.Fatalf("dumpe2fs %s: %v", name, err)
			}
			return n
		}
	}
	t.Fatalf("dumpe2fs printed no %q", name)
	return 0
}

// superblockOffsets returns the byte offsets of the superblock copies that
// dumpe2fs lists ("Primary superblock at 1", "Backup superblock at 8193").
func superblockOffsets(t testing.TB, dump string, blockSize int64) []int64 {
	t.Helper()
	var offs []int64
	for _, line := range strings.Split(dump, "\n") {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "Primary superblock at ") && !strings.HasPrefix(line, "Backup superblock at ") {
			continue
		}
		f := strings.Fields(strings.TrimRight(strings.Split(line, ",")[0], ","))
		blk, err := strconv.ParseInt(f[len(f)-1], 10, 64)
		if err != nil {
			t.Fatalf("dumpe2fs line %q: %v", line, err)
		}
		off := blk * blockSize
		if blk*blockSize < sbOffset+sbSize && strings.HasPrefix(line, "Primary") {
			off = sbOffset // 4 KiB blocks and up: the superblock is at byte 1024 of block 0
		}
		offs = append(offs, off)
	}
	if len(offs) == 0 {
		t.Fatal("dumpe2fs listed no superblocks")
	}
	return offs
}

// zerofreeWrites lists the superblock fields that zerofree itself rewrites
// when it closes the filesystem (ext2fs_close: s_wtime, s_kbytes_written
// and so s_checksum, in every copy). They are not part of the comparison.
var zerofreeWrites = []struct{ off, n int64 }{{0x30, 4}, {0x178, 8}, {0x3FC, 4}}

// maskSuperblocks zeroes, in p (the bytes at off), the fields zerofree
// rewrites in each superblock copy.
func maskSuperblocks(p []byte, off int64, superblocks []int64) {
	for _, sb := range superblocks {
		for _, f := range zerofreeWrites {
			a, b := max(sb+f.off, off), min(sb+f.off+f.n, off+int64(len(p)))
			if a < b {
				clear(p[a-off : b-off])
			}
		}
	}
}

// readImage opens path and maps it.
func readImage(t testing.TB, path string) (*os.File, int64, *Volume) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	vol, err := Read(f, fi.Size())
	if err != nil {
		t.Fatalf("Read %s: %v", path, err)
	}
	checkInvariants(t, vol, fi.Size())
	return f, fi.Size(), vol
}

// checkInvariants checks what must hold for any successful Read: the map
// covers the volume, and every free extent lies inside the filesystem's own
// blocks and never in the first 2 KiB (boot block and primary superblock).
func checkInvariants(t testing.TB, vol *Volume, size int64) {
	t.Helper()
	if vol.Free.Size() != size {
		t.Fatalf("Free.Size() = %d, want %d", vol.Free.Size(), size)
	}
	fsEnd := vol.Blocks * int64(vol.BlockSize)
	var prev int64
	for i, e := range vol.Free.Extents() {
		if e.Len <= 0 || e.Off < prev || e.Off < sbOffset+sbSize || e.End() > fsEnd || e.End() > size {
			t.Fatalf("free extent %d [%d,%d) is invalid (previous end %d, filesystem end %d, size %d)", i, e.Off, e.End(), prev, fsEnd, size)
		}
		prev = e.End()
	}
	if len(vol.Notes) > maxNotes+1 {
		t.Fatalf("%d notes, cap is %d+1", len(vol.Notes), maxNotes)
	}
}

// compareStreams fails at the first chunk where a and b differ, naming the
// first differing byte and block and whether the map called it free. The
// superblock fields that zerofree rewrites are left out.
func compareStreams(t testing.TB, got, want io.ReaderAt, size, blockSize int64, free *freemap.Map, superblocks []int64) {
	t.Helper()
	const chunk = 1 << 20
	bg, bw := make([]byte, chunk), make([]byte, chunk)
	for off := int64(0); off < size; off += chunk {
		n := min(chunk, size-off)
		if _, err := got.ReadAt(bg[:n], off); err != nil && err != io.EOF {
			t.Fatalf("reading stream at %d: %v", off, err)
		}
		if _, err := want.ReadAt(bw[:n], off); err != nil && err != io.EOF {
			t.Fatalf("reading zerofree copy at %d: %v", off, err)
		}
		maskSuperblocks(bg[:n], off, superblocks)
		maskSuperblocks(bw[:n], off, superblocks)
		if bytes.Equal(bg[:n], bw[:n]) {
			continue
		}
		i := 0
		for bg[i] == bw[i] {
			i++
		}
		at := off + int64(i)
		var blocks []string
		for b := at / blockSize; b*blockSize < off+n && len(blocks) < 8; b++ {
			o := b*blockSize - off
			if !bytes.Equal(bg[o:o+blockSize], bw[o:o+blockSize]) {
				blocks = append(blocks, fmt.Sprintf("%d(free=%v)", b, free.IsFree(b*blockSize)))
			}
		}
		t.Fatalf("stream differs from zerofree's output at byte %d (block %d, map says free=%v): got %#02x, want %#02x; differing blocks in this MiB: %s",
			at, at/blockSize, free.IsFree(at), bg[i], bw[i], strings.Join(blocks, " "))
	}
}

func TestVariants(t *testing.T) {
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			b := buildImage(t, v)
			sum := imgtest.SHA256File(t, b.img)
			f, size, vol := readImage(t, b.img)
			if vol.FS != v.kind {
				t.Errorf("FS = %q, want %q", vol.FS, v.kind)
			}
			if int64(vol.BlockSize) != b.blockSize || vol.Blocks != b.blocks || vol.FreeBlocks != b.freeBlocks {
				t.Errorf("BlockSize, Blocks, FreeBlocks = %d, %d, %d; dumpe2fs says %d, %d, %d",
					vol.BlockSize, vol.Blocks, vol.FreeBlocks, b.blockSize, b.blocks, b.freeBlocks)
			}
			if vol.Fallbacks != 0 {
				t.Errorf("%d fallbacks on a clean image: %q", vol.Fallbacks, vol.Notes)
			}
			if cc := vol.CrossCheck; cc.Conflicts != 0 || cc.UnreadableTree != 0 || cc.BadReferences != 0 {
				t.Errorf("the cross-check found problems on a clean image: %+v", cc)
			}
			if v.uninit && b.uninitGroups == 0 {
				t.Errorf("variant meant to have BLOCK_UNINIT groups has none")
			}
			t.Logf("%s: %d-byte blocks, %d-byte clusters, %d blocks, %d BLOCK_UNINIT groups, %v",
				vol.FS, vol.BlockSize, vol.ClusterSize, vol.Blocks, b.uninitGroups, vol.Free)

			// Used bytes: what dumpe2fs counts as used, plus everything
			// after the filesystem's end.
			wantUsed := (b.blocks-b.freeBlocks)*b.blockSize + (size - b.blocks*b.blockSize)
			if used := size - vol.Free.FreeBytes(); used != wantUsed {
				t.Errorf("used bytes = %d, dumpe2fs implies %d (difference %d bytes = %d blocks)",
					used, wantUsed, used-wantUsed, (used-wantUsed)/b.blockSize)
			}

			st := stream.New(f, size, vol.Free)
			zf, err := os.Open(b.zerofreed)
			if err != nil {
				t.Fatal(err)
			}
			defer zf.Close()
			compareStreams(t, st, zf, size, b.blockSize, vol.Free, b.superblocks)

			out := filepath.Join(t.TempDir(), "zeroed.img")
			o, err := os.Create(out)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.Copy(o, io.NewSectionReader(st, 0, size)); err != nil {
				t.Fatal(err)
			}
			if err := o.Close(); err != nil {
				t.Fatal(err)
			}
			if msg, err := imgtest.Output("e2fsck", "-fn", out); err != nil {
				t.Errorf("e2fsck -fn on the zeroed stream: %v\n%s", err, msg)
			}

			if got := imgtest.SHA256File(t, b.img); got != sum {
				t.Errorf("source image changed: sha256 %s, was %s", got, sum)
			}
		})
	}
}

// needs_recovery over an empty journal (s_start 0: nothing to replay, as
// debugfs leaves it) maps exactly as the same filesystem without the flag,
// and says so; the source is never written.
func TestNeedsRecoveryEmptyJournal(t *testing.T) {
	imgtest.Need(t, "mkfs.ext4", "debugfs")
	img := filepath.Join(t.TempDir(), "recover.img")
	imgtest.RandomFile(t, img, 16<<20)
	imgtest.Run(t, "mkfs.ext4", "-F", "-q", "-E", "nodiscard", img)
	_, _, clean := readImage(t, img)
	imgtest.Run(t, "debugfs", "-w", "-R", "feature needs_recovery", img)
	sum := imgtest.SHA256File(t, img)
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	vol, err := Read(f, 16<<20)
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	if vol.Journal == nil || vol.Journal.Transactions != 0 || !strings.Contains(vol.Journal.String(), "nothing to replay") {
		t.Errorf("journal %+v, want an empty replay", vol.Journal)
	}
	if fmt.Sprint(vol.Free.Extents()) != fmt.Sprint(clean.Free.Extents()) {
		t.Errorf("map %v differs from the clean map %v", vol.Free, clean.Free)
	}
	if got := imgtest.SHA256File(t, img); got != sum {
		t.Errorf("source image changed")
	}
}

// TestReaderContract runs iotest.TestReader over windows of a zeroed stream
// that cross free and used ranges, and over its end. The expected bytes are
// the source's, with the map's free extents cleared.
func TestReaderContract(t *testing.T) {
	b := buildImage(t, variants[3])
	f, size, vol := readImage(t, b.img)
	st := stream.New(f, size, vol.Free)
	ext := vol.Free.Extents()
	first, mid := ext[0], ext[len(ext)/2]
	for _, w := range []struct {
		off, n int64
		mixed  bool
	}{
		{max(0, first.Off-300<<10-123), 700 << 10, true},
		{max(0, mid.End()-200<<10+7), 500 << 10, true},
		{size - 512<<10, 512 << 10, false},
	} {
		want := make([]byte, w.n)
		if _, err := f.ReadAt(want, w.off); err != nil {
			t.Fatal(err)
		}
		zeroed := 0
		for _, e := range vol.Free.Extents() {
			a, b := max(e.Off, w.off), min(e.End(), w.off+w.n)
			if a < b {
				clear(want[a-w.off : b-w.off])
				zeroed++
			}
		}
		if w.mixed && (zeroed == 0 || bytes.Count(want, []byte{0}) == len(want)) {
			t.Errorf("window [%d,+%d) does not mix free and used bytes", w.off, w.n)
		}
		if err := iotest.TestReader(io.NewSectionReader(st, w.off, w.n), want); err != nil {
			msg := err.Error()
			if len(msg) > 300 {
				msg = msg[:300] + "..."
			}
			t.Errorf("window [%d,+%d): %s", w.off, w.n, msg)
		}
	}
	// Past the end: io.EOF, nothing read.
	var p [16]byte
	if n, err := st.ReadAt(p[:], size); n != 0 || err != io.EOF {
		t.Errorf("ReadAt(size) = %d, %v; want 0, EOF", n, err)
	}
}

func TestProbe(t *testing.T) {
	b := buildImage(t, variants[0])
	f, size, _ := readImage(t, b.img)
	if !Probe(f, size) {
		t.Error("Probe = false on an ext2 image")
	}
	if Probe(bytes.NewReader(make([]byte, 4096)), 4096) {
		t.Error("Probe = true on zeros")
	}
	if Probe(bytes.NewReader(nil), 0) {
		t.Error("Probe = true on an empty volume")
	}
}

// TestFSLargerThanVolume: an image cut short must be passed through.
func TestFSLargerThanVolume(t *testing.T) {
	b := buildImage(t, variants[3])
	f, err := os.Open(b.img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	_, err = Read(f, b.size-4096)
	if !errors.Is(err, freemap.ErrFormat) || !strings.Contains(err.Error(), "volume holds only") {
		t.Errorf("Read of a truncated volume: %v, want a FormatError about the volume size", err)
	}
}
