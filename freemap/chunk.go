package freemap

import (
	"encoding/binary"
	"math/bits"
)

// A chunk holds up to maxChunk consecutive free extents of a map, in
// [off, end): off is its first extent's start, end its last extent's end.
// Offsets and lengths inside a chunk are in units of 1<<shift bytes, the
// largest power of two dividing all of them.
//
//   - A varint chunk stores, per extent, the gap since the previous extent's
//     end (0 for the first) and the length, as unsigned varints.
//   - A bitmap chunk stores one bit per unit of [off, end): set means free.
type chunk struct {
	off, end int64
	n        int32 // number of extents
	shift    uint8
	bitmap   bool
	data     []byte
}

// chunkOverhead approximates a chunk's fixed cost in memory.
const chunkOverhead = 56

// maxBitmapChunk caps the extents gathered before choosing an encoding, and
// maxVarintChunk the extents of one varint chunk (a lookup decodes at most
// that many).
const (
	maxBitmapChunk = 4096
	maxVarintChunk = 256
)

func (c *chunk) memory() int64 { return int64(cap(c.data)) + chunkOverhead }

// each yields the chunk's extents in order.
func (c *chunk) each(yield func(Extent) bool) bool {
	if c.bitmap {
		u := int64(0)
		units := (c.end - c.off) >> c.shift
		for u < units {
			s, ok := c.nextSet(u, units)
			if !ok {
				return true
			}
			e := c.nextClear(s, units)
			if !yield(Extent{c.off + s<<c.shift, (e - s) << c.shift}) {
				return false
			}
			u = e
		}
		return true
	}
	pos, at := c.off, 0
	for i := int32(0); i < c.n; i++ {
		gap, k1 := binary.Uvarint(c.data[at:])
		n, k2 := binary.Uvarint(c.data[at+k1:])
		at += k1 + k2
		start := pos + int64(gap)<<c.shift
		pos = start + int64(n)<<c.shift
		if !yield(Extent{start, pos - start}) {
			return false
		}
	}
	return true
}

// next returns the extent containing off or the first after it; the caller
// guarantees off < c.end.
func (c *chunk) next(off int64) (Extent, bool) {
	if !c.bitmap {
		var out Extent
		found := false
		c.each(func(e Extent) bool {
			if e.End() > off {
				out, found = e, true
				return false
			}
			return true
		})
		return out, found
	}
	units := (c.end - c.off) >> c.shift
	u := max(0, (off-c.off)>>c.shift)
	if c.bit(u) {
		s := c.prevClear(u) + 1
		e := c.nextClear(u, units)
		return Extent{c.off + s<<c.shift, (e - s) << c.shift}, true
	}
	s, ok := c.nextSet(u, units)
	if !ok {
		return Extent{}, false
	}
	e := c.nextClear(s, units)
	return Extent{c.off + s<<c.shift, (e - s) << c.shift}, true
}

func (c *chunk) bit(u int64) bool { return c.data[u>>3]&(1<<(u&7)) != 0 }

// nextSet returns the first set unit >= u, below units.
func (c *chunk) nextSet(u, units int64) (int64, bool) {
	for u < units {
		if u&7 == 0 && c.data[u>>3] == 0 {
			u += 8
			continue
		}
		if b := c.data[u>>3] >> (u & 7); b != 0 {
			u += int64(bits.TrailingZeros8(b))
			return u, u < units
		}
		u = (u | 7) + 1
	}
	return units, false
}

// nextClear returns the first clear unit >= u, or units.
func (c *chunk) nextClear(u, units int64) int64 {
	for u < units {
		if u&7 == 0 && c.data[u>>3] == 0xff {
			u += 8
			continue
		}
		if b := ^c.data[u>>3] >> (u & 7); b != 0 {
			return min(u+int64(bits.TrailingZeros8(b)), units)
		}
		u = (u | 7) + 1
	}
	return units
}

// prevClear returns the last clear unit < u, or -1.
func (c *chunk) prevClear(u int64) int64 {
	for u--; u >= 0; u-- {
		if u&7 == 7 && c.data[u>>3] == 0xff {
			u -= 7
			continue
		}
		if !c.bit(u) {
			return u
		}
	}
	return -1
}

// encode appends to out the chunks that hold exts, sorted, disjoint and
// non-adjacent, choosing per group the smaller encoding.
func encode(out []chunk, exts []Extent) []chunk {
	if len(exts) == 0 {
		return out
	}
	shift := commonShift(exts)
	off, end := exts[0].Off, exts[len(exts)-1].End()
	units := (end - off) >> shift
	varint := 0
	for i, e := range exts {
		gap := int64(0)
		if i > 0 {
			gap = e.Off - exts[i-1].End()
		}
		varint += uvarintLen(uint64(gap>>shift)) + uvarintLen(uint64(e.Len>>shift))
	}
	if units < 1<<31 && (units+7)/8 < int64(varint) {
		data := make([]byte, (units+7)/8)
		for _, e := range exts {
			for u, last := (e.Off-off)>>shift, (e.End()-off)>>shift; u < last; u++ {
				data[u>>3] |= 1 << (u & 7)
			}
		}
		return append(out, chunk{off: off, end: end, n: int32(len(exts)), shift: shift, bitmap: true, data: data})
	}
	for len(exts) > 0 {
		k := min(len(exts), maxVarintChunk)
		part := exts[:k]
		exts = exts[k:]
		s := commonShift(part)
		var data []byte
		for i, e := range part {
			gap := int64(0)
			if i > 0 {
				gap = e.Off - part[i-1].End()
			}
			data = binary.AppendUvarint(data, uint64(gap>>s))
			data = binary.AppendUvarint(data, uint64(e.Len>>s))
		}
		data = append([]byte(nil), data...) // exact capacity
		out = append(out, chunk{off: part[0].Off, end: part[k-1].End(), n: int32(k), shift: s, data: data})
	}
	return out
}

// commonShift returns log2 of the largest power of two dividing every
// offset and length, at most 40.
func commonShift(exts []Extent) uint8 {
	var acc uint64 = 1 << 40
	for _, e := range exts {
		acc |= uint64(e.Off) | uint64(e.Len)
	}
	return uint8(bits.TrailingZeros64(acc))
}

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}
