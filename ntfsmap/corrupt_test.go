package ntfsmap

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/prezero/prezero/internal/imgtest"
)

// patch is a one-byte change at a volume offset.
type patch struct {
	off int64
	val byte
}

// patchedReader reads b with patches applied, without copying b.
type patchedReader struct {
	b       []byte
	patches []patch
}

func (r *patchedReader) ReadAt(p []byte, off int64) (int, error) {
	n, err := bytes.NewReader(r.b).ReadAt(p, off)
	for _, pt := range r.patches {
		if pt.off >= off && pt.off < off+int64(n) {
			p[pt.off-off] = pt.val
		}
	}
	return n, err
}

// corruption is one logical one-byte change: at off, and at mirror too when
// the byte is in a record that $MFTMirr duplicates (so that the change is
// not simply caught by the mirror comparison).
type corruption struct {
	what   string
	off    int64
	mirror int64 // -1 if none
}

// corruptions lists the metadata bytes worth corrupting in the image: boot
// sector fields, and in MFT records 0-3, 5 and 6 the record header, every
// attribute header, every runlist byte and the start of every resident
// value. $Bitmap's data is not among them: it is data, not structure.
func corruptions(t *testing.T, v *volume) []corruption {
	t.Helper()
	var out []corruption
	for _, o := range []int64{0x03, 0x0A, 0x0B, 0x0C, 0x0D, 0x0E, 0x10, 0x11, 0x13, 0x16, 0x20,
		0x28, 0x29, 0x2A, 0x2B, 0x2C, 0x2F, 0x30, 0x31, 0x32, 0x37, 0x38, 0x39, 0x3A, 0x3F, 0x40, 0x44} {
		out = append(out, corruption{fmt.Sprintf("boot+0x%x", o), o, -1})
	}
	_, mas, err := v.record(recMFTMirr)
	if err != nil {
		t.Fatal(err)
	}
	mirror := find(mas, attrData, "")
	if err := mirror.loadRuns(v.boot.clusters); err != nil {
		t.Fatal(err)
	}
	rs := int64(v.boot.recordSize)
	for _, num := range []int64{recMFT, recMFTMirr, recLogFile, recVolume, recRoot, recBitmap} {
		fr, as, err := v.record(num)
		if err != nil {
			t.Fatal(err)
		}
		var pos []int64
		add := func(from, n int64) {
			for p := from; p < from+n && p < int64(len(fr.b)); p++ {
				pos = append(pos, p)
			}
		}
		add(0, fileHeader31+8)
		add(fixupBlock-2, 2) // first protected word
		for _, a := range as {
			p := a.off - fr.off
			n := int64(binary.LittleEndian.Uint32(fr.b[p+offAttrLength:]))
			if !a.nonRes {
				vo := int64(binary.LittleEndian.Uint16(fr.b[p+offResValueOfs:]))
				add(p, vo)
				add(p+vo, min(int64(len(a.value)), 0x60))
				continue
			}
			add(p, n) // header and the whole runlist
		}
		for _, p := range pos {
			c := corruption{fmt.Sprintf("record %d byte 0x%x", num, p), v.attrOffset(v.mft, num*rs+p), -1}
			if num < mirrorRecords {
				c.mirror = v.attrOffset(mirror, num*rs+p)
			}
			out = append(out, c)
		}
	}
	return out
}

// readTruth returns the image at path and its uncorrupted map.
func readTruth(t *testing.T, path string) ([]byte, *Volume) {
	t.Helper()
	img, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	truth, err := Read(bytes.NewReader(img), int64(len(img)), Options{})
	if err != nil {
		t.Fatal(err)
	}
	return img, truth
}

