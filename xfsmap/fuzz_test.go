package xfsmap

import (
	"bytes"
	"errors"
	"testing"

	"github.com/prezero/prezero/freemap"
	"github.com/prezero/prezero/internal/imgtest"
)

// FuzzRead lays a short fuzzed patch over one of the seed images (see
// testdata/mkseeds.sh), mostly where the metadata is: the superblock and
// AG headers and btree roots of AG 0 and AG 1, and the log. Read must not
// panic, must fail only with one of the three typed errors, must keep the
// AG headers, the log and everything past the filesystem, and must never
// free a byte the unpatched image keeps: one patch cannot rewrite the AGF,
// the bnobt and the cntbt consistently.
func FuzzRead(f *testing.F) {
	type base struct {
		img   []byte
		truth *freemap.Map
		areas []int64 // starts of the metadata areas
	}
	var bases []base
	for _, name := range seedNames {
		img := seed(f, name)
		size := int64(len(img))
		truth := freemap.NewBuilder(size).Map()
		if vol, err := Read(bytes.NewReader(img), size); err == nil {
			truth = vol.Free
		}
		r := &reader{r: bytes.NewReader(img), size: size}
		s, err := readSuper(r, size)
		if err != nil {
			f.Fatal(err)
		}
		bases = append(bases, base{img, truth, []int64{0, s.agOff(1, 0), s.agOff(s.logStartAG, s.logStartBN)}})
	}
	f.Add(uint8(0), uint32(0x21), []byte{0x01})                     // sb dblocks
	f.Add(uint8(1), uint32(512+52), []byte{0x00, 0x00, 0x10, 0x00}) // v4 agf_freeblks
	f.Add(uint8(1), uint32(4096+16+4), []byte{0x00, 0x00})          // v4 bnobt record
	f.Add(uint8(2), uint32(0x40000000), []byte{0xfe, 0xed, 0xba, 0xbe})
	f.Add(uint8(3), uint32(0x40000000+9), []byte{0x20})
	f.Add(uint8(4), uint32(0x20000000+1024+16), []byte{0xff, 0xff})
	f.Fuzz(func(t *testing.T, seed uint8, off uint32, patch []byte) {
		b := bases[int(seed)%len(bases)]
		if len(patch) > 512 {
			patch = patch[:512]
		}
		size := int64(len(b.img))
		o := int64(off) % size
		if off&0x80000000 == 0 { // most patches go to the metadata areas
			o = (b.areas[(off>>29)%3] + int64(off&0x1fffffff)%(128<<10)) % size
		}
		p := &imgtest.Overlay{Base: b.img, Off: o, Patch: patch}
		Probe(p, size)
		vol, err := Read(p, size)
		if err != nil {
			if !errors.Is(err, freemap.ErrFormat) && !errors.Is(err, freemap.ErrUnsupported) && !errors.Is(err, freemap.ErrUnsafe) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		if vol.Free.Size() != size {
			t.Fatalf("map of %d bytes for a %d-byte volume", vol.Free.Size(), size)
		}
		if vol.Fallbacks > 0 && len(vol.Notes) == 0 {
			t.Fatal("fallbacks without notes")
		}
		if at, ok := subset(vol.Free, b.truth); !ok {
			t.Fatalf("patch at %d frees byte %d, which the unpatched image keeps", o, at)
		}
		checkMetadataKept(t, p, size, vol)
	})
}
