package exfatmap

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
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

// checkInvariants checks a map against the raw bytes with arithmetic of
// its own: every free byte lies in whole clusters of the heap whose bit is
// clear in the first allocation bitmap.
func checkInvariants(t *testing.T, img []byte, vol *Volume) {
	t.Helper()
	if vol.Free.Size() != int64(len(img)) {
		t.Fatalf("map size %d, volume %d", vol.Free.Size(), len(img))
	}
	bps := int64(1) << img[108]
	cb := bps << img[109]
	heap := int64(le32(img, 88)) * bps
	root := heap + int64(le32(img, 96)-2)*cb
	var bitmap int64 = -1
	for i := root; i+32 <= root+cb && i+32 <= int64(len(img)); i += 32 {
		if img[i] == typeBitmap && img[i+1]&1 == 0 {
			bitmap = heap + int64(le32(img, int(i)+20)-2)*cb
		}
	}
	if bitmap < 0 && len(vol.Free.Extents()) > 0 {
		t.Fatal("free extents without a first bitmap in the root's first cluster")
	}
	for _, e := range vol.Free.Extents() {
		if e.Off < heap || (e.Off-heap)%cb != 0 || e.Len%cb != 0 {
			t.Fatalf("free extent %+v not whole clusters of the heap at %d", e, heap)
		}
		for off := e.Off; off < e.End(); off += cb {
			i := (off - heap) / cb
			if img[bitmap+i/8]&(1<<(i%8)) != 0 {
				t.Fatalf("cluster %d is free, but its bit is set", i+2)
			}
		}
	}
}

func TestSeeds(t *testing.T) {
	for name, img := range seedImages(t) {
		t.Run(name, func(t *testing.T) {
			vol, err := Read(bytes.NewReader(img), int64(len(img)))
			if err != nil {
				t.Fatal(err)
			}
			if vol.Dirty || vol.FreeClusters == 0 || len(vol.Notes) != 0 || !Probe(bytes.NewReader(img), int64(len(img))) {
				t.Errorf("%+v", vol)
			}
			checkInvariants(t, img, vol)
		})
	}
}

// FuzzRead feeds mutated images to Read: it must never panic, and a map it
// returns must satisfy checkInvariants. The seeds carry the boot region's
// checksum, so mutations of sectors 0-11 mostly exercise it; the rest
// reach the directories, FAT and bitmap.
func FuzzRead(f *testing.F) {
	for _, img := range seedImages(f) {
		f.Add(img)
	}
	f.Fuzz(func(t *testing.T, img []byte) {
		if len(img) > 8<<20 {
			return
		}
		r := bytes.NewReader(img)
		Probe(r, r.Size())
		vol, err := Read(r, r.Size())
		if err != nil {
			return
		}
		checkInvariants(t, img, vol)
	})
}
