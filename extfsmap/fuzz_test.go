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

	"github.com/prezero/prezero/freemap"
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

// FuzzRead checks that Read never panics, fails only with freemap's ErrFormat,
// ErrUnsupported or ErrUnsafe (every read it makes is inside the volume), and that every
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
			if !errors.Is(err, freemap.ErrFormat) && !errors.Is(err, freemap.ErrUnsupported) && !errors.Is(err, freemap.ErrUnsafe) {
				t.Fatalf("error %v is not ErrFormat, ErrUnsupported or ErrUnsafe", err)
			}
			return
		}
		checkInvariants(t, vol, size)
		if vol.Fallbacks > 0 && len(vol.Notes) == 0 {
			t.Fatal("fallbacks without notes")
		}
	})
}

// overlay reads base with patch laid over it at off.
type overlay struct {
	base  []byte
	off   int64
	patch []byte
}

func (o *overlay) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("negative offset")
	}
	if off >= int64(len(o.base)) {
		return 0, io.EOF
	}
	n := copy(p, o.base[off:])
	for i := range n {
		if j := off + int64(i) - o.off; j >= 0 && j < int64(len(o.patch)) {
			p[i] = o.patch[j]
		}
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// FuzzPatch lays a short fuzzed patch over a seed image, mostly in its
// first 64 KiB where the superblock, descriptors and bitmaps are, so that
// mutations hit metadata rather than file data. Same checks as FuzzRead.
func FuzzPatch(f *testing.F) {
	imgs := seedImages(f)
	names := slices.Sorted(maps.Keys(imgs))
	f.Add(uint8(0), uint32(1024+0x38), []byte{0x53, 0xef})
	f.Add(uint8(1), uint32(1024+0x60), []byte{0x10})
	f.Add(uint8(2), uint32(2048), []byte{0xff, 0xff, 0xff, 0xff})
	f.Add(uint8(3), uint32(1024+0x20), []byte{0x08, 0x01})
	f.Add(uint8(4), uint32(3072+0x12), []byte{0x02})
	f.Add(uint8(5), uint32(4096+0x12), []byte{0x03, 0x00})
	f.Fuzz(func(t *testing.T, seed uint8, off uint32, patch []byte) {
		img := imgs[names[int(seed)%len(names)]]
		if len(patch) > 256 {
			patch = patch[:256]
		}
		o := int64(off) % int64(len(img))
		if off&0x80000000 == 0 {
			o = int64(off) % 65536 // most patches go to the metadata
		}
		size := int64(len(img))
		vol, err := Read(&overlay{base: img, off: o, patch: patch}, size)
		if err != nil {
			if !errors.Is(err, freemap.ErrFormat) && !errors.Is(err, freemap.ErrUnsupported) && !errors.Is(err, freemap.ErrUnsafe) {
				t.Fatalf("error %v is not ErrFormat, ErrUnsupported or ErrUnsafe", err)
			}
			return
		}
		checkInvariants(t, vol, size)
	})
}
