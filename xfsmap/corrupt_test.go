package xfsmap

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prezero/prezero/freemap"
	"github.com/prezero/prezero/internal/imgtest"
)

// seed returns a decompressed testdata image (see testdata/mkseeds.sh).
func seed(t testing.TB, name string) []byte {
	t.Helper()
	return imgtest.Gunzip(t, filepath.Join("testdata", name+".img.gz"))
}

var seedNames = []string{"v5", "v4", "frozen", "crash"}

// TestSeeds maps the committed images: no tool needed.
func TestSeeds(t *testing.T) {
	for _, tc := range []struct {
		name, log string
		version   int
		err       error
	}{
		{"v5", logClean, 5, nil},
		{"v4", logClean, 4, nil},
		{"frozen", logCovered, 5, nil},
		{"crash", "", 0, freemap.ErrUnsafe},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := seed(t, tc.name)
			size := int64(len(img))
			if !Probe(bytes.NewReader(img), size) {
				t.Error("Probe = false")
			}
			vol, err := Read(bytes.NewReader(img), size)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("err = %v, want %v", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if vol.Log != tc.log || vol.Version != tc.version || vol.Fallbacks != 0 || vol.FreeBlocks == 0 {
				t.Fatalf("%+v", vol)
			}
			if vol.Free.FreeBytes() != vol.FreeBlocks*int64(vol.BlockSize) {
				t.Errorf("map holds %d bytes, FreeBlocks %d", vol.Free.FreeBytes(), vol.FreeBlocks)
			}
			checkMetadataKept(t, bytes.NewReader(img), size, vol)
		})
	}
	if Probe(bytes.NewReader(make([]byte, 4096)), 4096) || Probe(bytes.NewReader([]byte("XFS")), 3) {
		t.Error("Probe of zeros or a short volume = true")
	}
}

// checkMetadataKept checks what no free extent may cover: the AG headers,
// the internal log, and anything past the filesystem's last block.
func checkMetadataKept(t testing.TB, ra io.ReaderAt, size int64, vol *Volume) {
	t.Helper()
	r := &reader{r: ra, size: size}
	s, err := readSuper(r, r.size)
	if err != nil {
		t.Fatalf("superblock of a volume Read accepted: %v", err)
	}
	for agno := range s.agcount {
		off := s.agOff(agno, 0)
		if e, ok := vol.Free.Next(off); ok && e.Off < off+int64(s.headerBlocks()<<s.blockLog) {
			t.Fatalf("AG %d headers freed: %+v", agno, e)
		}
	}
	logOff := s.agOff(s.logStartAG, s.logStartBN)
	if e, ok := vol.Free.Next(logOff); ok && e.Off < logOff+int64(s.logBlocks<<s.blockLog) {
		t.Fatalf("log freed: %+v", e)
	}
	if e, ok := vol.Free.Next(int64(s.dblocks << s.blockLog)); ok {
		t.Fatalf("bytes past the filesystem freed: %+v", e)
	}
}

// flip reads base with one byte XORed.
type flip struct {
	base io.ReaderAt
	off  int64
	x    byte
}

func (f *flip) ReadAt(p []byte, off int64) (int, error) {
	n, err := f.base.ReadAt(p, off)
	if i := f.off - off; i >= 0 && i < int64(n) {
		p[i] ^= f.x
	}
	return n, err
}

// subset reports the first free byte of got that is not free in want.
func subset(got, want *freemap.Map) (int64, bool) {
	for _, e := range got.Extents() {
		w, ok := want.Next(e.Off)
		if !ok || w.Off > e.Off || w.End() < e.End() {
			return e.Off, false
		}
	}
	return 0, true
}

