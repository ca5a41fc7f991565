package imgtest

import (
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/prezero/prezero/freemap"
	"github.com/prezero/prezero/stream"
)

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

// WriteStream writes prezero's stream of the image file img, with the free
// extents of free read as zeros, to a new file and returns its path.
func WriteStream(t testing.TB, img string, free *freemap.Map) string {
	t.Helper()
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := filepath.Join(t.TempDir(), "stream.img")
	w, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	size := free.Size()
	if _, err := io.Copy(w, io.NewSectionReader(stream.New(f, size, free), 0, size)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return out
}
