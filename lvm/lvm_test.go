package lvm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/prezero/prezero/freemap"
	"github.com/prezero/prezero/internal/imgtest"
)

// seed returns a testdata PV image (its first MiB, see mkseeds.sh).
func seed(t testing.TB, name string) []byte {
	t.Helper()
	return imgtest.Gunzip(t, filepath.Join("testdata", name))
}

const devSize = 32 << 20 // the seed PVs' device size

func read(t testing.TB, b []byte) (*PV, error) {
	return Read(bytes.NewReader(b), devSize)
}

// TestSegmentsMatchLVS: the segments Read finds are the ones lvs reported
// when the seeds were made (testdata/lvs.txt).
func TestSegmentsMatchLVS(t *testing.T) {
	pv0, err := read(t, seed(t, "pv0.img.gz"))
	if err != nil {
		t.Fatal(err)
	}
	pv1, err := read(t, seed(t, "pv1.img.gz"))
	if err != nil {
		t.Fatal(err)
	}
	if pv0.VG.ID != pv1.VG.ID || pv0.VG.Seqno != pv1.VG.Seqno || pv0.Info.Name != "pv0" || pv1.Info.Name != "pv1" {
		t.Fatalf("pv0 %+v, pv1 %+v", pv0.Info, pv1.Info)
	}
	vg := pv0.VG
	var got []string
	for _, lv := range vg.LVs {
		for _, s := range lv.Segments {
			var ranges []string
			n := s.ExtentCount / int64(len(s.Stripes))
			for _, st := range s.Stripes {
				ranges = append(ranges, fmt.Sprintf("%s:%d-%d", st.PV, st.Extent, st.Extent+n-1))
			}
			got = append(got, fmt.Sprintf("%s;%d;%s;%d;%d", lv.Name, s.StartExtent, strings.Join(ranges, " "), len(s.Stripes), s.StripeSize))
		}
	}
	sort.Strings(got)
	want, err := os.ReadFile("testdata/lvs.txt")
	if err != nil {
		t.Fatal(err)
	}
	if g, w := strings.Join(got, "\n"), strings.TrimSpace(string(want)); g != w {
		t.Fatalf("segments:\n%s\nlvs said:\n%s", g, w)
	}
	for _, lv := range vg.LVs {
		if lv.Reason != "" {
			t.Errorf("%s: %s", lv.Name, lv.Reason)
		}
	}
	// Free extents: pv0 has 31 extents, 0-17 used; pv1 0-7 used.
	for _, c := range []struct {
		pv   *PV
		used int64
	}{{pv0, 18}, {pv1, 8}} {
		free := vg.FreeExtents(c.pv.Info, devSize)
		wantFree := (c.pv.Info.PECount - c.used) << 20
		if free.FreeBytes() != wantFree || free.Extents()[0].Off != c.pv.PEStart+c.used<<20 {
			t.Errorf("%s: free %v, want %d bytes from extent %d", c.pv.Info.Name, free, wantFree, c.used)
		}
	}
}

// TestWrapped reads metadata that wraps around the circular buffer.
func TestWrapped(t *testing.T) {
	b := seed(t, "wrapped.img.gz")
	h := b[4096:]
	size := binary.LittleEndian.Uint64(h[32:])
	off, n := binary.LittleEndian.Uint64(h[40:]), binary.LittleEndian.Uint64(h[48:])
	if off+n <= size {
		t.Fatalf("the seed's metadata does not wrap (offset %d + %d <= %d): remake it", off, n, size)
	}
	pv, err := read(t, b)
	if err != nil {
		t.Fatal(err)
	}
	if pv.VG.Name != "wrapvg" || len(pv.VG.LVs) != 1 || pv.VG.LVs[0].Size != 4<<20 {
		t.Fatalf("VG %+v", pv.VG)
	}
}