// flipTable flips every byte at the given offsets (XOR each of xs) and checks
// that Read either refuses with one of the three typed errors or returns a
// map whose free bytes are all free in the uncorrupted one. It returns how
// many flips were refused, fell back, or changed nothing.
func flipTable(t *testing.T, base io.ReaderAt, size int64, truth *freemap.Map, offs []int64, xs ...byte) (refused, fellBack, same int) {
	t.Helper()
	for _, off := range offs {
		for _, x := range xs {
			vol, err := Read(&flip{base, off, x}, size)
			if err != nil {
				if !errors.Is(err, freemap.ErrFormat) && !errors.Is(err, freemap.ErrUnsupported) && !errors.Is(err, freemap.ErrUnsafe) {
					t.Fatalf("flip %#x at %d: untyped error %v", x, off, err)
				}
				refused++
				continue
			}
			if at, ok := subset(vol.Free, truth); !ok {
				t.Fatalf("flip %#x at byte %d frees byte %d, which is used", x, off, at)
			}
			if vol.Fallbacks > 0 {
				fellBack++
				if len(vol.Notes) == 0 {
					t.Fatalf("flip %#x at %d: fallback without a note", x, off)
				}
			} else if vol.Free.FreeBytes() == truth.FreeBytes() {
				same++
			}
		}
	}
	return
}

// metadataOffsets lists the bytes worth corrupting: the superblock, every
// AGF, and the header and records of every free-space btree block reached
// from the AGFs (for deeper trees: the root and its first child).
func metadataOffsets(t *testing.T, base io.ReaderAt, size int64, btreeOnly bool) []int64 {
	t.Helper()
	r := &reader{r: base, size: size}
	s, err := readSuper(r, size)
	if err != nil {
		t.Fatal(err)
	}
	var offs []int64
	span := func(off, n int64) {
		for i := range n {
			offs = append(offs, off+i)
		}
	}
	if !btreeOnly {
		span(0, sbV5End)
	}
	m := &mapper{r: r, s: s}
	hdr := int64(bbHdrV4)
	if s.v5 {
		hdr = bbHdrV5
	}
	for agno := range s.agcount {
		if !btreeOnly {
			span(s.agOff(agno, 0)+s.sectSize, agfCRCOff+4)
		}
		a, err := m.readAGF(agno)
		if err != nil {
			t.Fatal(err)
		}
		for _, root := range []uint32{a.bnoRoot, a.cntRoot} {
			off := s.agOff(agno, uint64(root))
			span(off, hdr+8*12)
			b := make([]byte, s.blockSize)
			if err := r.read(b, off); err != nil {
				t.Fatal(err)
			}
			n := int64(be.Uint16(b[bbNumRecsOff:]))
			if be.Uint16(b[bbLevelOff:]) == 0 {
				span(off+hdr+8*max(n-4, 0), 8*4) // the last records
				continue
			}
			maxr := (s.blockSize - hdr) / 12
			span(off+hdr+8*maxr, 4*min(n, 4)) // the first pointers
			child := be.Uint32(b[hdr+8*maxr:])
			span(s.agOff(agno, uint64(child)), hdr+8*12)
		}
	}
	return offs
}

// TestCorruption: one-byte flips of the superblock, the AGFs and the
// free-space btree blocks never free a used byte, on v5 (checksums) and on
// v4 (none: the two trees and the AGF vouch for each other).
func TestCorruption(t *testing.T) {
	for _, name := range []string{"v5", "v4"} {
		t.Run(name, func(t *testing.T) {
			img := seed(t, name)
			size := int64(len(img))
			vol, err := Read(bytes.NewReader(img), size)
			if err != nil {
				t.Fatal(err)
			}
			offs := metadataOffsets(t, bytes.NewReader(img), size, false)
			xs := []byte{0x01, 0x80, 0xff}
			if name == "v5" { // checksums catch every flip; one pattern shows it
				xs = []byte{0x10}
			}
			refused, fell, same := flipTable(t, bytes.NewReader(img), size, vol.Free, offs, xs...)
			t.Logf("%d flips: %d refused, %d fell back, %d changed nothing", len(xs)*len(offs), refused, fell, same)
			if refused == 0 || fell == 0 {
				t.Errorf("the table never made Read refuse or fall back: it tests nothing")
			}
		})
	}
}

