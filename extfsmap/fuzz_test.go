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
	"github.com/prezero/prezero/internal/imgtest"
)

// TestSeeds maps the committed images: no tool needed.
func TestSeeds(t *testing.T) {
	for name, img := range imgtest.Seeds(t) {
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

// crashSeed returns testdata/crash/NAME.img.gz: a crash-consistent copy
// whose journal needs replaying (made by mkcrash.sh there): crash-ext4, or
// crash-fc with fast commits.
func crashSeed(t testing.TB, name string) []byte {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", "crash", name+".img.gz"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestCrashSeed maps the committed crash copies through their journals:
// every byte zeroed is free both in the on-disk bitmaps and after e2fsck
// replays the journal.
func TestCrashSeed(t *testing.T) {
	for _, name := range []string{"crash-ext4", "crash-fc"} {
		t.Run(name, func(t *testing.T) {
			img := crashSeed(t, name)
			size := int64(len(img))
			vol, err := Read(bytes.NewReader(img), size)
			if err != nil {
				t.Fatal(err)
			}
			checkInvariants(t, vol, size)
			if vol.Journal == nil || vol.Journal.Transactions == 0 {
				t.Fatalf("no replay: %+v", vol.Journal)
			}
			if fc := name == "crash-fc"; vol.Journal.FastCommit != fc {
				t.Errorf("FastCommit %v, want %v", vol.Journal.FastCommit, fc)
			}
			imgtest.Need(t, "e2fsck", "dumpe2fs")
			p := filepath.Join(t.TempDir(), "crash.img")
			if err := os.WriteFile(p, img, 0o644); err != nil {
				t.Fatal(err)
			}
			if off := notFree(vol.Free, dumpFree(t, p, size)); off >= 0 {
				t.Errorf("byte %d zeroed but used in the on-disk bitmaps", off)
			}
			if off := notFree(vol.Free, replayedFree(t, img)); off >= 0 {
				t.Errorf("byte %d zeroed but used after replay", off)
			}
		})
	}
}

// FuzzRead checks that Read never panics, fails only with freemap's ErrFormat,
// ErrUnsupported or ErrUnsafe (every read it makes is inside the volume), and that every
// free extent lies inside the filesystem and outside the boot block and
// primary superblock.
func FuzzRead(f *testing.F) {
	imgs := imgtest.Seeds(f)
	for _, name := range slices.Sorted(maps.Keys(imgs)) {
		f.Add(imgs[name])
	}
	f.Add(crashSeed(f, "crash-ext4"))
	f.Add(crashSeed(f, "crash-fc"))
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

// FuzzPatch lays a short fuzzed patch over a seed image, mostly in its
// first 64 KiB where the superblock, descriptors and bitmaps are, so that
// mutations hit metadata rather than file data. Same checks as FuzzRead.
func FuzzPatch(f *testing.F) {
	imgs := imgtest.Seeds(f)
	imgs["crash-ext4"] = crashSeed(f, "crash-ext4")
	imgs["crash-fc"] = crashSeed(f, "crash-fc")
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
		vol, err := Read(&imgtest.Overlay{Base: img, Off: o, Patch: patch}, size)
		if err != nil {
			if !errors.Is(err, freemap.ErrFormat) && !errors.Is(err, freemap.ErrUnsupported) && !errors.Is(err, freemap.ErrUnsafe) {
				t.Fatalf("error %v is not ErrFormat, ErrUnsupported or ErrUnsafe", err)
			}
			return
		}
		checkInvariants(t, vol, size)
	})
}