// TestCorruptions flips bytes of the label, PV header, metadata area
// header and text: Read either refuses, or finds the same VG, so that no
// corruption can make an extent free that was used.
func TestCorruptions(t *testing.T) {
	orig := seed(t, "pv0.img.gz")
	pv, err := read(t, orig)
	if err != nil {
		t.Fatal(err)
	}
	good := pv.VG.FreeExtents(pv.Info, devSize)
	textOff := 4096 + int(binary.LittleEndian.Uint64(orig[4096+40:]))
	textLen := int(binary.LittleEndian.Uint64(orig[4096+48:]))
	var offs []int
	for i := 512; i < 512+200; i++ { // label header and pv_header
		offs = append(offs, i)
	}
	for i := 4096; i < 4096+64; i++ { // mda header and raw_locns
		offs = append(offs, i)
	}
	for i := textOff; i < textOff+textLen; i += 7 {
		offs = append(offs, i)
	}
	refused := 0
	for _, off := range offs {
		for _, x := range []byte{0x01, 0x80, 0xff} {
			b := orig // flipped in place, put back below
			b[off] ^= x
			pv, err := read(t, b)
			b[off] ^= x
			if err != nil {
				if !errors.Is(err, freemap.ErrFormat) && !errors.Is(err, freemap.ErrUnsupported) {
					t.Fatalf("byte %d ^ %#x: error %v is not of freemap's scheme", off, x, err)
				}
				refused++
				continue
			}
			if pv.VG == nil {
				continue
			}
			free := pv.VG.FreeExtents(pv.Info, devSize)
			for _, e := range free.Extents() {
				for o := e.Off; o < e.End(); o += 1 << 20 {
					if !good.IsFree(o) {
						t.Fatalf("byte %d ^ %#x: byte %d became free", off, x, o)
					}
				}
			}
		}
	}
	if refused == 0 {
		t.Fatal("no corruption was refused")
	}
}

// TestStripeProjection checks Volume.Project against a byte-by-byte
// reference built from Volume.locate on random striped layouts.
func TestStripeProjection(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for iter := 0; iter < 200; iter++ {
		const ext = 64
		chunk := int64(8) << rng.IntN(3) // 8, 16, 32
		vg := &VG{Name: "v", ExtentSize: ext}
		vg.PVs = []*PVInfo{{Name: "pv0", PEStart: 16, PECount: 64}, {Name: "pv1", PEStart: 32, PECount: 64}}
		lv := &LV{Name: "l"}
		var start, next0, next1 int64
		for s := 0; s < 1+rng.IntN(3); s++ {
			n := int64(1 + rng.IntN(2))
			per := int64(1 + rng.IntN(4))
			seg := Segment{StartExtent: start, ExtentCount: per * n, Type: "striped"}
			if n > 1 {
				seg.StripeSize = chunk
			}
			seg.Stripes = append(seg.Stripes, Stripe{"pv0", next0})
			next0 += per + int64(rng.IntN(2))
			if n == 2 {
				seg.Stripes = append(seg.Stripes, Stripe{"pv1", next1})
				next1 += per
			}
			start += seg.ExtentCount
			lv.Segments = append(lv.Segments, seg)
		}
		lv.Size = start * ext
		devs := map[string]Device{"pv0": {bytes.NewReader(make([]byte, 16+64*ext)), 16 + 64*ext}, "pv1": {bytes.NewReader(make([]byte, 32+64*ext)), 32 + 64*ext}}
		v, err := vg.Open(lv, devs)
		if err != nil {
			t.Fatal(err)
		}
		fb := freemap.NewBuilder(lv.Size)
		for k := 0; k < 4; k++ {
			fb.Add(rng.Int64N(lv.Size), rng.Int64N(lv.Size/2+1))
		}
		free := fb.Map()
		for _, pv := range []string{"pv0", "pv1"} {
			b := freemap.NewBuilder(devs[pv].Size)
			v.Project(free, pv, b)
			got := b.Map()
			want := freemap.NewBuilder(devs[pv].Size)
			for x := int64(0); x < lv.Size; x++ {
				if p, off, _ := v.locate(x); p == pv && free.IsFree(x) {
					want.Add(off, 1)
				}
			}
			if w := want.Map(); fmt.Sprint(w.Extents()) != fmt.Sprint(got.Extents()) {
				t.Fatalf("iter %d %s: projected %v, want %v (segments %+v)", iter, pv, got.Extents(), w.Extents(), lv.Segments)
			}
		}
	}
}

