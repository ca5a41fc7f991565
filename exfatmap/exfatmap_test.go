package exfatmap

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/prezero/prezero/freemap"
	"github.com/prezero/prezero/internal/imgtest"
)

// variant is an exFAT image made by mkfs.exfat and written through
// exfat-fuse.
type variant struct {
	name   string
	size   int64
	sector int // logical sector size of the loop device mkfs.exfat ran on (0: 512)
	args   []string
}

var variants = []variant{
	{"c4k", 32 << 20, 0, nil},
	{"c512", 16<<20 + 5*512, 0, []string{"-c", "512"}}, // a tail past the volume
	{"c128k", 64 << 20, 0, []string{"-c", "128K"}},
	{"s4096", 32 << 20, 4096, nil},
}

type fixture struct {
	variant
	path   string
	hashes map[string]string
}

var builds = imgtest.Builds[*fixture]{Prefix: "exfatmap-"}

func TestMain(m *testing.M) {
	code := m.Run()
	builds.RemoveAll()
	os.Exit(code)
}

// getFixture builds the named variant once per test run.
func getFixture(t *testing.T, name string) *fixture {
	t.Helper()
	imgtest.NeedRoot(t)
	imgtest.Need(t, "mkfs.exfat", "mount.exfat-fuse")
	for _, v := range variants {
		if v.name == name {
			return builds.Get(t, name, func(t *testing.T, path string) *fixture {
				path += ".img"
				return &fixture{variant: v, path: path, hashes: imgtest.ExFAT(t, path, v.size, v.sector, v.args...)}
			})
		}
	}
	t.Fatalf("no variant %q", name)
	return nil
}

func readImage(t *testing.T, path string) ([]byte, *Volume) {
	t.Helper()
	img, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	vol, err := Read(bytes.NewReader(img), int64(len(img)))
	if err != nil {
		t.Fatal(err)
	}
	return img, vol
}

