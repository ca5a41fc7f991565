package source

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/prezero/prezero/internal/imgtest"
	"github.com/prezero/prezero/internal/layout"
	"github.com/prezero/prezero/stream"
)

// fsImage is a filesystem made once for the package, with its oracle: the
// same filesystem zeroed by its peer tool.
type fsImage struct {
	name   string
	img    string // the filesystem as made
	oracle string // zerofree'd / ntfsclone'd copy
	size   int64
}

var (
	fsOnce sync.Once
	fsDir  string
	fsImgs map[string]*fsImage
	fsErr  error
)

const mib = 1 << 20

// filesystems builds the package's filesystems once.
func testFilesystems(t *testing.T) map[string]*fsImage {
	t.Helper()
	imgtest.Need(t, "mkfs.ext4", "debugfs", "zerofree", "sfdisk", "mkntfs", "ntfsclone", "ntfs-3g")
	imgtest.NeedRoot(t)
	fsOnce.Do(func() {
		dir, err := os.MkdirTemp("", "prezero-source-")
		if err != nil {
			fsErr = err
			return
		}
		fsDir = dir
		fsImgs = map[string]*fsImage{}
		for _, f := range []struct {
			name string
			size int64
			args []string
		}{
			{"ext4", 32 * mib, []string{"-t", "ext4", "-g", "2048", "-b", "4096"}},
			{"ext2-1k", 16 * mib, []string{"-t", "ext2", "-b", "1024"}},
		} {
			img := filepath.Join(dir, f.name+".img")
			imgtest.Ext(t, img, f.size, f.args...)
			// Keep the oracle beyond this test's TempDir: later tests use it.
			oracle := img + ".zerofree"
			imgtest.CopyFile(t, oracle, imgtest.Zerofree(t, img))
			fsImgs[f.name] = &fsImage{name: f.name, img: img, oracle: oracle, size: f.size}
		}
		for _, f := range []struct {
			name            string
			size            int64
			cluster, sector int
		}{
			{"ntfs", 24 * mib, 4096, 512},
			{"ntfs-4k", 24 * mib, 4096, 4096},
		} {
			img := filepath.Join(dir, f.name+".img")
			imgtest.MakeNTFS(t, img, f.size, f.cluster, f.sector)
			mnt := t.TempDir()
			unmount := imgtest.MountNTFS(t, img, mnt, false)
			imgtest.WriteRandomFiles(t, mnt, map[string]int64{"a.bin": 3 << 20, "b/c.bin": 5000, "d.bin": 2 << 20, "e.txt": 100})
			if err := os.Remove(filepath.Join(mnt, "d.bin")); err != nil {
				t.Fatal(err)
			}
			unmount()
			oracle := filepath.Join(dir, f.name+".ntfsclone")
			imgtest.Run(t, "ntfsclone", "-q", "--overwrite", oracle, img)
			fsImgs[f.name] = &fsImage{name: f.name, img: img, oracle: oracle, size: f.size}
		}
	})
	if fsErr != nil {
		t.Fatal(fsErr)
	}
	return fsImgs
}

func TestMain(m *testing.M) {
	code := m.Run()
	if fsDir != "" {
		os.RemoveAll(fsDir)
	}
	os.Exit(code)
}

// disk describes a partitioned test disk: an sfdisk script and which
// filesystem goes into which partition number ("" = random bytes).
type disk struct {
	name   string
	sector int
	size   int64
	script string
	fill   map[int]string
	esz    int // GPT entry size, if not sfdisk's 128
}

var disks = []disk{
	{"mbr-logical", 512, 128 * mib,
		"label: dos\nsize=32M, type=83\nsize=4M, type=7\ntype=5\nsize=16M, type=83\nsize=24M, type=7\nsize=32M, type=83\n",
		map[int]string{1: "ext4", 5: "ext2-1k", 6: "ntfs", 7: "ext4"}, 0},
	{"gpt-512", 512, 96 * mib,
		"label: gpt\nsize=32M, type=L\nsize=24M, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7\nsize=16M, type=L\nsize=4M, type=L\n",
		map[int]string{1: "ext4", 2: "ntfs", 3: "ext2-1k"}, 0},
	{"gpt-4096", 4096, 96 * mib,
		"label: gpt\nsize=16M, type=L\nsize=24M, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7\nsize=32M, type=L\nsize=4M, type=L\n",
		map[int]string{1: "ext2-1k", 2: "ntfs-4k", 3: "ext4"}, 0},
	// 256- and 512-byte GPT entries (UEFI allows any 128 * 2^n).
	{"gpt-512-e256", 512, 64 * mib, "label: gpt\nsize=32M, type=L\nsize=24M, type=L\n",
		map[int]string{1: "ext4", 2: "ntfs"}, 256},
	{"gpt-4096-e512", 4096, 64 * mib, "label: gpt\nsize=16M, type=L\nsize=24M, type=L\n",
		map[int]string{1: "ext2-1k", 2: "ntfs-4k"}, 512},
	// An MBR made on a 4Kn disk, read from an image file.
	{"mbr-4096", 4096, 64 * mib, "label: dos\nsize=16M, type=83\nsize=24M, type=7\n",
		map[int]string{1: "ext2-1k", 2: "ntfs-4k"}, 0},
}

