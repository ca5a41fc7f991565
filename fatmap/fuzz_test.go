package fatmap

import (
	"bytes"
	"encoding/binary"
	"io"
	"testing"

	"github.com/prezero/prezero/internal/imgtest"
)

// fuzzSize is the volume size the fuzzer's inputs are read as: the input,
// then zeros. The seeds are the committed images without their trailing
// zeros, so inputs stay small.
const fuzzSize = 40 << 20

// TestSeeds maps the committed images: no tool needed.
func TestSeeds(t *testing.T) {
	want := map[string]string{"fat12.img.gz": "FAT12", "fat16.img.gz": "FAT16", "fat32.img.gz": "FAT32"}
	for name, img := range imgtest.Seeds(t) {
		t.Run(name, func(t *testing.T) {
			vol, err := Read(bytes.NewReader(img), int64(len(img)))
			if err != nil {
				t.Fatal(err)
			}
			if vol.Type != want[name] || vol.Dirty || len(vol.Notes) != 0 || vol.FreeClusters == 0 {
				t.Errorf("%+v", vol)
			}
			checkFuzzInvariants(t, imgtest.TrimZeros(img), &imgtest.PaddedReader{B: img, Size: int64(len(img))}, int64(len(img)), vol)
		})
	}
}

// checkFuzzInvariants checks a map against the raw bytes, with
// arithmetic of its own: every free byte lies in the data area, within
// whole clusters whose entry is zero in FAT copy 1.
func checkFuzzInvariants(t *testing.T, data []byte, r io.ReaderAt, size int64, vol *Volume) {
	t.Helper()
	if vol.Free.Size() != size {
		t.Fatalf("map size %d, volume %d", vol.Free.Size(), size)
	}
	var bpb [512]byte
	r.ReadAt(bpb[:], 0)
	u16 := func(o int) int64 { return int64(binary.LittleEndian.Uint16(bpb[o:])) }
	bps, spc, rsvd, nfats := u16(11), int64(bpb[13]), u16(14), int64(bpb[16])
	tot, fatSz := u16(19), u16(22)
	if tot == 0 {
		tot = int64(binary.LittleEndian.Uint32(bpb[32:]))
	}
	if fatSz == 0 {
		fatSz = int64(binary.LittleEndian.Uint32(bpb[36:]))
	}
	data0 := (rsvd + nfats*fatSz + (u16(17)*32+bps-1)/bps) * bps
	cb := spc * bps
	fat := make([]byte, fatSz*bps)
	r.ReadAt(fat, rsvd*bps)
	for _, e := range vol.Free.Extents() {
		if e.Off < data0 || e.End() > tot*bps || (e.Off-data0)%cb != 0 || e.Len%cb != 0 {
			t.Fatalf("free extent %+v outside the data area [%d, %d) or not whole %d-byte clusters", e, data0, tot*bps, cb)
		}
		for off := e.Off; off < e.End(); off += cb {
			n := (off-data0)/cb + 2
			var x uint32
			switch vol.Type {
			case "FAT12":
				x = uint32(binary.LittleEndian.Uint16(fat[n*3/2:]))
				if n%2 == 1 {
					x >>= 4
				}
				x &= 0xFFF
			case "FAT16":
				x = uint32(binary.LittleEndian.Uint16(fat[n*2:]))
			default:
				x = binary.LittleEndian.Uint32(fat[n*4:])
			}
			if x != 0 {
				t.Fatalf("cluster %d is free, but its entry in FAT 1 is %#x", n, x)
			}
		}
	}
}

// FuzzRead feeds mutated images to Read: it must never panic, and a map it
// returns must satisfy checkFuzzInvariants.
func FuzzRead(f *testing.F) {
	for _, img := range imgtest.Seeds(f) {
		f.Add(imgtest.TrimZeros(img))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > fuzzSize {
			return
		}
		r := &imgtest.PaddedReader{B: data, Size: fuzzSize}
		Probe(r, fuzzSize)
		vol, err := Read(r, fuzzSize)
		if err != nil {
			return
		}
		checkFuzzInvariants(t, data, r, fuzzSize, vol)
	})
}
