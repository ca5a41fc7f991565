package source

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/prezero/prezero/internal/imgtest"
	"github.com/prezero/prezero/internal/layout"
	"github.com/prezero/prezero/internal/stream"
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
	imgtest.Need(t, "mkfs.ext4", "debugfs", "zerofree", "sfdisk")
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
			fsImgs[f.name] = &fsImage{name: f.name, img: img, oracle: imgtest.Zerofree(t, img), size: f.size}
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
}

var disks = []disk{
	{"mbr-logical", 512, 96 * mib,
		"label: dos\nsize=32M, type=83\nsize=4M, type=7\ntype=5\nsize=16M, type=83\nsize=32M, type=83\n",
		map[int]string{1: "ext4", 5: "ext2-1k", 6: "ext4"}},
	{"gpt-512", 512, 80 * mib,
		"label: gpt\nsize=32M, type=L\nsize=16M, type=L\nsize=4M, type=L\n",
		map[int]string{1: "ext4", 2: "ext2-1k"}},
	{"gpt-4096", 4096, 80 * mib,
		"label: gpt\nsize=16M, type=L\nsize=32M, type=L\nsize=4M, type=L\n",
		map[int]string{1: "ext2-1k", 2: "ext4"}},
}

func TestDisks(t *testing.T) {
	fss := testFilesystems(t)
	for _, d := range disks {
		t.Run(d.name, func(t *testing.T) {
			dir := t.TempDir()
			img := filepath.Join(dir, "disk.img")
			imgtest.RandomFile(t, img, d.size)
			imgtest.Partition(t, img, d.sector, d.script)
			orig := readLayout(t, img)
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
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	l, err := layout.Read(f, fi.Size())
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