// TestVolumeReader: an LV read through Volume follows the io.ReaderAt
// contract and returns the stripes in order.
func TestVolumeReader(t *testing.T) {
	const ext = 4096
	vg := &VG{Name: "v", ExtentSize: ext, PVs: []*PVInfo{{Name: "a", PEStart: 512, PECount: 8}, {Name: "b", PEStart: 1024, PECount: 8}}}
	lv := &LV{Name: "l", Size: 6 * ext, Segments: []Segment{
		{StartExtent: 0, ExtentCount: 4, Type: "striped", StripeSize: 1024, Stripes: []Stripe{{"a", 4}, {"b", 0}}},
		{StartExtent: 4, ExtentCount: 2, Type: "striped", Stripes: []Stripe{{"b", 5}}},
	}}
	a, b := make([]byte, 512+8*ext), make([]byte, 1024+8*ext)
	for i := range a {
		a[i] = byte(i * 7)
	}
	for i := range b {
		b[i] = byte(i*13 + 1)
	}
	v, err := vg.Open(lv, map[string]Device{"a": {bytes.NewReader(a), int64(len(a))}, "b": {bytes.NewReader(b), int64(len(b))}})
	if err != nil {
		t.Fatal(err)
	}
	var want []byte
	for row := 0; row < 2*ext/1024; row++ {
		want = append(want, a[512+4*ext+row*1024:][:1024]...)
		want = append(want, b[1024+row*1024:][:1024]...)
	}
	want = append(want, b[1024+5*ext:][:2*ext]...)
	if err := iotest.TestReader(io.NewSectionReader(v, 0, v.Size()), want); err != nil {
		t.Fatal(err)
	}
	if _, err := vg.Open(lv, map[string]Device{"a": {bytes.NewReader(a), int64(len(a))}}); !errors.Is(err, freemap.ErrUnsupported) {
		t.Fatalf("open without PV b: %v", err)
	}
	if _, err := vg.Open(lv, map[string]Device{"a": {bytes.NewReader(a), int64(len(a))}, "b": {bytes.NewReader(b), 2 * ext}}); err == nil {
		t.Fatal("opened an LV past the end of a truncated PV")
	}
}