func TestDisks(t *testing.T) {
	fss := testFilesystems(t)
	for _, d := range disks {
		t.Run(d.name, func(t *testing.T) {
			dir := t.TempDir()
			img := filepath.Join(dir, "disk.img")
			imgtest.RandomFile(t, img, d.size)
			imgtest.Partition(t, img, d.sector, d.script)
			if d.esz != 0 {
				imgtest.WidenGPTEntries(t, img, d.sector, d.esz)
			}
			// The table as the disk it was made on reads it.
			orig := readLayoutOpt(t, img, layout.Options{SectorSize: d.sector})
			if len(orig.Partitions) == 0 {
				t.Fatal("no partitions")
			}
			// The expected disk: the source with each filesystem's bytes
			// replaced by its peer-zeroed copy.
			want := filepath.Join(dir, "want.img")
			for _, p := range orig.Partitions {
				name, ok := d.fill[p.Number]
				if !ok {
					continue
				}
				f := fss[name]
				if p.Size != f.size {
					t.Fatalf("partition %d is %d bytes, filesystem %s is %d", p.Number, p.Size, name, f.size)
				}
				imgtest.WriteAt(t, img, p.Start, f.img)
			}
			imgtest.CopyFile(t, want, img)
			for _, p := range orig.Partitions {
				if name, ok := d.fill[p.Number]; ok {
					imgtest.WriteAt(t, want, p.Start, fss[name].oracle)
				}
			}
			before := imgtest.SHA256File(t, img)

			src, err := Open(img, Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			if src.Layout.SectorSize != d.sector {
				t.Fatalf("sector size %d, want %d", src.Layout.SectorSize, d.sector)
			}
			for _, p := range src.Parts {
				_, filled := d.fill[p.Number]
				if p.Zeroed != filled {
					t.Errorf("part%d: zeroed=%v (%s), want %v", p.Number, p.Zeroed, p.Status(), filled)
				}
			}
			wantBytes, err := os.ReadFile(want)
			if err != nil {
				t.Fatal(err)
			}
			compare(t, "disk", src.Disk(), wantBytes)
			first := src.Size
			for _, p := range orig.Partitions {
				if !p.Container {
					first = min(first, p.Start)
				}
			}
			origBytes, _ := os.ReadFile(img)
			compare(t, "header", src.Header(), origBytes[:first])
			for _, p := range src.Files() {
				compare(t, fmt.Sprintf("part%d", p.Number), p.Stream, wantBytes[p.Start:p.End()])
			}
			if after := imgtest.SHA256File(t, img); after != before {
				t.Fatal("source image changed")
			}
		})
	}
}

func readLayout(t *testing.T, img string) *layout.Layout {
	t.Helper()
	return readLayoutOpt(t, img, layout.Options{})
}

func readLayoutOpt(t *testing.T, img string, opt layout.Options) *layout.Layout {
	t.Helper()
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	l, err := layout.ReadOptions(f, fi.Size(), opt)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// compare reads r through stream.Copy and reports the first difference.
func compare(t *testing.T, name string, r *stream.Reader, want []byte) {
	t.Helper()
	var got bytes.Buffer
	if _, err := stream.Copy(context.Background(), &got, r); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if got.Len() != len(want) {
		t.Fatalf("%s: %d bytes, want %d", name, got.Len(), len(want))
	}
	g := got.Bytes()
	if i := firstDiff(g, want); i >= 0 {
		t.Fatalf("%s: first difference at byte %d (got %#x, want %#x)", name, i, g[i], want[i])
	}
}

func firstDiff(a, b []byte) int {
	for off := 0; off < len(a); off += 4096 {
		end := min(off+4096, len(a))
		if !bytes.Equal(a[off:end], b[off:end]) {
			for i := off; i < end; i++ {
				if a[i] != b[i] {
					return i
				}
			}
		}
	}
	return -1
}

var _ io.ReaderAt = (*stream.Reader)(nil)

// TestTruncatedDisk cuts a disk short in the middle of its last partition:
// that partition passes through and says why; the others are still zeroed.
func TestTruncatedDisk(t *testing.T) {
	fss := testFilesystems(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	imgtest.RandomFile(t, img, 80*mib)
	imgtest.Partition(t, img, 512, "label: dos\nsize=32M, type=83\nsize=32M, type=83\n")
	l := readLayout(t, img)
	imgtest.WriteAt(t, img, l.Partitions[0].Start, fss["ext4"].img)
	imgtest.WriteAt(t, img, l.Partitions[1].Start, fss["ext4"].img)
	cut := l.Partitions[1].Start + 16*mib
	if err := os.Truncate(img, cut); err != nil {
		t.Fatal(err)
	}
	src, err := Open(img, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	p1, p2 := src.Parts[0], src.Parts[1]
	if !p1.Zeroed || p2.Zeroed || !strings.Contains(p2.Status(), "past the end of the source") {
		t.Fatalf("part1 %q, part2 %q", p1.Status(), p2.Status())
	}
	if p2.Stream.Size() != 16*mib || src.Disk().Size() != cut {
		t.Fatalf("part2 stream %d bytes, disk %d", p2.Stream.Size(), src.Disk().Size())
	}
	want, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	copy(want[p1.Start:], readAll(t, fss["ext4"].oracle))
	compare(t, "disk", src.Disk(), want)
}

func readAll(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
