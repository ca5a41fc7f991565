package freemap

import (
	"math/rand"
	"testing"
)

// unitModel builds a map from a per-unit free model, adding runs in a random
// order when shuffle is set, and checks every query against the model.
func checkModel(t *testing.T, model []bool, unit int64, shuffle bool, rng *rand.Rand) *Map {
	t.Helper()
	size := int64(len(model)) * unit
	var runs []Extent
	for i := 0; i < len(model); {
		if !model[i] {
			i++
			continue
		}
		j := i
		for j < len(model) && model[j] {
			j++
		}
		// Add each run block by block, as a bitmap walker does.
		for k := i; k < j; k++ {
			runs = append(runs, Extent{int64(k) * unit, unit})
		}
		i = j
	}
	if shuffle {
		rng.Shuffle(len(runs), func(i, j int) { runs[i], runs[j] = runs[j], runs[i] })
	}
	b := NewBuilder(size)
	for _, e := range runs {
		b.Add(e.Off, e.Len)
	}
	m := b.Map()
	var free int64
	for i, f := range model {
		off := int64(i) * unit
		if f {
			free += unit
		}
		for _, o := range []int64{off, off + unit - 1} {
			if m.IsFree(o) != f {
				t.Fatalf("IsFree(%d) = %v, want %v", o, !f, f)
			}
		}
		e, ok := m.Next(off)
		if f {
			// The whole run containing the unit.
			s, x := i, i
			for s > 0 && model[s-1] {
				s--
			}
			for x < len(model) && model[x] {
				x++
			}
			if !ok || e != (Extent{int64(s) * unit, int64(x-s) * unit}) {
				t.Fatalf("Next(%d) = %v,%v, want run [%d,%d) units", off, e, ok, s, x)
			}
		} else {
			x := i
			for x < len(model) && !model[x] {
				x++
			}
			if x == len(model) {
				if ok {
					t.Fatalf("Next(%d) = %v, want none", off, e)
				}
			} else if !ok || e.Off != int64(x)*unit {
				t.Fatalf("Next(%d) = %v,%v, want start %d", off, e, ok, int64(x)*unit)
			}
		}
	}
	if m.FreeBytes() != free {
		t.Fatalf("FreeBytes %d, want %d", m.FreeBytes(), free)
	}
	var sum int64
	prevEnd := int64(-1)
	for e := range m.All() {
		if e.Off <= prevEnd || e.Len <= 0 {
			t.Fatalf("All: %v after end %d: not sorted, disjoint and non-adjacent", e, prevEnd)
		}
		prevEnd = e.End()
		sum += e.Len
	}
	if sum != free {
		t.Fatalf("All sums to %d, want %d", sum, free)
	}
	return m
}

func TestChunkEncodings(t *testing.T) {
	rng := rand.New(rand.NewSource(7))
	for _, tc := range []struct {
		name  string
		units int
		unit  int64
		p     float64 // probability a unit is free
		run   int     // mean run length in units
	}{
		{"alternating-4k", 20000, 4096, -1, 0},
		{"fragmented-1k", 30000, 1024, 0.5, 1},
		{"runs-512", 30000, 512, 0.5, 40},
		{"sparse-big-runs", 20000, 65536, 0.1, 300},
		{"odd-unit", 9000, 3, 0.5, 3},
	} {
		for _, shuffle := range []bool{false, true} {
			t.Run(tc.name, func(t *testing.T) {
				model := make([]bool, tc.units)
				for i := 0; i < tc.units; {
					if tc.p < 0 {
						model[i] = i%2 == 1
						i++
						continue
					}
					n := 1 + rng.Intn(2*tc.run+1)
					f := rng.Float64() < tc.p
					for k := 0; k < n && i < tc.units; k++ {
						model[i] = f
						i++
					}
				}
				checkModel(t, model, tc.unit, shuffle, rng)
			})
		}
	}
}

