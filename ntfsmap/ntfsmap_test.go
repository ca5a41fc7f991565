package ntfsmap

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/prezero/prezero/freemap"
	"github.com/prezero/prezero/internal/imgtest"
	"github.com/prezero/prezero/stream"
)

// fixture is an NTFS image made by mkntfs and written through ntfs-3g.
type fixture struct {
	name   string
	path   string
	size   int64
	hashes map[string]string // sha256 of every file left on the volume
}

// variant is an image the tests share, built once per package run.
type variant struct {
	name            string
	size            int64
	cluster, sector int
}

var variants = []variant{
	{"c512", 48 << 20, 512, 0},
	{"c4096", 64 << 20, 4096, 0},
	{"c65536", 96 << 20, 65536, 0},
	{"s4096", 64 << 20, 4096, 4096},
}

// files written to every image; the "del" ones are deleted again, so their
// clusters are free but hold random data that the map must zero.
var testFiles = map[string]int64{
	"tiny.txt":       3,   // resident
	"small.bin":      600, // resident
	"a.bin":          100_000,
	"big.bin":        3 << 20,
	"dir/x.bin":      50_000,
	"dir/y.bin":      1 << 20,
	"dir/sub/z.bin":  4097,
	"del1.bin":       2 << 20,
	"dir/del2.bin":   70_000,
	"dir/del3.bin":   5000,
	"after-del1.bin": 300_000,
}

var builds = imgtest.Builds[*fixture]{Prefix: "ntfsmap-test-"}

func TestMain(m *testing.M) {
	code := m.Run()
	builds.RemoveAll()
	os.Exit(code)
}

// getFixture builds (once) and returns the named variant.
func getFixture(t *testing.T, name string) *fixture {
	t.Helper()
	imgtest.Need(t, "mkntfs", "ntfs-3g", "fusermount")
	imgtest.NeedRoot(t)
	for _, v := range variants {
		if v.name == name {
			return builds.Get(t, name, func(t *testing.T, path string) *fixture {
				return buildNTFS(t, v, path)
			})
		}
	}
	t.Fatalf("no variant %q", name)
	return nil
}

// buildNTFS makes v's image at path.img: testFiles written through ntfs-3g,
// then three of them deleted.
func buildNTFS(t *testing.T, v variant, path string) *fixture {
	f := &fixture{name: v.name, path: path + ".img", size: v.size}
	imgtest.MakeNTFS(t, f.path, v.size, v.cluster, v.sector)
	mnt := path + ".mnt"
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	unmount := imgtest.MountNTFS(t, f.path, mnt, false)
	writeOrdered(t, mnt)
	for _, d := range []string{"del1.bin", "dir/del2.bin", "dir/del3.bin"} {
		if err := os.Remove(filepath.Join(mnt, d)); err != nil {
			t.Fatal(err)
		}
	}
	f.hashes = imgtest.HashTree(t, mnt)
	unmount()
	if len(f.hashes) != len(testFiles)-3 {
		t.Fatalf("%s: %d files on the volume, want %d", v.name, len(f.hashes), len(testFiles)-3)
	}
	return f
}

// writeOrdered writes testFiles in name order, with after-del1.bin last, so
// the image's layout is the same on every run.
func writeOrdered(t *testing.T, mnt string) {
	names := make([]string, 0, len(testFiles))
	for n := range testFiles {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		imgtest.WriteRandomFiles(t, mnt, map[string]int64{n: testFiles[n]})
	}
}

// readFile maps the image at path.
func readFile(t *testing.T, path string, opt Options) (*Volume, error) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	return Read(f, st.Size(), opt)
}

// mustRead maps the image at path and checks the map's basic invariants.
func mustRead(t *testing.T, path string) *Volume {
	t.Helper()
	vol, err := readFile(t, path, Options{})
	if err != nil {
		t.Fatalf("Read(%s): %v", filepath.Base(path), err)
	}
	checkInvariants(t, vol)
	return vol
}

func checkInvariants(t *testing.T, vol *Volume) {
	t.Helper()
	cs := int64(vol.BlockSize)
	var free int64
	for _, e := range vol.Free.Extents() {
		if e.Off < 0 || e.Len <= 0 || e.End() > vol.Clusters*cs || e.Off%cs != 0 || e.Len%cs != 0 {
			t.Fatalf("free extent %+v not whole clusters inside the %d clusters", e, vol.Clusters)
		}
		free += e.Len / cs
	}
	if e, ok := vol.Free.Next(0); ok && e.Off == 0 {
		t.Fatalf("boot sector is free: %+v", e)
	}
	if vol.UsedClusters != vol.Clusters-free {
		t.Fatalf("UsedClusters %d, want %d - %d", vol.UsedClusters, vol.Clusters, free)
	}
}

