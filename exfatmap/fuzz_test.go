package exfatmap

import (
	"bytes"
	"io"
	"testing"

	"github.com/prezero/prezero/internal/imgtest"
)

// checkInvariants checks a map against the raw bytes with arithmetic of
// its own: every free byte lies in whole clusters of the heap whose bit is
// clear in the first allocation bitmap.
func checkInvariants(t *testing.T, r io.ReaderAt, size int64, vol *Volume) {
	t.Helper()
	if vol.Free.Size() != size {
		t.Fatalf("map size %d, volume %d", vol.Free.Size(), size)
	}
	if len(vol.Free.Extents()) == 0 {
		return
	}
	read := func(off int64, n int) []byte {
		b := make([]byte, n)
		r.ReadAt(b, off)
		return b
	}
	boot := read(0, 512)
	bps := int64(1) << boot[108]
	cb := bps << boot[109]
	heap := int64(le32(boot, 88)) * bps
	root := read(heap+int64(le32(boot, 96)-2)*cb, int(min(cb, 1<<20)))
	var bitmap int64 = -1
	for i := 0; i+32 <= len(root); i += 32 {
		if root[i] == typeBitmap && root[i+1]&1 == 0 {
			bitmap = heap + int64(le32(root, i+20)-2)*cb
			break
		}
	}
	if bitmap < 0 {
		t.Fatal("free extents without a first bitmap in the root's first cluster")
	}
	for _, e := range vol.Free.Extents() {
		if e.Off < heap || (e.Off-heap)%cb != 0 || e.Len%cb != 0 {
			t.Fatalf("free extent %+v not whole clusters of the heap at %d", e, heap)
		}
		for off := e.Off; off < e.End(); off += cb {
			i := (off - heap) / cb
			if read(bitmap+i/8, 1)[0]&(1<<(i%8)) != 0 {
				t.Fatalf("cluster %d is free, but its bit is set", i+2)
			}
		}
	}
}

// fuzzSize is the volume size the fuzzer's inputs are read as: the input,
// then zeros. The seeds are the committed images without their trailing
// zeros, so inputs stay small.
const fuzzSize = 4 << 20

func TestSeeds(t *testing.T) {
	for name, img := range imgtest.Seeds(t) {
		t.Run(name, func(t *testing.T) {
			vol, err := Read(bytes.NewReader(img), int64(len(img)))
			if err != nil {
				t.Fatal(err)
			}
			if vol.Dirty || vol.FreeClusters == 0 || len(vol.Notes) != 0 || !Probe(bytes.NewReader(img), int64(len(img))) {
				t.Errorf("%+v", vol)
			}
			checkInvariants(t, bytes.NewReader(img), int64(len(img)), vol)
		})
	}
}

// FuzzRead feeds mutated images to Read: it must never panic, and a map it
// returns must satisfy checkInvariants. The seeds carry the boot region's
// checksum, so mutations of sectors 0-11 mostly exercise it; the rest
// reach the directories, FAT and bitmap.
func FuzzRead(f *testing.F) {
	for _, img := range imgtest.Seeds(f) {
		if len(img) != fuzzSize && len(img) != fuzzSize/2 {
			f.Fatalf("seed of %d bytes: the fuzz size assumes 2 or 4 MiB", len(img))
		}
		f.Add(bytes.TrimRight(img, "\x00"), len(img) == fuzzSize)
	}
	f.Fuzz(func(t *testing.T, data []byte, full bool) {
		size := int64(fuzzSize)
		if !full {
			size /= 2
		}
		if int64(len(data)) > size {
			return
		}
		r := &imgtest.PaddedReader{B: data, Size: size}
		Probe(r, size)
		vol, err := Read(r, size)
		if err != nil {
			return
		}
		checkInvariants(t, r, size, vol)
	})
}