// TestOneBitPerBlock: a volume whose every other block is free costs about
// one bit per block, not 16 bytes per extent.
func TestOneBitPerBlock(t *testing.T) {
	const blocks = 1 << 20 // 4 GiB of 4 KiB blocks
	b := NewBuilder(blocks * 4096)
	for i := int64(1); i < blocks; i += 2 {
		b.Add(i*4096, 4096)
	}
	m := b.Map()
	if got, bound := m.MemoryBytes(), int64(blocks/8*11/10); got > bound {
		t.Fatalf("%d bytes for %d blocks, want at most %d (1.1 bits per block)", got, blocks, bound)
	}
	if m.FreeBytes() != blocks/2*4096 {
		t.Fatalf("FreeBytes %d", m.FreeBytes())
	}
	m.Release()
	if m.FreeBytes() != 0 || m.IsFree(4096) {
		t.Fatal("a released map must read as all allocated")
	}
}

// TestCoarsen: past the limit the smallest extents are dropped, never more
// than the model has free, and the loss is reported exactly.
func TestCoarsen(t *testing.T) {
	defer SetMemoryLimit(SetMemoryLimit(0))
	base := MemoryInUse()
	const limit = 8 << 10
	SetMemoryLimit(base + limit)
	rng := rand.New(rand.NewSource(3))
	const unit, units = 4096, 1 << 20
	model := make([]bool, units)
	b := NewBuilder(units * unit)
	var free int64
	for i := 0; i < units; {
		n := 1 + rng.Intn(64)
		if rng.Intn(3) == 0 {
			n = 1 + rng.Intn(2)
		}
		f := rng.Intn(2) == 0
		for k := 0; k < n && i < units; k++ {
			if f {
				model[i] = true
				b.Add(int64(i)*unit, unit)
				free += unit
			}
			i++
		}
	}
	m := b.Map()
	c := m.Coarsened()
	if c.Bytes == 0 || c.Under == 0 {
		t.Fatalf("no coarsening reported (%+v) with %d bytes of memory", c, m.MemoryBytes())
	}
	if got := MemoryInUse() - base; got > limit {
		t.Fatalf("%d bytes in use, limit %d", got, limit)
	}
	if m.FreeBytes()+c.Bytes != free {
		t.Fatalf("free %d + coarsened %d != model %d", m.FreeBytes(), c.Bytes, free)
	}
	for e := range m.All() {
		if e.Len < c.Under {
			t.Fatalf("extent %v under the cut-off %d survived", e, c.Under)
		}
		for o := e.Off; o < e.End(); o += unit {
			if !model[o/unit] {
				t.Fatalf("byte %d is used but the coarsened map frees it", o)
			}
		}
	}
	m.Release()
	if MemoryInUse() != base {
		t.Fatalf("%d bytes still charged after Release", MemoryInUse()-base)
	}
}

// TestAddMapShares: a disk map assembled from partition maps shares their
// chunks and answers like one built extent by extent.
func TestAddMapShares(t *testing.T) {
	rng := rand.New(rand.NewSource(9))
	part := func(size int64) *Map {
		b := NewBuilder(size)
		for o := int64(4096); o < size; o += 8192 {
			if rng.Intn(4) > 0 {
				b.Add(o, 4096)
			}
		}
		return b.Map()
	}
	p1, p2 := part(8<<20), part(16<<20)
	placed := []struct {
		m   *Map
		off int64
	}{{p2, 40 << 20}, {p1, 1 << 20}, {p1, 20 << 20}} // out of order, and p1 twice
	fast, slow := NewBuilder(64<<20), NewBuilder(64<<20)
	for _, p := range placed {
		fast.AddMap(p.m, p.off)
		for e := range p.m.All() {
			slow.Add(e.Off+p.off, e.Len)
		}
	}
	a, b := fast.Map(), slow.Map()
	if x, y := a.Extents(), b.Extents(); len(x) != len(y) {
		t.Fatalf("%d extents, want %d", len(x), len(y))
	} else {
		for i := range x {
			if x[i] != y[i] {
				t.Fatalf("extent %d: %v, want %v", i, x[i], y[i])
			}
		}
	}
	for o := int64(0); o < 64<<20; o += 512 {
		if a.IsFree(o) != b.IsFree(o) {
			t.Fatalf("IsFree(%d) differs", o)
		}
	}
}