// TestMetadataRefusals: metadata prezero must not map.
func TestMetadataRefusals(t *testing.T) {
	base := func(segs string) string {
		return `vg { id = "a" seqno = 3 format = "lvm2" extent_size = 8
physical_volumes { pv0 { id = "p" pe_start = 2048 pe_count = 10 } pv1 { id = "q" pe_start = 2048 pe_count = 10 } }
logical_volumes { ` + segs + ` } }`
	}
	lin := func(name string, pv string, ext int) string {
		return name + ` { id = "x" status = ["READ", "WRITE", "VISIBLE"] segment_count = 1 segment1 { start_extent = 0 extent_count = 2 type = "striped" stripe_count = 1 stripes = ["` + pv + `", ` + strconv.Itoa(ext) + `] } }`
	}
	for _, c := range []struct {
		name, text, lv, reason string
		err                    error
	}{
		{"ok", base(lin("a", "pv0", 0)), "a", "", nil},
		{"overlap", base(lin("a", "pv0", 0) + lin("b", "pv0", 1)), "", "", freemap.ErrFormat},
		{"unknown pv", base(lin("a", "pv9", 0)), "", "", freemap.ErrFormat},
		{"past the pv", base(lin("a", "pv0", 9)), "", "", freemap.ErrFormat},
		{"raid", base(lin("img", "pv0", 0) + `r { id = "y" segment_count = 1 segment1 { start_extent = 0 extent_count = 2 type = "raid1" raids = ["meta", "img"] } }`), "img", "used by r (RAID (raid1))", nil},
		{"unknown type on a pv", base(`r { id = "y" segment_count = 1 segment1 { start_extent = 0 extent_count = 2 type = "newthing" areas = ["pv0", 0] } }`), "", "", freemap.ErrUnsupported},
		{"segment gap", base(`a { id = "x" segment_count = 1 segment1 { start_extent = 1 extent_count = 2 type = "striped" stripe_count = 1 stripes = ["pv0", 0] } }`), "", "", freemap.ErrFormat},
		{"stripe size over extent", base(`a { id = "x" segment_count = 1 segment1 { start_extent = 0 extent_count = 2 type = "striped" stripe_count = 2 stripe_size = 16 stripes = ["pv0", 0, "pv1", 0] } }`), "", "", freemap.ErrFormat},
		{"thin", base(`t { id = "y" segment_count = 1 segment1 { start_extent = 0 extent_count = 2 type = "thin" thin_pool = "p" device_id = 1 } }`), "t", "thin volume (its blocks live in a thin pool)", nil},
		{"format", strings.Replace(base(""), `"lvm2"`, `"lvm1"`, 1), "", "", freemap.ErrUnsupported},
		{"two vgs", base("") + ` vg2 { }`, "", "", freemap.ErrFormat},
	} {
		t.Run(c.name, func(t *testing.T) {
			vg, err := parseVG([]byte(c.text))
			if c.err != nil {
				if !errors.Is(err, c.err) {
					t.Fatalf("got %v, want %v", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, lv := range vg.LVs {
				if lv.Name == c.lv && lv.Reason != c.reason {
					t.Fatalf("%s: reason %q, want %q", lv.Name, lv.Reason, c.reason)
				}
			}
		})
	}
}

// TestConfigLimits: the parser refuses what exceeds its limits.
func TestConfigLimits(t *testing.T) {
	for _, c := range []struct{ name, text string }{
		{"deep", strings.Repeat("a {", maxDepth+2) + strings.Repeat("}", maxDepth+2)},
		{"long string", `a = "` + strings.Repeat("x", maxStrLen+1) + `"`},
		{"long array", "a = [" + strings.Repeat("1,", maxArray) + "1]"},
		{"unterminated", `a = "x`},
		{"dup", "a = 1 a = 2"},
		{"garbage", "a = }"},
		{"unmatched", "}"},
		{"huge int", "a = 99999999999999999999"},
	} {
		if _, err := parseConfig([]byte(c.text)); !errors.Is(err, freemap.ErrFormat) {
			t.Errorf("%s: %v", c.name, err)
		}
	}
	s, err := parseConfig([]byte("# c\na { b = \"x\\\"y\" c = [1, \"z\"] d = -5 e = 1.5 }\n"))
	if err != nil {
		t.Fatal(err)
	}
	a := s.sub("a")
	if v, _ := a.str("b"); v != `x"y` {
		t.Errorf("b = %q", v)
	}
	if v, _ := a.num("d"); v != -5 {
		t.Errorf("d = %d", v)
	}
	if a.get("c") == nil || len(a.get("c").Arr) != 2 {
		t.Errorf("c = %v", a.get("c"))
	}
}

func TestDMName(t *testing.T) {
	for _, c := range [][3]string{{"vg", "root", "vg-root"}, {"my-vg", "lv-1", "my--vg-lv--1"}} {
		if got := DMName(c[0], c[1]); got != c[2] {
			t.Errorf("DMName(%q, %q) = %q, want %q", c[0], c[1], got, c[2])
		}
	}
}

func FuzzRead(f *testing.F) {
	for _, s := range []string{"pv0.img.gz", "pv1.img.gz", "wrapped.img.gz"} {
		b := seed(f, s)
		// The fuzzer mutates the first 8 KiB (label, mda header, start of
		// the text); the rest of the MiB follows unchanged.
		f.Add(b[:8192])
	}
	tail := seed(f, "wrapped.img.gz")
	f.Fuzz(func(t *testing.T, head []byte) {
		b := append(bytes.Clone(head), tail[min(len(head), len(tail)):]...)
		pv, err := Read(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			return
		}
		if pv.VG != nil && pv.Info != nil {
			pv.VG.FreeExtents(pv.Info, int64(len(b)))
			for _, lv := range pv.VG.LVs {
				v, err := pv.VG.Open(lv, map[string]Device{pv.Info.Name: {bytes.NewReader(b), int64(len(b))}})
				if err == nil {
					buf := make([]byte, 4096)
					v.ReadAt(buf, 0)
				}
			}
		}
	})
}

func FuzzMetadata(f *testing.F) {
	for _, s := range []string{"pv0.img.gz", "wrapped.img.gz"} {
		b := seed(f, s)
		off := 4096 + binary.LittleEndian.Uint64(b[4096+40:])
		n := binary.LittleEndian.Uint64(b[4096+48:])
		if off+n <= uint64(len(b)) {
			f.Add(b[off : off+n])
		}
	}
	f.Add([]byte(`vg { id = "a" seqno = 1 extent_size = 8 physical_volumes { pv0 { id = "p" pe_start = 8 pe_count = 4 } } }`))
	f.Fuzz(func(t *testing.T, text []byte) {
		vg, err := parseVG(text)
		if err != nil {
			return
		}
		for _, p := range vg.PVs {
			vg.FreeExtents(p, 1<<30)
		}
	})
}

// TestSegmentTypes: every segment type other than striped gives its LV a
// reason, every LV it names (its sub-LVs, an origin) passes through too,
// and none of their extents is free. The texts mirror what lvm2 writes
// for each type (lib/*/…_text_export).
func TestSegmentTypes(t *testing.T) {
	lin := func(name string, ext int, visible bool) string {
		st := `["READ", "WRITE"]`
		if visible {
			st = `["READ", "WRITE", "VISIBLE"]`
		}
		return name + ` { id = "x" status = ` + st + ` segment_count = 1 segment1 { start_extent = 0 extent_count = 2 type = "striped" stripe_count = 1 stripes = ["pv0", ` + strconv.Itoa(ext) + `] } }
`
	}
	user := func(name, typ, refs string) string {
		return name + ` { id = "y" status = ["READ", "WRITE", "VISIBLE"] segment_count = 1 segment1 { start_extent = 0 extent_count = 2 type = "` + typ + `" ` + refs + ` } }
`
	}
	for _, c := range []struct {
		typ, refs string
		subs      []string // LVs the segment uses
		reason    string   // the user LV's reason
	}{
		{"thin-pool", `metadata = "a" pool = "b" transaction_id = 0 chunk_size = 128`, []string{"a", "b"}, "thin pool"},
		{"thin", `thin_pool = "a" transaction_id = 0 device_id = 1 external_origin = "b"`, []string{"a", "b"}, "thin volume (its blocks live in a thin pool)"},
		{"snapshot", `chunk_size = 8 origin = "a" cow_store = "b"`, []string{"a", "b"}, "snapshot (copy-on-write)"},
		{"mirror", `mirror_count = 2 mirror_log = "c" region_size = 1024 mirrors = ["a", 0, "b", 0]`, []string{"a", "b", "c"}, "mirror"},
		{"raid1", `device_count = 2 region_size = 1024 raids = ["c", "a", "d", "b"]`, []string{"a", "b", "c", "d"}, "RAID (raid1)"},
		{"raid5_ls", `device_count = 3 stripe_size = 128 region_size = 1024 raids = ["a", "b", "c", "d", "e", "f"]`, []string{"a", "b", "c", "d", "e", "f"}, "RAID (raid5_ls)"},
		{"raid10", `device_count = 2 stripe_size = 128 raids = ["a", "b", "c", "d"]`, []string{"a", "b", "c", "d"}, "RAID (raid10)"},
		{"cache", `cache_pool = "a" origin = "b"`, []string{"a", "b"}, "cache (cache)"},
		{"cache-pool", `data = "a" metadata = "b" chunk_size = 128`, []string{"a", "b"}, "cache (cache-pool)"},
		{"writecache", `writecache = "a" origin = "b" writecache_block_size = 4096`, []string{"a", "b"}, "cache (writecache)"},
		{"vdo", `vdo_pool = "a" vdo_offset = 0`, []string{"a"}, "VDO (vdo)"},
		{"vdo-pool", `data = "a" header_size = 512 virtual_extents = 2`, []string{"a"}, "VDO (vdo-pool)"},
		{"integrity", `origin = "a" data_sectors = 4096 mode = "J" tag_size = 4 internal_hash = "crc32c"`, []string{"a"}, "integrity"},
		{"error", ``, nil, "segment type error (no data on disk)"},
		{"zero", ``, nil, "segment type zero (no data on disk)"},
		{"future-type", `members = ["a"] detail { store = "b" }`, []string{"a", "b"}, `unknown segment type "future-type"`},
	} {
		t.Run(c.typ, func(t *testing.T) {
			lvs := user("u", c.typ, c.refs) + lin("plain", 12, true)
			for i, s := range []string{"a", "b", "c", "d", "e", "f"} {
				lvs += lin(s, 2*i, false)
			}
			text := `vg { id = "v" seqno = 1 format = "lvm2" extent_size = 8
physical_volumes { pv0 { id = "p" pe_start = 2048 pe_count = 20 } }
logical_volumes { ` + lvs + ` } }`
			vg, err := parseVG([]byte(text))
			if err != nil {
				t.Fatal(err)
			}
			reasons := map[string]string{}
			for _, lv := range vg.LVs {
				reasons[lv.Name] = lv.Reason
			}
			if reasons["u"] != c.reason {
				t.Errorf("u: reason %q, want %q", reasons["u"], c.reason)
			}
			if reasons["plain"] != "" {
				t.Errorf("plain: %q", reasons["plain"])
			}
			for _, s := range c.subs {
				if !strings.Contains(reasons[s], "u") || reasons[s] == "" {
					t.Errorf("%s (used by u): reason %q", s, reasons[s])
				}
			}
			// Only the extents after the LVs (14..19) are free.
			pv := vg.PVs[0]
			free := vg.FreeExtents(pv, 2048*512+20*4096)
			if e := free.Extents(); len(e) != 1 || e[0].Off != pv.PEStart+14*4096 || e[0].Len != 6*4096 {
				t.Errorf("free extents %v", e)
			}
			if _, err := vg.Open(vg.LVs[0], nil); !errors.Is(err, freemap.ErrUnsupported) {
				t.Errorf("Open(u): %v", err)
			}
		})
	}
}

// TestLabelSector: the label may be in any of the first four sectors
// (lvm2 writes sector 1); its sector field must say where it is.
func TestLabelSector(t *testing.T) {
	orig := seed(t, "pv0.img.gz")
	for s := 0; s < 4; s++ {
		b := bytes.Clone(orig)
		clear(b[:4*SectorSize])
		copy(b[s*SectorSize:], orig[SectorSize:2*SectorSize])
		binary.LittleEndian.PutUint64(b[s*SectorSize+8:], uint64(s))
		pv, err := read(t, b)
		if err != nil || pv.VG == nil || pv.VG.Name != "seedvg" {
			t.Fatalf("label in sector %d: %v", s, err)
		}
		if s != 1 {
			binary.LittleEndian.PutUint64(b[s*SectorSize+8:], 1) // says sector 1
			if _, err := read(t, b); !errors.Is(err, freemap.ErrFormat) {
				t.Errorf("label in sector %d claiming sector 1: %v", s, err)
			}
		}
	}
	b := bytes.Clone(orig)
	clear(b[:4*SectorSize])
	copy(b[4*SectorSize:], orig[SectorSize:2*SectorSize])
	if Probe(bytes.NewReader(b), devSize) {
		t.Error("a label in sector 4 was found")
	}
}
