package fatmap

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/prezero/prezero/freemap"
	"github.com/prezero/prezero/internal/imgtest"
)

// TestProbe claims the FAT seeds and nothing else: NTFS and exFAT boot
// sectors also begin with a jump and end in 0x55AA.
func TestProbe(t *testing.T) {
	for name, img := range imgtest.Seeds(t) {
		if !Probe(bytes.NewReader(img), int64(len(img))) {
			t.Errorf("Probe(%s) = false", name)
		}
		if Probe(bytes.NewReader(img[:300]), 300) {
			t.Errorf("Probe(300 bytes of %s) = true", name)
		}
	}
	others := map[string][]byte{
		"zeros": make([]byte, 1<<20),
		"ntfs":  imgtest.Gunzip(t, "../ntfsmap/testdata/ntfs-c512.img.gz"),
		"ext4":  imgtest.Gunzip(t, "../extfsmap/testdata/ext4.img.gz"),
	}
	imgtest.Need(t, "mkfs.exfat")
	ex := filepath.Join(t.TempDir(), "ex.img")
	imgtest.ZeroFile(t, ex, 8<<20)
	imgtest.Run(t, "mkfs.exfat", ex)
	others["exfat"], _ = os.ReadFile(ex)
	for name, img := range others {
		if Probe(bytes.NewReader(img), int64(len(img))) {
			t.Errorf("Probe(%s) = true", name)
		}
		if _, err := Read(bytes.NewReader(img), int64(len(img))); !errors.Is(err, freemap.ErrFormat) {
			t.Errorf("Read(%s): %v, want a format error", name, err)
		}
	}
}

// TestRefusals checks the typed refusals of malformed and ambiguous boot
// sectors, and of volumes larger than their partition.
func TestRefusals(t *testing.T) {
	imgs := imgtest.Seeds(t)
	f32, f16 := imgs["fat32.img.gz"], imgs["fat16.img.gz"]
	for _, tc := range []struct {
		name  string
		img   []byte
		size  int64
		patch func(b []byte)
		kind  error
		off   int64
	}{
		{"short volume", f16, int64(len(f16)) - 512, nil, freemap.ErrFormat, offTotSec32},
		{"bytes per sector", f16, 0, func(b []byte) { b[offBytsPerSec+1] = 3 }, freemap.ErrFormat, offBytsPerSec},
		{"odd root entries", f16, 0, func(b []byte) { b[offRootEntCnt] = 1 }, freemap.ErrFormat, offRootEntCnt},
		{"FAT32 version", f32, 0, func(b []byte) { b[offFSVer] = 1; b[6*512+offFSVer] = 1 }, freemap.ErrUnsupported, -1},
		{"backup differs", f32, 0, func(b []byte) { b[offRootClus] = 3 }, freemap.ErrFormat, offRootClus},
		// A FAT16 count in a FAT32 layout: Linux would say FAT32,
		// Windows FAT16.
		{"FAT32 layout, FAT16 count", f32, 0, func(b []byte) {
			b[offSecPerClus], b[6*512+offSecPerClus] = 2, 2
		}, freemap.ErrFormat, offFATSz16},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := bytes.Clone(tc.img)
			if tc.patch != nil {
				tc.patch(b)
			}
			size := tc.size
			if size == 0 {
				size = int64(len(b))
			}
			_, err := Read(bytes.NewReader(b), size)
			var fe *freemap.FormatError
			if !errors.Is(err, tc.kind) || (tc.off >= 0 && (!errors.As(err, &fe) || fe.Off != tc.off)) {
				t.Fatalf("err = %v, want %v at %d", err, tc.kind, tc.off)
			}
			if err.Error()[:5] != "vfat:" {
				t.Errorf("message %q", err)
			}
		})
	}
}

// TestFAT32ReservedBits: a FAT32 entry whose 28-bit value is zero but
// whose reserved top bits are not is still allocated.
func TestFAT32ReservedBits(t *testing.T) {
	img := bytes.Clone(imgtest.Seeds(t)["fat32.img.gz"])
	g := geom(t, img)
	truth, err := Read(bytes.NewReader(img), int64(len(img)))
	if err != nil {
		t.Fatal(err)
	}
	n := g.clusters + 1 // the last cluster, free on the seed
	if !clusterFree(truth, g, n) {
		t.Fatalf("cluster %d is not free on the seed", n)
	}
	for c := uint32(0); c < g.nfats; c++ {
		setEntry(img, g, c, n, 0x10000000)
	}
	vol, err := Read(bytes.NewReader(img), int64(len(img)))
	if err != nil {
		t.Fatal(err)
	}
	if clusterFree(vol, g, n) || vol.FreeClusters != truth.FreeClusters-1 {
		t.Errorf("cluster %d with entry 0x10000000: free %v, %d free clusters (was %d)", n, clusterFree(vol, g, n), vol.FreeClusters, truth.FreeClusters)
	}
}
