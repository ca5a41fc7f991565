package fatmap

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/prezero/prezero/internal/imgtest"
)

// variant is a FAT image made by mkfs.vfat and written through mtools.
type variant struct {
	name string
	size int64
	args []string // mkfs.vfat arguments
	typ  string   // the FAT type the cluster count gives
}

var variants = []variant{
	{"fat12", 8 << 20, []string{"-F", "12"}, "FAT12"},
	{"fat12-c512", 2 << 20, []string{"-F", "12", "-s", "1"}, "FAT12"},
	{"fat12-c64k", 48 << 20, []string{"-F", "12", "-s", "128"}, "FAT12"},
	{"fat12-s4096", 8 << 20, []string{"-F", "12", "-S", "4096", "-s", "1"}, "FAT12"},
	{"fat16", 32<<20 + 3*512 + 100, []string{"-F", "16"}, "FAT16"}, // a tail past the last cluster
	{"fat16-c512", 16 << 20, []string{"-F", "16", "-s", "1"}, "FAT16"},
	{"fat16-s4096", 32 << 20, []string{"-F", "16", "-S", "4096", "-s", "1"}, "FAT16"},
	{"fat32-c512", 40<<20 + 7*512, []string{"-F", "32", "-s", "1"}, "FAT32"},
}

// partcloneVariants are compared with partclone.fat too (it takes seconds
// each): one per FAT16/32 layout.
var partcloneVariants = map[string]bool{"fat16": true, "fat16-s4096": true, "fat32-c512": true}

// fixture is a built variant.
type fixture struct {
	variant
	path   string
	hashes map[string]string // sha256 of every remaining file
}

var builds = imgtest.Builds[*fixture]{Prefix: "fatmap-"}

func TestMain(m *testing.M) {
	code := m.Run()
	builds.RemoveAll()
	os.Exit(code)
}

// getFixture builds the named variant once per test run. Tests must not
// change the image: they copy it or patch it through a patchedReader.
func getFixture(t *testing.T, name string) *fixture {
	t.Helper()
	imgtest.Need(t, "mkfs.vfat", "mmd", "mcopy", "mdel", "mtype")
	for _, v := range variants {
		if v.name == name {
			return builds.Get(t, name, func(t *testing.T, path string) *fixture {
				path += ".img"
				return &fixture{variant: v, path: path, hashes: imgtest.FAT(t, path, v.size, v.args...)}
			})
		}
	}
	t.Fatalf("no variant %q", name)
	return nil
}

// readImage maps the image at path.
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

// TestOracles maps every variant and checks it against The Sleuth Kit
// sector by sector, fsck.fat and mtools on the zeroed copy, and for
// FAT16/32 partclone.fat's output byte for byte.
func TestOracles(t *testing.T) {
	imgtest.Need(t, "blkls", "fsck.fat", "partclone.fat")
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			f := getFixture(t, v.name)
			img, vol := readImage(t, f.path)
			if vol.FS != "vfat" || vol.Type != v.typ || vol.Dirty || vol.Free.Size() != int64(len(img)) {
				t.Fatalf("FS %q type %q dirty %v size %d", vol.FS, vol.Type, vol.Dirty, vol.Free.Size())
			}
			if vol.FreeClusters*int64(vol.BlockSize) != vol.Free.FreeBytes() || vol.FreeClusters == 0 {
				t.Errorf("%d free clusters of %d bytes, %d free bytes", vol.FreeClusters, vol.BlockSize, vol.Free.FreeBytes())
			}
			t.Logf("%s, %d-byte clusters, %d of %d clusters free, notes %q", vol.Type, vol.BlockSize, vol.FreeClusters, vol.Clusters, vol.Notes)
			tsk := imgtest.Blkls(t, "fat", f.path)
			imgtest.MatchBlkls(t, vol.Free, tsk, int64(vol.SectorSize))

			z := imgtest.WriteStream(t, f.path, vol.Free)
			imgtest.Run(t, "fsck.fat", "-n", z)
			imgtest.CheckFATFiles(t, z, f.hashes)
			if !partcloneVariants[v.name] {
				return // partclone.fat 0.3.23 misreads FAT12: see TestPartcloneFAT12
			}
			pc := partclone(t, f.path)
			want, err := os.ReadFile(pc)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := os.ReadFile(z)
			// partclone copies the filesystem's sectors only; prezero
			// passes the rest of the volume through.
			end := len(tsk) * vol.SectorSize
			if i := firstDiff(got[:end], want[:end]); i >= 0 {
				t.Errorf("zeroed copy differs from partclone.fat's at byte %d (sector %d)", i, int64(i)/int64(vol.SectorSize))
			}
			if !bytes.Equal(got[end:], img[end:]) {
				t.Errorf("the %d bytes past the filesystem's end are not passed through", len(img)-end)
			}
		})
	}
}

// partclone runs partclone.fat -b (device to device) into a new sparse file.
func partclone(t *testing.T, img string) string {
	t.Helper()
	fi, err := os.Stat(img)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "partclone.img")
	imgtest.ZeroFile(t, out, fi.Size())
	imgtest.Run(t, "partclone.fat", "-q", "-b", "-s", img, "-O", out, "-L", filepath.Join(t.TempDir(), "log"))
	return out
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

// TestPartcloneFAT12 shows where Debian 12's partclone.fat (0.3.23) is
// wrong on FAT12: it reads the FAT as 16-bit entries and leaves used
// clusters out of its copy. Wherever its copy and prezero's differ, The
// Sleuth Kit must call the sector allocated and prezero must have kept the
// source's bytes; and prezero's copy must pass fsck and hold every file.
func TestPartcloneFAT12(t *testing.T) {
	imgtest.Need(t, "blkls", "partclone.fat")
	for _, name := range []string{"fat12", "fat12-c512"} {
		t.Run(name, func(t *testing.T) {
			f := getFixture(t, name)
			img, vol := readImage(t, f.path)
			tsk := imgtest.Blkls(t, "fat", f.path)
			pc, err := os.ReadFile(partclone(t, f.path))
			if err != nil {
				t.Fatal(err)
			}
			got, _ := os.ReadFile(imgtest.WriteStream(t, f.path, vol.Free))
			ss := vol.SectorSize
			lost, extra := 0, 0
			for s := 0; s*ss < len(got); s++ {
				a, b := got[s*ss:(s+1)*ss], pc[s*ss:(s+1)*ss]
				if bytes.Equal(a, b) {
					continue
				}
				if s < len(tsk) && tsk[s] {
					extra++ // partclone kept a sector TSK calls free
					continue
				}
				if !bytes.Equal(a, img[s*ss:(s+1)*ss]) {
					t.Fatalf("sector %d: prezero and partclone differ, and prezero's is not the source's", s)
				}
				lost++
			}
			t.Logf("partclone.fat lost %d allocated sectors that prezero kept; kept %d free ones", lost, extra)
		})
	}
}
