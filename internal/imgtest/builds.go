package imgtest

import (
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// Builds makes each named test image once per test binary, in one temporary
// directory: the packages' variant fixtures. Different names build
// concurrently; a second Get of a name waits for its first. A package
// declares one Builds and calls RemoveAll from its TestMain after m.Run.
type Builds[T any] struct {
	Prefix string // of the temporary directory's name

	mu  sync.Mutex
	dir string
	m   map[string]*build[T]
}

type build[T any] struct {
	once sync.Once
	ok   bool
	v    T
}

// Get returns the build named name, calling mk the first time with the
// path DIR/name (mk adds its own suffixes: name.img, name.mnt). If that
// first build failed, every later Get of the name fails too, without
// building again.
func (b *Builds[T]) Get(t *testing.T, name string, mk func(t *testing.T, path string) T) T {
	t.Helper()
	b.mu.Lock()
	if b.dir == "" {
		d, err := os.MkdirTemp("", b.Prefix)
		if err != nil {
			b.mu.Unlock()
			t.Fatal(err)
		}
		b.dir = d
	}
	if b.m == nil {
		b.m = map[string]*build[T]{}
	}
	e := b.m[name]
	if e == nil {
		e = &build[T]{}
		b.m[name] = e
	}
	path := filepath.Join(b.dir, name)
	b.mu.Unlock()
	e.once.Do(func() {
		e.v = mk(t, path)
		e.ok = true
	})
	if !e.ok {
		t.Fatalf("building %s failed: see the first test that needed it", name)
	}
	return e.v
}

// RemoveAll removes the builds' directory.
func (b *Builds[T]) RemoveAll() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.dir != "" {
		os.RemoveAll(b.dir)
	}
}
