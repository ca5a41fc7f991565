package extfsmap

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// seedImages returns the decompressed testdata/*.img.gz images by name.
func seedImages(t testing.TB) map[string][]byte {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join("testdata", "*.img.gz"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no seed images in testdata: %v", err)
	}
	imgs := map[string][]byte{}
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		zr, err := gzip.NewReader(f)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		b, err := io.ReadAll(zr)
		f.Close()
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		imgs[filepath.Base(p)] = b
	}
	return imgs
}

// TestSeeds maps the committed images: no tool needed.
func TestSeeds(t *testing.T) {
	for name, img := range seedImages(t) {
		t.Run(name, func(t *testing.T) {
			size := int64(len(img))
			if !Probe(bytes.NewReader(img), size) {
				t.Error("Probe = false")
			}
			vol, err := Read(bytes.NewReader(img), size)
			if err != nil {
				t.Fatal(err)
			}
			checkInvariants(t, vol, size)
			if vol.Fallbacks != 0 || vol.Free.FreeBytes() == 0 {
				t.Errorf("%d fallbacks (%q), %v", vol.Fallbacks, vol.Notes, vol.Free)
			}
			// The superblock's free count is exact on a fresh mkfs.
			if got, want := vol.Free.FreeBytes(), vol.FreeBlocks*int64(vol.BlockSize); got != want {
				t.Errorf("free bytes %d, superblock says %d", got, want)
			}
		})
	}
}

// FuzzRead checks that Read never panics, fails only with ErrFormat or
// ErrUnsupported (every read it makes is inside the volume), and that every
// free extent lies inside the filesystem and outside the boot block and
// primary superblock.
func FuzzRead(f *testing.F) {
	imgs := seedImages(f)
	for _, name := range slices.Sorted(maps.Keys(imgs)) {
		f.Add(imgs[name])
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		size := int64(len(data))
		r := bytes.NewReader(data)
		Probe(r, size)
		vol, err := Read(r, size)
		if err != nil {
			if !errors.Is(err, ErrFormat) && !errors.Is(err, ErrUnsupported) {
				t.Fatalf("error %v is neither ErrFormat nor ErrUnsupported", err)
			}
			return
		}
		checkInvariants(t, vol, size)
		if vol.Fallbacks > 0 && len(vol.Notes) == 0 {
			t.Fatal("fallbacks without notes")
		}
	})
}
