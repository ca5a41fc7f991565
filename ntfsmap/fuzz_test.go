package ntfsmap

import (
	"bytes"
	"encoding/binary"
	"io"
	"path/filepath"
	"sort"
	"sync"
	"testing"

	"github.com/prezero/prezero/internal/imgtest"
)

// seedImages are the gzip'd images in testdata (see testdata/README).
var seedImages = []string{"ntfs-c512.img.gz", "ntfs-s4096.img.gz"}

// seedImage returns a decompressed seed image.
func seedImage(tb testing.TB, name string) []byte {
	tb.Helper()
	return imgtest.Gunzip(tb, filepath.Join("testdata", name))
}

// The sparse encoding of a volume used as FuzzRead's input: a u16 giving
// the volume size in 512-byte blocks, minus one, then any number of
// (u16 block number, 512 bytes) pairs. Blocks not given read as zero.
// It keeps inputs to the few blocks Read looks at, so the fuzzer mutates
// metadata rather than megabytes of free space.
const sparseBlock = 512

type sparseVolume struct {
	size   int64
	blocks map[int64][]byte
}

func decodeSparse(data []byte) *sparseVolume {
	v := &sparseVolume{blocks: map[int64][]byte{}}
	if len(data) < 2 {
		return v
	}
	v.size = (int64(binary.LittleEndian.Uint16(data)) + 1) * sparseBlock
	for p := data[2:]; len(p) >= 2+sparseBlock; p = p[2+sparseBlock:] {
		v.blocks[int64(binary.LittleEndian.Uint16(p))] = p[2 : 2+sparseBlock]
	}
	return v
}

func (v *sparseVolume) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, io.ErrUnexpectedEOF
	}
	n := 0
	for n < len(p) {
		pos := off + int64(n)
		if pos >= v.size {
			return n, io.EOF
		}
		blk, in := pos/sparseBlock, pos%sparseBlock
		k := min(int64(len(p)-n), sparseBlock-in, v.size-pos)
		if b, ok := v.blocks[blk]; ok {
			copy(p[n:n+int(k)], b[in:])
		} else {
			clear(p[n : n+int(k)])
		}
		n += int(k)
	}
	return n, nil
}

// recorder notes which blocks of r are read.
type recorder struct {
	r      io.ReaderAt
	mu     sync.Mutex
	blocks map[int64]bool
}

func (r *recorder) ReadAt(p []byte, off int64) (int, error) {
	r.mu.Lock()
	for b := off / sparseBlock; b*sparseBlock < off+int64(len(p)); b++ {
		r.blocks[b] = true
	}
	r.mu.Unlock()
	return r.r.ReadAt(p, off)
}

// encodeSparse encodes the blocks of img that Read touches.
func encodeSparse(tb testing.TB, img []byte) []byte {
	tb.Helper()
	rec := &recorder{r: bytes.NewReader(img), blocks: map[int64]bool{}}
	if _, err := Read(rec, int64(len(img)), Options{}); err != nil {
		tb.Fatalf("seed image: %v", err)
	}
	var nums []int64
	for b := range rec.blocks {
		nums = append(nums, b)
	}
	sort.Slice(nums, func(i, j int) bool { return nums[i] < nums[j] })
	out := binary.LittleEndian.AppendUint16(nil, uint16(len(img)/sparseBlock-1))
	for _, b := range nums {
		out = binary.LittleEndian.AppendUint16(out, uint16(b))
		out = append(out, img[b*sparseBlock:(b+1)*sparseBlock]...)
	}
	return out
}

