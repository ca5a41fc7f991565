// Package freemap holds the one shared type of prezero's pipeline: the set of
// byte ranges of a volume that a filesystem parser has proved unallocated.
//
// Parsers (extfsmap, ntfsmap) build a Map; the stream package turns it into a
// reader that returns zeros inside it. A Map records only proven-free ranges,
// so anything a parser did not add is passed through: unknown means allocated.
// Memory grows with the number of free extents, never with the volume size.
package freemap

import (
	"fmt"
	"sort"
)

// Extent is a half-open byte range [Off, Off+Len).
type Extent struct {
	Off int64
	Len int64
}

// End returns the first byte after the extent.
func (e Extent) End() int64 { return e.Off + e.Len }

// Map is a sorted list of disjoint, non-adjacent free extents inside a volume
// of Size bytes. The zero value is an empty map of size 0.
type Map struct {
	size int64
	free []Extent
}

// Size returns the size of the volume the map describes.
func (m *Map) Size() int64 {
	if m == nil {
		return 0
	}
	return m.size
}

// Extents returns the free extents in ascending order. The caller must not
// modify the returned slice.
func (m *Map) Extents() []Extent {
	if m == nil {
		return nil
	}
	return m.free
}

// FreeBytes returns the total number of free bytes.
func (m *Map) FreeBytes() int64 {
	var n int64
	for _, e := range m.Extents() {
		n += e.Len
	}
	return n
}

// find returns the index of the first extent whose end is after off.
func (m *Map) find(off int64) int {
	return sort.Search(len(m.free), func(i int) bool { return m.free[i].End() > off })
}

// IsFree reports whether the byte at off is free.
func (m *Map) IsFree(off int64) bool {
	if m == nil {
		return false
	}
	i := m.find(off)
	return i < len(m.free) && m.free[i].Off <= off
}

// Next returns the free extent containing off or the first one after it,
// and false if there is none.
func (m *Map) Next(off int64) (Extent, bool) {
	if m == nil {
		return Extent{}, false
	}
	i := m.find(off)
	if i == len(m.free) {
		return Extent{}, false
	}
	return m.free[i], true
}

// NextData returns the first offset >= off that is not free, like
// lseek(SEEK_DATA), and false if everything from off to Size is free.
func (m *Map) NextData(off int64) (int64, bool) {
	for off < m.Size() {
		e, ok := m.Next(off)
		if !ok || e.Off > off {
			return off, true
		}
		off = e.End()
	}
	return m.Size(), false
}

// NextHole returns the first offset >= off that is free, or Size if none is,
// like lseek(SEEK_HOLE).
func (m *Map) NextHole(off int64) int64 {
	if off >= m.Size() {
		return m.Size()
	}
	e, ok := m.Next(off)
	if !ok {
		return m.Size()
	}
	return max(e.Off, off)
}

// Aligned returns a map that keeps only the whole align-sized windows
// (aligned to multiples of align from offset 0) lying entirely inside free
// extents. align must be positive.
func (m *Map) Aligned(align int64) *Map {
	b := NewBuilder(m.Size())
	for _, e := range m.Extents() {
		start := (e.Off + align - 1) / align * align
		end := e.End() / align * align
		if end > start {
			b.Add(start, end-start)
		}
	}
	return b.Map()
}

// Builder accumulates free extents. Extents may be added in any order and may
// overlap; Map sorts and merges them. Extents are clipped to [0, size).
type Builder struct {
	size   int64
	free   []Extent
	sorted bool
}

// NewBuilder returns a builder for a volume of size bytes.
func NewBuilder(size int64) *Builder {
	return &Builder{size: size, sorted: true}
}

// Add records [off, off+n) as free. Parts outside the volume are dropped.
func (b *Builder) Add(off, n int64) {
	if n <= 0 || off >= b.size || off+n <= 0 {
		return
	}
	if off < 0 {
		n += off
		off = 0
	}
	if n > b.size-off {
		n = b.size - off
	}
	if k := len(b.free); k > 0 {
		last := &b.free[k-1]
		if off >= last.Off && off <= last.End() {
			if end := off + n; end > last.End() {
				last.Len = end - last.Off
			}
			return
		}
		if off < last.Off {
			b.sorted = false
		}
	}
	b.free = append(b.free, Extent{off, n})
}

// AddMap records every extent of m shifted by off.
func (b *Builder) AddMap(m *Map, off int64) {
	for _, e := range m.Extents() {
		b.Add(e.Off+off, e.Len)
	}
}

// Map returns the finished map. The builder must not be used afterwards.
func (b *Builder) Map() *Map {
	free := b.free
	if !b.sorted {
		sort.Slice(free, func(i, j int) bool { return free[i].Off < free[j].Off })
		out := free[:0]
		for _, e := range free {
			if k := len(out); k > 0 && e.Off <= out[k-1].End() {
				if e.End() > out[k-1].End() {
					out[k-1].Len = e.End() - out[k-1].Off
				}
				continue
			}
			out = append(out, e)
		}
		free = out
	}
	// Release spare capacity: large maps are built once and kept.
	if cap(free) > len(free)+len(free)/4+16 {
		free = append([]Extent(nil), free...)
	}
	b.free = nil
	return &Map{size: b.size, free: free}
}

// String summarises the map for debugging.
func (m *Map) String() string {
	return fmt.Sprintf("freemap{size %d, %d extents, %d free bytes}", m.Size(), len(m.Extents()), m.FreeBytes())
}
