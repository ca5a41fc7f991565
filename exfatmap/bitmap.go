package exfatmap

import (
	"fmt"

	"github.com/prezero/prezero/freemap"
)

// Directory entry types (exFAT specification, section 7).
const (
	typeEnd       = 0x00
	typeBitmap    = 0x81
	typeUpcase    = 0x82
	typeLabel     = 0x83
	typeFile      = 0x85
	typeStream    = 0xC0
	inUse         = 0x80
	secondary     = 0x40
	benign        = 0x20
	flagAllocPoss = 1 << 0
	flagNoFatChn  = 1 << 1
	attrDirectory = 0x10
	maxDirBytes   = 32 << 20
	bitmapChunk   = 1 << 20
)

// bitmapEntry is an Allocation Bitmap directory entry.
type bitmapEntry struct {
	second bool // BitmapFlags bit 0: the second (TexFAT) bitmap
	first  uint32
	length uint64
	off    int64 // the entry's byte offset in the root directory data
}

// rootEntries finds the allocation bitmaps and the up-case table in the
// root directory, and returns the bitmaps and the clusters of all three.
func (v *volume) rootEntries(data []byte) ([]bitmapEntry, []run, error) {
	var maps []bitmapEntry
	var meta []run
	for i := 0; i+32 <= len(data); i += 32 {
		e := data[i : i+32]
		if e[0] == typeEnd {
			break
		}
		switch e[0] {
		case typeBitmap:
			maps = append(maps, bitmapEntry{second: e[1]&1 != 0, first: le32(e, 20), length: le64(e, 24), off: int64(i)})
		case typeUpcase:
			rs, err := v.chain(le32(e, 20), le64(e, 24), false, "up-case table")
			if err == nil {
				// The chain must end where the length does.
				last := rs[len(rs)-1]
				var x uint32
				if x, err = v.entry(uint32(last.end() - 1)); err == nil && x != fatEOC {
					err = fmt.Errorf("up-case table: FAT chain goes on past its %d bytes (cluster %d -> %#x)", le64(e, 24), last.end()-1, x)
				}
			}
			if err != nil {
				return nil, nil, freemap.Formatf(v.clusterOffset(v.boot.rootClus)+int64(i), "exfat: %v", err)
			}
			meta = append(meta, rs...)
		}
	}
	b := v.boot
	switch {
	case len(maps) == 0:
		return nil, nil, freemap.Formatf(v.clusterOffset(b.rootClus), "exfat: no allocation bitmap in the root directory")
	case len(maps) > 2 || (len(maps) == 2 && maps[0].second == maps[1].second):
		return nil, nil, freemap.Formatf(v.clusterOffset(b.rootClus), "exfat: %d allocation bitmaps in the root directory", len(maps))
	case len(maps) != int(b.nfats):
		return nil, nil, freemap.Formatf(offNumberOfFats, "exfat: %d allocation bitmaps for %d FATs", len(maps), b.nfats)
	}
	cb := uint64(b.clusterBytes())
	for _, m := range maps {
		// Linux refuses a bitmap whose size is not ClusterCount bits.
		if want := (uint64(b.clusters) + 7) / 8; m.length != want {
			return nil, nil, freemap.Formatf(v.clusterOffset(b.rootClus)+m.off+24,
				"exfat: allocation bitmap of %d bytes, but ClusterCount %d needs %d", m.length, b.clusters, want)
		}
		n := (m.length + cb - 1) / cb
		if !v.inHeap(m.first, n) {
			return nil, nil, freemap.Formatf(v.clusterOffset(b.rootClus)+m.off+20, "exfat: allocation bitmap at clusters %d..+%d, outside the heap", m.first, n)
		}
		// Linux reads the bitmap as contiguous clusters. Its FAT chain
		// must say the same and end there: a first cluster pointing at
		// anything else (a corrupt entry) would make random data the
		// bitmap.
		for k := uint64(0); k < n; k++ {
			e, err := v.entry(m.first + uint32(k))
			if err != nil {
				return nil, nil, err
			}
			want := uint64(m.first) + k + 1
			if k == n-1 {
				want = fatEOC
			}
			if uint64(e) != want {
				return nil, nil, freemap.Formatf(v.clusterOffset(b.rootClus)+m.off+20, "exfat: allocation bitmap's FAT chain is not its %d contiguous clusters (cluster %d -> %#x)", n, uint64(m.first)+k, e)
			}
		}
		meta = append(meta, run{m.first, uint32(n)})
	}
	// The bitmaps, the up-case table and the root directory are distinct.
	if all := newRunSet(meta); countRuns(all.rs) != countRuns(meta) {
		return nil, nil, freemap.Formatf(v.clusterOffset(b.rootClus), "exfat: the allocation bitmap, up-case table and root directory share clusters")
	}
	return maps, meta, nil
}

// streamBitmaps streams the bitmaps and calls emit with every maximal run
// of clusters free in all of them, in ascending order.
func (v *volume) streamBitmaps(maps []bitmapEntry, emit func(run) error) error {
	b := v.boot
	length := int64(maps[0].length)
	bufs := make([][]byte, len(maps))
	for i := range bufs {
		bufs[i] = make([]byte, min(length, bitmapChunk))
	}
	var cur run // pending free run, n == 0 if none
	flush := func() error {
		if cur.n == 0 {
			return nil
		}
		r := cur
		cur = run{}
		return emit(r)
	}
	for off := int64(0); off < length; off += bitmapChunk {
		n := min(length-off, bitmapChunk)
		for i, m := range maps {
			if err := v.readAt(bufs[i][:n], v.clusterOffset(m.first)+off); err != nil {
				return err
			}
			if i > 0 {
				for j := range n {
					bufs[0][j] |= bufs[i][j]
				}
			}
		}
		for j, x := range bufs[0][:n] {
			base := uint64(off+int64(j)) * 8 // bit index of the byte's bit 0
			if x == 0xFF {
				if err := flush(); err != nil {
					return err
				}
				continue
			}
			if x == 0 && base+8 <= uint64(b.clusters) {
				if cur.n == 0 {
					cur = run{uint32(base + 2), 0}
				}
				cur.n += 8
				continue
			}
			for k := uint64(0); k < 8 && base+k < uint64(b.clusters); k++ {
				if x&(1<<k) != 0 {
					if err := flush(); err != nil {
						return err
					}
					continue
				}
				c := uint32(base + k + 2)
				if cur.n == 0 {
					cur = run{c, 0}
				}
				cur.n++
			}
		}
	}
	return flush()
}
