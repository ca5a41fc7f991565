// Package freemap holds the one shared type of prezero's pipeline: the set of
// byte ranges of a volume that a filesystem parser has proved unallocated.
//
// Parsers (extfsmap, ntfsmap, ...) build a Map with a Builder; the stream
// package turns it into a reader that returns zeros inside it. A Map records
// only proven-free ranges, so anything a parser did not add is passed
// through: unknown means allocated.
//
// Memory is bounded whatever the image. Extents are stored in chunks, each
// encoded either as delta varints or, where free space is fragmented, as a
// bitmap at the extents' common granularity, whichever is smaller: a volume
// whose every other block is free costs about one bit per block, a volume
// with few large free extents a few bytes per extent. Past the limit set
// with SetMemoryLimit, a Builder coarsens safely: it drops its smallest free
// extents (they become "used", which is always safe) and Coarsened reports
// how much free space that cost.
package freemap

import (
	"fmt"
	"iter"
	"sort"
)

// Extent is a half-open byte range [Off, Off+Len).
type Extent struct {
	Off int64
	Len int64
}

// End returns the first byte after the extent.
func (e Extent) End() int64 { return e.Off + e.Len }

// Map is a sorted set of disjoint, non-adjacent free extents inside a volume
// of Size bytes. The zero value is an empty map of size 0. A Map is
// immutable and safe for concurrent use.
type Map struct {
	size   int64
	chunks []chunk
	free   int64 // total free bytes
	charge int64 // bytes counted against the memory limit
	coarse Coarsening
}

// Coarsening says how much free space a map gave up to stay within the
// memory limit: Bytes of free space, in extents shorter than Under bytes,
// are served from the source instead of as zeros.
type Coarsening struct {
	Bytes int64
	Under int64
}

// Size returns the size of the volume the map describes.
func (m *Map) Size() int64 {
	if m == nil {
		return 0
	}
	return m.size
}

// FreeBytes returns the total number of free bytes.
func (m *Map) FreeBytes() int64 {
	if m == nil {
		return 0
	}
	return m.free
}

// Coarsened reports the free space dropped to stay within the memory limit
// (zero if none was).
func (m *Map) Coarsened() Coarsening {
	if m == nil {
		return Coarsening{}
	}
	return m.coarse
}

// MemoryBytes returns the memory the map's extents occupy, approximately.
func (m *Map) MemoryBytes() int64 {
	if m == nil {
		return 0
	}
	return m.charge
}

// All yields the free extents in ascending order.
func (m *Map) All() iter.Seq[Extent] {
	return func(yield func(Extent) bool) {
		if m == nil {
			return
		}
		for i := range m.chunks {
			if !m.chunks[i].each(yield) {
				return
			}
		}
	}
}

// Extents returns the free extents in ascending order as a new slice. It
// allocates 16 bytes per extent: use All or Next on large maps.
func (m *Map) Extents() []Extent {
	var out []Extent
	for e := range m.All() {
		out = append(out, e)
	}
	return out
}

// Next returns the free extent containing off or the first one after it,
// and false if there is none.
func (m *Map) Next(off int64) (Extent, bool) {
	if m == nil {
		return Extent{}, false
	}
	off = max(off, 0)
	i := sort.Search(len(m.chunks), func(i int) bool { return m.chunks[i].end > off })
	if i == len(m.chunks) {
		return Extent{}, false
	}
	return m.chunks[i].next(off)
}

// IsFree reports whether the byte at off is free.
func (m *Map) IsFree(off int64) bool {
	e, ok := m.Next(off)
	return ok && e.Off <= off
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
	for e := range m.All() {
		start := (e.Off + align - 1) / align * align
		end := e.End() / align * align
		if end > start {
			b.Add(start, end-start)
		}
	}
	return b.Map()
}

// Without returns m without the bytes that are free in used: they become
// allocated. m is unchanged.
func (m *Map) Without(used *Map) *Map {
	b := NewBuilder(m.Size())
	for e := range m.All() {
		for off := e.Off; off < e.End(); {
			u, ok := used.Next(off)
			if !ok || u.Off >= e.End() {
				b.Add(off, e.End()-off)
				break
			}
			if u.Off > off {
				b.Add(off, u.Off-off)
			}
			off = u.End()
		}
	}
	return b.Map()
}

// Release returns the map's memory to the limit set with SetMemoryLimit.
// The map then has no free extents (everything reads as allocated, which is
// always safe); release a map only when nothing reads through it any more.
func (m *Map) Release() {
	if m == nil || m.charge == 0 {
		return
	}
	uncharge(m.charge)
	m.chunks, m.free, m.charge = nil, 0, 0
}

// String summarises the map for debugging.
func (m *Map) String() string {
	n := 0
	for range m.All() {
		n++
	}
	return fmt.Sprintf("freemap{size %d, %d extents, %d free bytes, %d bytes of memory}", m.Size(), n, m.FreeBytes(), m.MemoryBytes())
}

// String describes the coarsening for a user, e.g. "1.2 GiB of free space
// in extents under 64 KiB".
func (c Coarsening) String() string {
	return fmt.Sprintf("%s of free space in extents under %s", sizeText(c.Bytes), sizeText(c.Under))
}

func sizeText(n int64) string {
	for _, u := range []struct {
		name string
		size int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.size {
			return fmt.Sprintf("%.1f %s", float64(n)/float64(u.size), u.name)
		}
	}
	return fmt.Sprintf("%d B", n)
}