// checkVolume checks what any successful Read must give.
func checkVolume(t *testing.T, vol *Volume, size int64) {
	if vol.Free == nil || vol.Free.Size() != size {
		t.Fatalf("Free.Size() = %d, want %d", vol.Free.Size(), size)
	}
	cs := int64(vol.BlockSize)
	if cs <= 0 || vol.Clusters <= 0 || vol.Clusters > size/cs {
		t.Fatalf("geometry: %d clusters of %d bytes in %d", vol.Clusters, cs, size)
	}
	var free int64
	prev := int64(-1)
	for _, e := range vol.Free.Extents() {
		if e.Off <= prev || e.Len <= 0 || e.Off < 0 || e.End() > vol.Clusters*cs || e.Off%cs != 0 || e.Len%cs != 0 {
			t.Fatalf("bad free extent %+v (clusters %d, cluster size %d, size %d)", e, vol.Clusters, cs, size)
		}
		if e.Off == 0 {
			t.Fatalf("boot sector free")
		}
		prev = e.End()
		free += e.Len / cs
	}
	if vol.UsedClusters != vol.Clusters-free {
		t.Fatalf("UsedClusters %d, want %d", vol.UsedClusters, vol.Clusters-free)
	}
}

func FuzzRead(f *testing.F) {
	for _, name := range seedImages {
		img := seedImage(f, name)
		f.Add(encodeSparse(f, img))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		v := decodeSparse(data)
		vol, err := Read(v, v.size, Options{ForceDirty: len(data)%2 == 0})
		if err != nil {
			return
		}
		checkVolume(t, vol, v.size)
	})
}

// TestSeedImages maps the seed images and their sparse encodings alike.
func TestSeedImages(t *testing.T) {
	for _, name := range seedImages {
		img := seedImage(t, name)
		vol, err := Read(bytes.NewReader(img), int64(len(img)), Options{})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		checkVolume(t, vol, int64(len(img)))
		sv := decodeSparse(encodeSparse(t, img))
		vol2, err := Read(sv, sv.size, Options{})
		if err != nil {
			t.Fatalf("%s sparse: %v", name, err)
		}
		if vol.Free.String() != vol2.Free.String() {
			t.Fatalf("%s: sparse map %v, full map %v", name, vol2.Free, vol.Free)
		}
	}
}

// seedRecords returns raw (not fixed-up) MFT records 0-15 and the first
// root index block of each seed image.
func seedRecords(tb testing.TB) [][]byte {
	var out [][]byte
	for _, name := range seedImages {
		img := seedImage(tb, name)
		r := bytes.NewReader(img)
		bs, err := readBoot(r, int64(len(img)))
		if err != nil {
			tb.Fatal(err)
		}
		v := &volume{r: r, size: int64(len(img)), boot: bs}
		if err := v.loadMFT(); err != nil {
			tb.Fatal(err)
		}
		rs := int64(bs.recordSize)
		for i := range int64(16) {
			b := make([]byte, rs)
			if err := v.readAttr(v.mft, b, i*rs); err != nil {
				tb.Fatal(err)
			}
			out = append(out, b)
		}
		_, as, err := v.record(recRoot)
		if err != nil {
			tb.Fatal(err)
		}
		if a := find(as, attrIndexAlloc, "$I30"); a != nil {
			b := make([]byte, bs.indexSize)
			if err := v.readAttr(a, b, 0); err == nil {
				out = append(out, b)
			}
		}
	}
	return out
}

func FuzzBootSector(f *testing.F) {
	for _, name := range seedImages {
		img := seedImage(f, name)
		f.Add(img[:bootSize], int64(len(img)))
	}
	f.Fuzz(func(t *testing.T, b []byte, size int64) {
		bs, err := parseBoot(b, size)
		if err != nil {
			return
		}
		cs := int64(bs.clusterSize)
		if bs.clusters <= 0 || bs.clusters > size/cs || bs.totalSectors*int64(bs.sectorSize) > size ||
			bs.mftLCN <= 0 || bs.mftLCN >= bs.clusters || bs.recordSize < minRecordSize || bs.recordSize > maxRecordSize ||
			bs.indexSize < minRecordSize || bs.indexSize > maxRecordSize {
			t.Fatalf("accepted bad geometry %+v for size %d", bs, size)
		}
	})
}

