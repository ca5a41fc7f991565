package imgtest

import "github.com/prezero/prezero/freemap"

// FreeOutside returns an extent that m calls free but truth does not
// (all of m if the sizes differ), and false if every free extent of m lies
// inside one of truth's. The corruption tests use it: a map read from a
// damaged image may free less than the true map, never more.
func FreeOutside(m, truth *freemap.Map) (freemap.Extent, bool) {
	if m.Size() != truth.Size() {
		return freemap.Extent{Off: 0, Len: m.Size()}, true
	}
	for _, e := range m.Extents() {
		te, ok := truth.Next(e.Off)
		if !ok || te.Off > e.Off || te.End() < e.End() {
			return e, true
		}
	}
	return freemap.Extent{}, false
}
