package ntfsmap

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"sort"

	"github.com/prezero/prezero/freemap"
)

// bitmapChunk is how much of $Bitmap is read at a time: memory stays
// constant whatever the volume size.
const bitmapChunk = 1 << 20

// mapBitmap streams $Bitmap (record 6) and returns the map of free
// clusters, the number of clusters not proven free, and warnings.
//
// Bit i of the bitmap (bit i%8 of byte i/8) is set when cluster i is in
// use. Clusters whose bits lie past the bitmap's data or initialized size
// count as used; bits past the cluster count are ignored; bytes past the
// last whole cluster are never in the map. A bitmap that marks any
// metadata cluster free is inconsistent, and an error.
func (v *volume) mapBitmap() (*freemap.Map, int64, []string, error) {
	bs := v.boot
	cs := int64(bs.clusterSize)
	fr, as, err := v.record(recBitmap)
	if err != nil {
		return nil, 0, nil, err
	}
	if err := checkName(fr, as, "$Bitmap"); err != nil {
		return nil, 0, nil, err
	}
	d, err := dataAttr(fr, as)
	if err != nil {
		return nil, 0, nil, err
	}
	if d.flags&attrFlagSparse != 0 {
		return nil, 0, nil, formatErr(d.off, "$Bitmap data is sparse")
	}
	if d.nonRes {
		if err := v.addMeta(d, "$Bitmap"); err != nil {
			return nil, 0, nil, err
		}
		// addMeta decoded the runs, which bounds highVCN.
		if d.lowVCN != 0 || (d.highVCN+1)*cs < d.dataSize {
			return nil, 0, nil, formatErr(d.off, "$Bitmap runlist does not cover its data (vcn %d..%d, %d bytes)", d.lowVCN, d.highVCN, d.dataSize)
		}
	}

	var warn []string
	need := (bs.clusters + 7) / 8
	have := min(d.initSize, need)
	if d.dataSize < need {
		warn = append(warn, fmt.Sprintf("ntfs: $Bitmap has %d bytes for %d clusters; clusters past its end pass through", d.dataSize, bs.clusters))
	} else if d.initSize < need {
		warn = append(warn, fmt.Sprintf("ntfs: $Bitmap is initialized for %d of %d bytes; clusters past that pass through", d.initSize, need))
	}
	covered := min(have*8, bs.clusters) // clusters with a bit in the bitmap

	meta := mergeSpans(v.meta)
	b := freemap.NewBuilder(v.size)
	var nfree int64
	var bad error
	emit := func(a, e int64) {
		if bad != nil {
			return
		}
		if s, ok := overlap(meta, a, e); ok {
			bad = formatErr(max(a, s.lcn)*cs, "$Bitmap marks cluster %d of %s free: the bitmap is inconsistent (run chkdsk)", max(a, s.lcn), s.what)
			return
		}
		nfree += e - a
		b.Add(a*cs, (e-a)*cs)
	}
	sc := scanner{start: -1, emit: emit}
	buf := make([]byte, min(have, bitmapChunk)+8)
	for off := int64(0); off < have && bad == nil; off += bitmapChunk {
		n := min(have-off, bitmapChunk)
		chunk := buf[:n]
		if err := v.readAttr(d, chunk, off); err != nil {
			return nil, 0, nil, err
		}
		sc.scan(chunk, off*8, covered)
	}
	sc.flush(covered)
	if bad != nil {
		return nil, 0, nil, bad
	}
	return b.Map(), bs.clusters - nfree, warn, nil
}

// scanner turns bitmap bits into runs of free clusters.
type scanner struct {
	start int64 // first cluster of the current free run, or -1
	emit  func(a, e int64)
}

// scan feeds the bitmap bytes p, whose first bit is cluster base. Bits of
// clusters at or past limit count as used.
func (s *scanner) scan(p []byte, base, limit int64) {
	for len(p) > 0 && base < limit {
		var w uint64
		var nb int64
		if len(p) >= 8 {
			w, nb, p = binary.LittleEndian.Uint64(p), 64, p[8:]
		} else {
			var t [8]byte
			copy(t[:], p)
			w, nb, p = binary.LittleEndian.Uint64(t[:]), int64(8*len(p)), nil
		}
		nb = min(nb, limit-base)
		if nb < 64 {
			w |= ^uint64(0) << nb // bits past the end are "used"
		}
		s.word(w, base)
		base += 64
	}
}

// word feeds 64 bits whose first is cluster base.
func (s *scanner) word(w uint64, base int64) {
	switch {
	case w == 0:
		if s.start < 0 {
			s.start = base
		}
		return
	case w == ^uint64(0):
		s.flush(base)
		return
	}
	for i := 0; i < 64; {
		if s.start >= 0 {
			rest := w >> i // looking for the next used bit
			if rest == 0 {
				return
			}
			i += bits.TrailingZeros64(rest)
			s.flush(base + int64(i))
		} else {
			rest := ^w >> i // looking for the next free bit
			if rest == 0 {
				return
			}
			i += bits.TrailingZeros64(rest)
			s.start = base + int64(i)
		}
	}
}

// flush ends the current free run at cluster e.
func (s *scanner) flush(e int64) {
	if s.start >= 0 {
		if e > s.start {
			s.emit(s.start, e)
		}
		s.start = -1
	}
}

// mergeSpans returns the union of sp as sorted, disjoint spans; a merged
// span keeps the name of its first part.
func mergeSpans(sp []span) []span {
	in := append([]span(nil), sp...)
	sort.Slice(in, func(i, j int) bool { return in[i].lcn < in[j].lcn })
	var out []span
	for _, s := range in {
		if k := len(out) - 1; k >= 0 && s.lcn <= out[k].lcn+out[k].n {
			out[k].n = max(out[k].n, s.lcn+s.n-out[k].lcn)
			continue
		}
		out = append(out, s)
	}
	return out
}

// overlap returns the span of sorted (disjoint, ascending) that intersects
// clusters [a, e), if any.
func overlap(sorted []span, a, e int64) (span, bool) {
	i := sort.Search(len(sorted), func(i int) bool { return sorted[i].lcn+sorted[i].n > a })
	if i < len(sorted) && sorted[i].lcn < e {
		return sorted[i], true
	}
	return span{}, false
}