func FuzzFixup(f *testing.F) {
	for _, b := range seedRecords(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		b = b[:len(b)/fixupBlock*fixupBlock]
		orig := bytes.Clone(b)
		if err := applyFixup(b, 0); err != nil {
			return
		}
		// Only the protected words may change.
		for i := range b {
			if b[i] != orig[i] && i%fixupBlock < fixupBlock-2 {
				t.Fatalf("byte %d changed", i)
			}
		}
	})
}

func FuzzRunlist(f *testing.F) {
	for _, rec := range seedRecords(f) {
		if string(rec[:4]) != "FILE" || applyFixup(rec, 0) != nil {
			continue
		}
		fr, err := parseFileRecord(rec, 0, 0)
		if err != nil {
			continue
		}
		as, _ := fr.attrs()
		for _, a := range as {
			if a.nonRes {
				f.Add(a.rawRuns, a.lowVCN, int64(1<<20))
			}
		}
	}
	f.Fuzz(func(t *testing.T, b []byte, start, clusters int64) {
		runs, err := decodeRunlist(b, start, clusters)
		if err != nil {
			return
		}
		vcn := start
		for _, r := range runs {
			if r.vcn != vcn || r.n <= 0 || (r.lcn != -1 && (r.lcn < 0 || r.lcn+r.n > clusters)) {
				t.Fatalf("bad run %+v (next vcn %d, clusters %d)", r, vcn, clusters)
			}
			vcn += r.n
		}
	})
}

// FuzzRecord parses a fixed-up MFT record: header, attributes, runlists,
// file names and index entries.
func FuzzRecord(f *testing.F) {
	for _, rec := range seedRecords(f) {
		if string(rec[:4]) == "FILE" && applyFixup(rec, 0) == nil {
			f.Add(rec)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) < fixupBlock || len(b) > maxRecordSize {
			return
		}
		fr, err := parseFileRecord(b, 0, 0)
		if err != nil {
			return
		}
		as, err := fr.attrs()
		if err != nil {
			return
		}
		for _, a := range as {
			_ = a.loadRuns(1 << 30)
			switch a.typ {
			case attrFileName:
				fileName(a.value)
			case attrIndexRoot:
				if len(a.value) >= offIRHeader+ihSize {
					_, _ = scanEntries(a.value, offIRHeader, "hiberfil.sys", 0)
				}
			case attrVolumeInfo, attrData:
				v := &volume{r: bytes.NewReader(nil), boot: &boot{clusterSize: 4096, clusters: 1 << 30}}
				var p [4]byte
				_ = v.readAttr(a, p[:], 0)
			}
		}
	})
}

// FuzzScanner compares the word-at-a-time bitmap scanner, fed in chunks,
// with a bit-at-a-time reference.
func FuzzScanner(f *testing.F) {
	f.Add([]byte{0x00, 0xff, 0x0f, 0xf0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x80, 1}, int64(100), uint8(3))
	f.Add(bytes.Repeat([]byte{0}, 40), int64(319), uint8(8))
	f.Add(bytes.Repeat([]byte{0x55}, 40), int64(320), uint8(16))
	f.Fuzz(func(t *testing.T, bm []byte, limit int64, chunk uint8) {
		if limit < 0 || limit > int64(len(bm))*8 {
			return
		}
		step := (int(chunk)%4 + 1) * 8 // chunks are multiples of 8 bytes, as in mapBitmap
		var got [][2]int64
		sc := scanner{start: -1, emit: func(a, e int64) { got = append(got, [2]int64{a, e}) }}
		for off := 0; off < len(bm); off += step {
			sc.scan(bm[off:min(off+step, len(bm))], int64(off)*8, limit)
		}
		sc.flush(limit)
		var want [][2]int64
		start := int64(-1)
		for c := int64(0); c <= limit; c++ {
			free := c < limit && bm[c/8]&(1<<(c%8)) == 0
			if free && start < 0 {
				start = c
			}
			if !free && start >= 0 {
				want = append(want, [2]int64{start, c})
				start = -1
			}
		}
		if len(got) != len(want) {
			t.Fatalf("runs %v, want %v", got, want)
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("runs %v, want %v", got, want)
			}
		}
	})
}