// dumpField returns a numeric field of dump.exfat's output.
func dumpField(t *testing.T, path, field string) int64 {
	t.Helper()
	out := imgtest.Run(t, "dump.exfat", path)
	m := regexp.MustCompile(regexp.QuoteMeta(field) + `[^:]*:\s+(\d+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("dump.exfat: no %q in\n%s", field, out)
	}
	n, _ := strconv.ParseInt(m[1], 10, 64)
	return n
}

// TestOracles checks every variant against The Sleuth Kit sector by sector,
// dump.exfat's free count, partclone.exfat's copy byte for byte, fsck.exfat
// and the file contents read back through exfat-fuse from the zeroed copy.
func TestOracles(t *testing.T) {
	imgtest.Need(t, "blkls", "dump.exfat", "fsck.exfat", "partclone.exfat")
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			f := getFixture(t, v.name)
			img, vol := readImage(t, f.path)
			if vol.FS != "exfat" || vol.Dirty || vol.Bitmaps != 1 || vol.Free.Size() != int64(len(img)) {
				t.Fatalf("%+v", vol)
			}
			if got, want := vol.FreeClusters, dumpField(t, f.path, "Free Clusters"); got != want || got == 0 {
				t.Errorf("%d free clusters, dump.exfat says %d", got, want)
			}
			if vol.FreeClusters*int64(vol.BlockSize) != vol.Free.FreeBytes() {
				t.Errorf("%d free clusters, %d free bytes", vol.FreeClusters, vol.Free.FreeBytes())
			}
			t.Logf("%d-byte sectors, %d-byte clusters, %d of %d free, notes %q", vol.SectorSize, vol.BlockSize, vol.FreeClusters, vol.Clusters, vol.Notes)

			tsk := imgtest.Blkls(t, "exfat", f.path)
			ss := int64(vol.SectorSize)
			imgtest.MatchBlkls(t, vol.Free, tsk, ss)
			end := int64(len(tsk)) * ss

			z := imgtest.WriteStream(t, f.path, vol.Free)
			imgtest.Run(t, "fsck.exfat", "-n", z)
			pc := filepath.Join(t.TempDir(), "pc.img")
			imgtest.ZeroFile(t, pc, int64(len(img)))
			imgtest.Run(t, "partclone.exfat", "-q", "-b", "-C", "-s", f.path, "-O", pc, "-L", filepath.Join(t.TempDir(), "log"))
			want, _ := os.ReadFile(pc)
			got, _ := os.ReadFile(z)
			if i := firstDiff(got[:end], want[:end]); i >= 0 {
				t.Errorf("zeroed copy differs from partclone.exfat's at byte %d", i)
			}
			if !bytes.Equal(got[end:], img[end:]) {
				t.Errorf("the %d bytes past the filesystem are not passed through", int64(len(img))-end)
			}

			mnt := t.TempDir()
			unmount := imgtest.MountExFAT(t, z, mnt, v.sector, true)
			hashes := imgtest.HashTree(t, mnt)
			unmount()
			if len(hashes) != len(f.hashes) {
				t.Errorf("%d files read back, %d written", len(hashes), len(f.hashes))
			}
			for p, h := range f.hashes {
				if hashes[p] != h {
					t.Errorf("%s differs in the zeroed copy", p)
				}
			}
		})
	}
}

func firstDiff(a, b []byte) int {
	if len(a) != len(b) {
		return min(len(a), len(b))
	}
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

// layout is what the tests need to know of an image.
type layout struct {
	v          *volume
	rootOff    int64 // byte offset of the root directory's first cluster
	bitmapOff  int64 // byte offset of the first bitmap
	bitmapLen  int64
	bitmapEnt  int64 // byte offset of the bitmap's directory entry
	clusterLen int64
}

func getLayout(t *testing.T, img []byte) *layout {
	t.Helper()
	v := &volume{r: bytes.NewReader(img), size: int64(len(img))}
	if err := v.readBoot(); err != nil {
		t.Fatal(err)
	}
	l := &layout{v: v, rootOff: v.clusterOffset(v.boot.rootClus), clusterLen: v.boot.clusterBytes()}
	root := img[l.rootOff : l.rootOff+l.clusterLen]
	for i := 0; i < len(root); i += 32 {
		if root[i] == typeBitmap {
			l.bitmapEnt = l.rootOff + int64(i)
			l.bitmapOff = v.clusterOffset(le32(root, i+20))
			l.bitmapLen = int64(le64(root, i+24))
		}
	}
	if l.bitmapEnt == 0 {
		t.Fatal("no bitmap entry in the root's first cluster")
	}
	return l
}

// fixChecksum rewrites the main boot region's checksum sector.
func fixChecksum(img []byte) {
	fixChecksumBps(img, 1<<img[offBytesPerSecSh])
}

func fixChecksumBps(img []byte, bps int) {
	var sum uint32
	for i, c := range img[:checksumSector*bps] {
		if i == offVolumeFlags || i == offVolumeFlags+1 || i == offPercentInUse {
			continue
		}
		sum = (sum>>1 | sum<<31) + uint32(c)
	}
	for i := checksumSector * bps; i < (checksumSector+1)*bps; i += 4 {
		binary.LittleEndian.PutUint32(img[i:], sum)
	}
}

// usedBitmapByte returns the index of a bitmap byte whose eight clusters
// are all in use by files (not the bitmap, up-case table or root).
func usedBitmapByte(t *testing.T, img []byte, l *layout) int64 {
	t.Helper()
	for j := int64(8); j < l.bitmapLen; j++ {
		if img[l.bitmapOff+j] == 0xFF {
			return j
		}
	}
	t.Fatal("no full bitmap byte")
	return 0
}

// TestDirty: a live copy of a mounted volume (VolumeDirty set) is mapped
// and keeps its files; a dirty volume whose bitmap misses a file's clusters
// keeps them, while a clean one with the same bitmap is refused.
func TestDirty(t *testing.T) {
	f := getFixture(t, "c4k")
	img, truth := readImage(t, f.path)
	l := getLayout(t, img)

	t.Run("bitmap behind", func(t *testing.T) {
		b := bytes.Clone(img)
		j := usedBitmapByte(t, b, l)
		b[l.bitmapOff+j] = 0
		if _, err := Read(bytes.NewReader(b), int64(len(b))); !errors.Is(err, freemap.ErrFormat) || !strings.Contains(err.Error(), "directory entries use") {
			t.Errorf("clean: %v", err)
		}
		b[offVolumeFlags] |= flagDirty // outside the checksum
		vol, err := Read(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			t.Fatal(err)
		}
		if !vol.Dirty || vol.Free.String() != truth.Free.String() || !strings.Contains(strings.Join(vol.Notes, ";"), "also kept 8 clusters") {
			t.Errorf("dirty: %v, want %v; notes %q", vol.Free, truth.Free, vol.Notes)
		}
	})

	t.Run("live copy", func(t *testing.T) {
		dir := t.TempDir()
		live := filepath.Join(dir, "live.img")
		imgtest.CopyFile(t, live, f.path)
		mnt := t.TempDir()
		unmount := imgtest.MountExFAT(t, live, mnt, 0, false)
		imgtest.WriteRandomFiles(t, mnt, map[string]int64{"new/late.bin": 2 << 20, "late2.bin": 5000})
		imgtest.Run(t, "sync")
		hashes := imgtest.HashTree(t, mnt)
		snap := filepath.Join(dir, "snap.img")
		imgtest.CopyFile(t, snap, live) // while mounted: a crash-consistent copy
		unmount()
		_, vol := readImage(t, snap)
		if !vol.Dirty {
			t.Fatalf("the copy of a mounted volume is not dirty: %q", vol.Notes)
		}
		z := imgtest.WriteStream(t, snap, vol.Free)
		mnt2 := t.TempDir()
		um := imgtest.MountExFAT(t, z, mnt2, 0, true)
		got := imgtest.HashTree(t, mnt2)
		um()
		for p, h := range hashes {
			if got[p] != h {
				t.Errorf("%s differs in the zeroed live copy", p)
			}
		}
	})
}

// TestTexFAT gives the volume a second allocation bitmap (NumberOfFats 2)
// that marks one more cluster used: the union keeps it.
func TestTexFAT(t *testing.T) {
	f := getFixture(t, "c4k")
	img, truth := readImage(t, f.path)
	l := getLayout(t, img)
	b := bytes.Clone(img)
	// Place bitmap 2 in the last free clusters, and mark them used in it.
	n := (l.bitmapLen + l.clusterLen - 1) / l.clusterLen
	last := truth.Free.Extents()[len(truth.Free.Extents())-1]
	at := last.End() - n*l.clusterLen
	bm2 := bytes.Clone(img[l.bitmapOff : l.bitmapOff+l.bitmapLen])
	first2 := uint32((at-l.v.clusterOffset(2))/l.clusterLen) + 2
	for c := first2; c < first2+uint32(n); c++ {
		bm2[(c-2)/8] |= 1 << ((c - 2) % 8)
	}
	// And one more cluster, free in bitmap 1.
	extra := uint32((truth.Free.Extents()[0].Off-l.v.clusterOffset(2))/l.clusterLen) + 2
	bm2[(extra-2)/8] |= 1 << ((extra - 2) % 8)
	copy(b[at:], bm2)
	// Its FAT chain, as a formatter writes it.
	fat := l.v.boot.fatOff * int64(l.v.boot.bps)
	for c := first2; c < first2+uint32(n); c++ {
		next := c + 1
		if c == first2+uint32(n)-1 {
			next = fatEOC
		}
		binary.LittleEndian.PutUint32(b[fat+int64(c)*4:], next)
	}
	// Its entry goes where the root directory ends.
	end := l.rootOff
	for b[end] != 0 {
		end += 32
	}
	copy(b[end:end+32], b[l.bitmapEnt:l.bitmapEnt+32])
	b[end+1] = 1 // the second bitmap
	binary.LittleEndian.PutUint32(b[end+20:], first2)
	b[offNumberOfFats] = 2
	fixChecksum(b)
	vol, err := Read(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	if vol.Bitmaps != 2 || vol.FreeClusters != truth.FreeClusters-n-1 || vol.Free.IsFree(l.v.clusterOffset(extra)) {
		t.Errorf("%d bitmaps, %d free clusters (want %d), cluster %d free %v", vol.Bitmaps, vol.FreeClusters, truth.FreeClusters-n-1, extra, vol.Free.IsFree(l.v.clusterOffset(extra)))
	}
	if e, ok := imgtest.FreeOutside(vol.Free, truth.Free); ok {
		t.Errorf("free extent %+v holds used bytes", e)
	}
	// Two FATs but one bitmap: refused.
	b2 := bytes.Clone(img)
	b2[offNumberOfFats] = 2
	fixChecksum(b2)
	if _, err := Read(bytes.NewReader(b2), int64(len(b2))); !errors.Is(err, freemap.ErrFormat) {
		t.Errorf("two FATs, one bitmap: %v", err)
	}
}

// TestRefusals: a ClusterCount that disagrees with the bitmap's size, a
// volume larger than its partition, a bad checksum, an unknown revision.
func TestRefusals(t *testing.T) {
	f := getFixture(t, "c4k")
	img, _ := readImage(t, f.path)
	for _, tc := range []struct {
		name  string
		patch func(b []byte)
		size  int64
		kind  error
		msg   string
	}{
		{"cluster count", func(b []byte) {
			binary.LittleEndian.PutUint32(b[offClusterCount:], le32(b, offClusterCount)-9)
			fixChecksum(b)
		}, 0, freemap.ErrFormat, "ClusterCount"},
		{"checksum", func(b []byte) { b[100]++ }, 0, freemap.ErrFormat, "checksum"}, // the volume serial number
		{"short partition", nil, int64(len(img)) - 4096, freemap.ErrFormat, "does not fit"},
		{"revision", func(b []byte) { b[offRevision+1] = 2; fixChecksum(b) }, 0, freemap.ErrUnsupported, "revision"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := bytes.Clone(img)
			if tc.patch != nil {
				tc.patch(b)
			}
			size := tc.size
			if size == 0 {
				size = int64(len(b))
			}
			_, err := Read(bytes.NewReader(b), size)
			if !errors.Is(err, tc.kind) || !strings.Contains(err.Error(), tc.msg) || !strings.HasPrefix(err.Error(), "exfat: ") {
				t.Errorf("err = %v, want %v with %q", err, tc.kind, tc.msg)
			}
		})
	}
}