// writeZeroed writes the zeroed stream of the image at src to dst.
func writeZeroed(t *testing.T, dst, src string, free *freemap.Map) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	r := stream.New(in, free.Size(), free)
	if _, err := io.Copy(out, io.NewSectionReader(r, 0, r.Size())); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestAgainstNtfsclone checks, for each variant, that the zeroed stream is
// byte for byte ntfsclone's raw output, that it mounts with every file
// intact, that the cluster counts agree with ntfscluster, and that Read did
// not modify the source.
func TestAgainstNtfsclone(t *testing.T) {
	imgtest.Need(t, "ntfsclone", "ntfscluster")
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			f := getFixture(t, v.name)
			dir := t.TempDir()
			before := imgtest.SHA256File(t, f.path)
			vol := mustRead(t, f.path)
			if after := imgtest.SHA256File(t, f.path); after != before {
				t.Fatalf("source changed by Read")
			}
			if vol.BlockSize != v.cluster || (v.sector != 0 && vol.SectorSize != v.sector) {
				t.Errorf("geometry: cluster %d sector %d", vol.BlockSize, vol.SectorSize)
			}
			if len(vol.Notes) != 0 {
				t.Errorf("warnings on a clean volume: %q", vol.Notes)
			}
			if cc := vol.CrossCheck; !cc.Done || cc.Conflicts != 0 || cc.Unreadable != 0 || cc.Records == 0 {
				t.Errorf("cross-check on a clean volume: %+v", cc)
			}
			if vol.Free.FreeBytes() < v.size/2 {
				t.Errorf("only %d of %d bytes free", vol.Free.FreeBytes(), v.size)
			}

			zeroed := filepath.Join(dir, "zeroed.img")
			writeZeroed(t, zeroed, f.path, vol.Free)

			clone := filepath.Join(dir, "clone.img")
			imgtest.Run(t, "ntfsclone", "-q", "--overwrite", clone, f.path)
			compareImages(t, zeroed, clone, vol)

			// ntfscluster -i counts free space in bytes.
			info := imgtest.Run(t, "ntfscluster", "-i", f.path)
			m := regexp.MustCompile(`bytes of free space\s*:\s*(\d+)`).FindStringSubmatch(info)
			if m == nil {
				t.Fatalf("ntfscluster -i: no free space line:\n%s", info)
			}
			freeBytes, _ := strconv.ParseInt(m[1], 10, 64)
			if got := (vol.Clusters - vol.UsedClusters) * int64(vol.BlockSize); got != freeBytes {
				t.Errorf("free bytes %d, ntfscluster says %d", got, freeBytes)
			}
			if vol.Free.FreeBytes() != freeBytes {
				t.Errorf("map has %d free bytes, ntfscluster says %d", vol.Free.FreeBytes(), freeBytes)
			}

			mnt := filepath.Join(dir, "mnt")
			if err := os.Mkdir(mnt, 0o755); err != nil {
				t.Fatal(err)
			}
			unmount := imgtest.MountNTFS(t, zeroed, mnt, true)
			got := imgtest.HashTree(t, mnt)
			unmount()
			if fmt.Sprint(got) != fmt.Sprint(f.hashes) {
				t.Errorf("files on the zeroed volume differ:\n got %v\nwant %v", got, f.hashes)
			}
			if after := imgtest.SHA256File(t, f.path); after != before {
				t.Fatalf("source changed")
			}
		})
	}
}

// compareImages requires a and b to be equal byte for byte and reports the
// differing ranges otherwise.
func compareImages(t *testing.T, a, b string, vol *Volume) {
	t.Helper()
	x, err := os.ReadFile(a)
	if err != nil {
		t.Fatal(err)
	}
	y, err := os.ReadFile(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(x) != len(y) {
		t.Fatalf("sizes differ: %d vs %d", len(x), len(y))
	}
	if bytes.Equal(x, y) {
		return
	}
	var diffs []string
	for i := 0; i < len(x) && len(diffs) < 10; {
		if x[i] == y[i] {
			i++
			continue
		}
		j := i
		for j < len(x) && x[j] != y[j] {
			j++
		}
		c := int64(i) / int64(vol.BlockSize)
		diffs = append(diffs, fmt.Sprintf("[%d,%d) cluster %d free=%v", i, j, c, vol.Free.IsFree(int64(i))))
		i = j
	}
	t.Fatalf("zeroed stream differs from ntfsclone output: %s", strings.Join(diffs, "; "))
}