// TestCorruptionDeep runs the flip table over the btree blocks of the aged
// variant, whose bnobt has interior nodes.
func TestCorruptionDeep(t *testing.T) {
	v := variants[len(variants)-1]
	if v.aged == 0 {
		t.Fatal("the last variant is not the aged one")
	}
	b := image(t, v)
	f, err := os.Open(b.img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	vol, err := Read(f, fi.Size())
	if err != nil {
		t.Fatal(err)
	}
	offs := metadataOffsets(t, f, fi.Size(), true)
	refused, fell, same := flipTable(t, f, fi.Size(), vol.Free, offs, 0x04)
	t.Logf("%d flips: %d refused, %d fell back, %d changed nothing", len(offs), refused, fell, same)
}

// TestLogCorruption: one-byte flips anywhere in the active part of a log
// that needs recovery never make it look clean or covered, and flips in a
// covered log never change the map.
func TestLogCorruption(t *testing.T) {
	for _, name := range []string{"crash", "frozen"} {
		t.Run(name, func(t *testing.T) {
			img := seed(t, name)
			size := int64(len(img))
			r := &reader{r: bytes.NewReader(img), size: size}
			s, err := readSuper(r, size)
			if err != nil {
				t.Fatal(err)
			}
			l := &xlog{r: r, s: s, start: s.agOff(s.logStartAG, s.logStartBN), n: s.logBlocks << (s.blockLog - 9)}
			head, err := l.findHead()
			if err != nil {
				t.Fatal(err)
			}
			// Every byte of the first KiB of the log, the first bytes of
			// every block before the head, and a sample of the rest.
			var offs []int64
			for i := int64(0); i < int64(head)*bbSize; i++ {
				if i < 1024 || i%bbSize < 8 || i%509 == 0 {
					offs = append(offs, l.start+i)
				}
			}
			truth := freemap.NewBuilder(size).Map()
			if name == "frozen" {
				vol, err := Read(bytes.NewReader(img), size)
				if err != nil {
					t.Fatal(err)
				}
				truth = vol.Free
			}
			refused, _, same := flipTable(t, bytes.NewReader(img), size, truth, offs, 0x20)
			if name == "crash" && refused != len(offs) {
				t.Fatalf("%d of %d flips of a dirty log were accepted", len(offs)-refused, len(offs))
			}
			t.Logf("%d flips: %d refused, %d unchanged", len(offs), refused, same)
		})
	}
}

// TestMemoryLimit: under a tight freemap memory limit the aged variant's
// map is coarsened, says so, and still frees only free bytes.
func TestMemoryLimit(t *testing.T) {
	b := image(t, variants[len(variants)-1])
	f, err := os.Open(b.img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	truth, err := Read(f, fi.Size())
	if err != nil {
		t.Fatal(err)
	}
	prev := freemap.SetMemoryLimit(freemap.MemoryInUse() + 2048)
	defer freemap.SetMemoryLimit(prev)
	vol, err := Read(f, fi.Size())
	if err != nil {
		t.Fatal(err)
	}
	defer vol.Free.Release()
	said := vol.Free.Coarsened().Bytes > 0
	for _, n := range vol.Notes {
		said = said || strings.HasPrefix(n, "coarsened")
	}
	if !said || vol.Free.FreeBytes() >= truth.Free.FreeBytes() {
		t.Fatalf("not coarsened: %v %q, %d of %d free bytes", vol.Free.Coarsened(), vol.Notes, vol.Free.FreeBytes(), truth.Free.FreeBytes())
	}
	if at, ok := subset(vol.Free, truth.Free); !ok {
		t.Fatalf("coarsened map frees used byte %d", at)
	}
}