// TestCorruptions applies each corruption, four ways, to real images. Each
// must give an error or a map whose free clusters are all free in the true
// map: never a used cluster zeroed, never a panic.
func TestCorruptions(t *testing.T) {
	for _, name := range []string{"c4096", "c512"} {
		t.Run(name, func(t *testing.T) {
			f := getFixture(t, name)
			img, truth := readTruth(t, f.path)
			size := int64(len(img))
			v := openVolume(t, f.path)
			var nerr, nok, nsame int
			for _, c := range corruptions(t, v) {
				old := img[c.off]
				for _, val := range []byte{old ^ 0xFF, old + 1, old - 1, old ^ 0x10} {
					r := &patchedReader{b: img, patches: []patch{{c.off, val}}}
					if c.mirror >= 0 {
						r.patches = append(r.patches, patch{c.mirror, val})
					}
					vol, err := Read(r, size, Options{})
					if err != nil {
						nerr++
						continue
					}
					nok++
					if vol.Free.String() == truth.Free.String() {
						nsame++
					}
					if e, ok := imgtest.FreeOutside(vol.Free, truth.Free); ok {
						t.Errorf("%s = 0x%02x: free extent %+v holds used clusters", c.what, val, e)
					}
				}
			}
			t.Logf("%d corruptions: %d errors, %d maps (%d unchanged)", nerr+nok, nerr, nok, nsame)

			// The total sector count grown to the whole volume (no room
			// for the backup boot sector): the last cluster's bit lies
			// past mkntfs's bitmap bits, and must not free the backup.
			for _, total := range []int64{size / int64(v.boot.sectorSize), v.boot.totalSectors + 1} {
				var b [8]byte
				binary.LittleEndian.PutUint64(b[:], uint64(total))
				r := &patchedReader{b: img}
				for i := range b {
					r.patches = append(r.patches, patch{offTotalSectors + int64(i), b[i]})
				}
				vol, err := Read(r, size, Options{})
				if err != nil {
					t.Logf("total sectors %d: %v", total, err)
					continue
				}
				if e, ok := imgtest.FreeOutside(vol.Free, truth.Free); ok {
					t.Errorf("total sectors %d: free extent %+v holds used bytes", total, e)
				}
			}
		})
	}
}

// TestShortBitmap shrinks $Bitmap's data or initialized size: the clusters
// whose bits are no longer covered must pass through, with a warning.
func TestShortBitmap(t *testing.T) {
	f := getFixture(t, "c4096")
	img, truth := readTruth(t, f.path)
	size := int64(len(img))
	v := openVolume(t, f.path)
	fr, as, err := v.record(recBitmap)
	if err != nil {
		t.Fatal(err)
	}
	d := find(as, attrData, "")
	half := (v.boot.clusters + 7) / 8 / 2
	for _, tc := range []struct {
		name   string
		fields []int64 // attribute header offsets set to half
		warn   string
	}{
		{"data size", []int64{offNonResData, offNonResInit}, "has"},
		{"initialized size", []int64{offNonResInit}, "initialized"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &patchedReader{b: img}
			for _, field := range tc.fields {
				var b [8]byte
				binary.LittleEndian.PutUint64(b[:], uint64(half))
				for i := range b {
					off := recordOffset(t, v, recBitmap, d.off-fr.off+field+int64(i))
					r.patches = append(r.patches, patch{off, b[i]})
				}
			}
			vol, err := Read(r, size, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if len(vol.Notes) != 1 || !strings.Contains(vol.Notes[0], tc.warn) {
				t.Errorf("warnings %q, want one with %q", vol.Notes, tc.warn)
			}
			if e, ok := imgtest.FreeOutside(vol.Free, truth.Free); ok {
				t.Fatalf("free extent %+v holds used clusters", e)
			}
			limit := half * 8 * int64(v.boot.clusterSize)
			if n := len(vol.Free.Extents()); n > 0 && vol.Free.Extents()[n-1].End() > limit {
				t.Errorf("free extent past the covered %d bytes: %+v", limit, vol.Free.Extents()[n-1])
			}
			if vol.UsedClusters <= truth.UsedClusters {
				t.Errorf("UsedClusters %d, want more than %d", vol.UsedClusters, truth.UsedClusters)
			}
		})
	}
}
