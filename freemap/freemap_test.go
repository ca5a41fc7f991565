package freemap

import (
	"math/rand"
	"reflect"
	"testing"
)

func TestBuilder(t *testing.T) {
	tests := []struct {
		name string
		size int64
		add  [][2]int64
		want []Extent
	}{
		{"empty", 100, nil, nil},
		{"merge-adjacent", 100, [][2]int64{{0, 10}, {10, 5}}, []Extent{{0, 15}}},
		{"merge-overlap", 100, [][2]int64{{0, 10}, {5, 10}}, []Extent{{0, 15}}},
		{"contained", 100, [][2]int64{{0, 50}, {10, 5}}, []Extent{{0, 50}}},
		{"unsorted", 100, [][2]int64{{50, 10}, {0, 10}, {55, 20}, {10, 1}}, []Extent{{0, 11}, {50, 25}}},
		{"clip", 100, [][2]int64{{-5, 10}, {95, 10}, {200, 5}, {3, 0}, {4, -1}}, []Extent{{0, 5}, {95, 5}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := NewBuilder(tc.size)
			for _, a := range tc.add {
				b.Add(a[0], a[1])
			}
			m := b.Map()
			if got := m.Extents(); !reflect.DeepEqual(got, tc.want) && !(len(got) == 0 && len(tc.want) == 0) {
				t.Fatalf("extents %v, want %v", got, tc.want)
			}
		})
	}
}

// TestAgainstBitmap compares every query with a byte-per-byte model.
func TestAgainstBitmap(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for iter := 0; iter < 200; iter++ {
		size := int64(1 + rng.Intn(300))
		model := make([]bool, size)
		b := NewBuilder(size)
		for k := rng.Intn(10); k > 0; k-- {
			off, n := int64(rng.Intn(int(size)+20))-10, int64(rng.Intn(40))
			b.Add(off, n)
			for i := max(off, 0); i < min(off+n, size); i++ {
				model[i] = true
			}
		}
		m := b.Map()
		var free int64
		for i := int64(0); i < size; i++ {
			if model[i] {
				free++
			}
			if m.IsFree(i) != model[i] {
				t.Fatalf("size %d: IsFree(%d) = %v", size, i, !model[i])
			}
			wantData := i
			for wantData < size && model[wantData] {
				wantData++
			}
			d, ok := m.NextData(i)
			if d != wantData || ok != (wantData < size) {
				t.Fatalf("NextData(%d) = %d,%v want %d", i, d, ok, wantData)
			}
			wantHole := i
			for wantHole < size && !model[wantHole] {
				wantHole++
			}
			if h := m.NextHole(i); h != wantHole {
				t.Fatalf("NextHole(%d) = %d want %d", i, h, wantHole)
			}
		}
		if m.FreeBytes() != free {
			t.Fatalf("FreeBytes %d want %d", m.FreeBytes(), free)
		}
		for _, align := range []int64{1, 4, 16} {
			a := m.Aligned(align)
			for w := int64(0); w+align <= size; w += align {
				all := true
				for i := w; i < w+align; i++ {
					all = all && model[i]
				}
				for i := w; i < w+align; i++ {
					if a.IsFree(i) != all {
						t.Fatalf("Aligned(%d): IsFree(%d) = %v, window free %v", align, i, a.IsFree(i), all)
					}
				}
			}
		}
	}
}
