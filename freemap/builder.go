package freemap

import "sort"

// Builder accumulates free extents. Extents may be added in any order and may
// overlap; Map sorts and merges them. Extents are clipped to [0, size).
//
// Sorted additions (the usual case: a parser walking its bitmap) are
// encoded as they come, in bounded memory. Out-of-order additions are
// buffered and merged in batches.
type Builder struct {
	size    int64
	chunks  []chunk
	pending []Extent // sorted, merged, after every chunk; the last may still grow
	late    []Extent // additions before the sorted tail, merged in batches
	charge  int64
	coarse  Coarsening
}

// lateBatch is how many out-of-order extents are buffered before a merge.
const lateBatch = 1 << 16

// NewBuilder returns a builder for a volume of size bytes.
func NewBuilder(size int64) *Builder {
	return &Builder{size: max(size, 0)}
}

// Add records [off, off+n) as free. Parts outside the volume are dropped.
func (b *Builder) Add(off, n int64) {
	if n <= 0 || off >= b.size {
		return
	}
	if off < 0 {
		if off+n <= 0 {
			return
		}
		n += off
		off = 0
	}
	if n > b.size-off {
		n = b.size - off
	}
	if k := len(b.pending); k > 0 {
		last := &b.pending[k-1]
		if off >= last.Off && off <= last.End() {
			if end := off + n; end > last.End() {
				last.Len = end - last.Off
			}
			return
		}
		if off < last.Off {
			b.addLate(off, n)
			return
		}
	} else if k := len(b.chunks); k > 0 && off < b.chunks[k-1].end {
		b.addLate(off, n)
		return
	}
	if c := b.coarse.Under; c > 0 && len(b.pending) > 0 && b.pending[len(b.pending)-1].Len < c {
		// The closed extent before this one is too small to keep.
		b.coarse.Bytes += b.pending[len(b.pending)-1].Len
		b.pending = b.pending[:len(b.pending)-1]
	}
	b.pending = append(b.pending, Extent{off, n})
	if len(b.pending) > maxBitmapChunk {
		b.flush(false)
	}
}

func (b *Builder) addLate(off, n int64) {
	b.late = append(b.late, Extent{off, n})
	if len(b.late) >= lateBatch {
		b.mergeLate()
	}
}

// flush encodes the pending extents; all of them if final, else all but the
// last, which may still grow.
func (b *Builder) flush(final bool) {
	k := len(b.pending)
	if !final {
		k--
	}
	if k <= 0 {
		return
	}
	before := len(b.chunks)
	b.chunks = encode(b.chunks, b.pending[:k])
	for i := before; i < len(b.chunks); i++ {
		b.charge += b.chunks[i].memory()
		chargeBytes(b.chunks[i].memory())
	}
	b.pending = append(b.pending[:0], b.pending[k:]...)
	if overLimit() {
		b.coarsen()
	}
}

// mergeLate merges the out-of-order extents with everything so far.
func (b *Builder) mergeLate() {
	if len(b.late) == 0 {
		return
	}
	late := b.late
	sort.Slice(late, func(i, j int) bool { return late[i].Off < late[j].Off })
	old := b.chunks
	oldPending := b.pending
	uncharge(b.charge) // released before the rebuild charges its own
	*b = Builder{size: b.size, coarse: b.coarse}
	j := 0
	take := func(e Extent) {
		for j < len(late) && late[j].Off < e.Off {
			b.Add(late[j].Off, late[j].Len)
			j++
		}
		b.Add(e.Off, e.Len)
	}
	for i := range old {
		old[i].each(func(e Extent) bool { take(e); return true })
	}
	for _, e := range oldPending {
		take(e)
	}
	for ; j < len(late); j++ {
		b.Add(late[j].Off, late[j].Len)
	}
}

// coarsen re-encodes the builder without its smallest extents, doubling the
// cut-off until the map fits the limit again or holds nothing.
func (b *Builder) coarsen() {
	for overLimit() && len(b.chunks) > 0 {
		under := max(2*b.coarse.Under, 2<<b.minShift())
		old, oldCharge := b.chunks, b.charge
		b.chunks, b.charge = nil, 0
		var keep []Extent
		for i := range old {
			old[i].each(func(e Extent) bool {
				if e.Len < under {
					b.coarse.Bytes += e.Len
				} else {
					keep = append(keep, e)
				}
				if len(keep) == maxBitmapChunk {
					b.chunks = encode(b.chunks, keep)
					keep = keep[:0]
				}
				return true
			})
		}
		b.chunks = encode(b.chunks, keep)
		for i := range b.chunks {
			b.charge += b.chunks[i].memory()
		}
		uncharge(oldCharge)
		chargeBytes(b.charge)
		b.coarse.Under = under
		// Drop closed pending extents under the cut-off too.
		out := b.pending[:0]
		for i, e := range b.pending {
			if e.Len < under && i < len(b.pending)-1 {
				b.coarse.Bytes += e.Len
				continue
			}
			out = append(out, e)
		}
		b.pending = out
	}
}

func (b *Builder) minShift() uint8 {
	s := uint8(40)
	for i := range b.chunks {
		s = min(s, b.chunks[i].shift)
	}
	return s
}

// AddMap records every extent of m shifted by off. Where m lies wholly
// after everything added so far and inside the volume, its encoded chunks
// are shared, not copied, so a whole-disk map built from its partitions'
// maps costs almost no memory of its own.
func (b *Builder) AddMap(m *Map, off int64) {
	if m == nil || len(m.chunks) == 0 {
		return
	}
	first, last := m.chunks[0].off+off, m.chunks[len(m.chunks)-1].end+off
	end := int64(-1) // first offset an added extent could merge with
	if k := len(b.pending); k > 0 {
		end = b.pending[k-1].End()
	} else if k := len(b.chunks); k > 0 {
		end = b.chunks[k-1].end
	}
	if len(b.late) > 0 || first <= end || first < 0 || last > b.size || b.coarse.Under > 0 {
		for e := range m.All() {
			b.Add(e.Off+off, e.Len)
		}
		return
	}
	b.flush(true)
	for _, c := range m.chunks {
		c.off += off
		c.end += off
		b.chunks = append(b.chunks, c)
	}
}

// Map returns the finished map. The builder must not be used afterwards.
func (b *Builder) Map() *Map {
	b.mergeLate()
	if c := b.coarse.Under; c > 0 && len(b.pending) > 0 && b.pending[len(b.pending)-1].Len < c {
		b.coarse.Bytes += b.pending[len(b.pending)-1].Len
		b.pending = b.pending[:len(b.pending)-1]
	}
	b.flush(true)
	m := &Map{size: b.size, chunks: b.chunks, charge: b.charge, coarse: b.coarse}
	if cap(m.chunks) > len(m.chunks)+len(m.chunks)/4+16 {
		m.chunks = append([]chunk(nil), m.chunks...)
	}
	for e := range m.All() {
		m.free += e.Len
	}
	*b = Builder{}
	return m
}
