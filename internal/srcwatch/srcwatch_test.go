package srcwatch

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prezero/prezero/internal/imgtest"
)

func TestFile(t *testing.T) {
	for _, c := range []struct {
		name   string
		change func(t *testing.T, path string)
	}{
		{"write same size", func(t *testing.T, path string) {
			f, err := os.OpenFile(path, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.WriteAt([]byte{1}, 4096); err != nil {
				t.Fatal(err)
			}
		}},
		{"grow", func(t *testing.T, path string) {
			if err := os.Truncate(path, 2<<20); err != nil {
				t.Fatal(err)
			}
		}},
		{"shrink", func(t *testing.T, path string) {
			if err := os.Truncate(path, 1<<19); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "img")
			imgtest.RandomFile(t, path, 1<<20)
			w, err := Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			if err := w.Check(); err != nil {
				t.Fatalf("unchanged file: %v", err)
			}
			c.change(t, path)
			if err := w.Check(); !errors.Is(err, ErrChanged) {
				t.Fatalf("after the change: %v, want ErrChanged", err)
			}
		})
	}
}

func TestSame(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	imgtest.RandomFile(t, a, 4096)
	imgtest.RandomFile(t, b, 4096)
	w, err := Open(a)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	fa, _ := os.Open(a)
	defer fa.Close()
	fb, _ := os.Open(b)
	defer fb.Close()
	if err := w.Same(fa); err != nil {
		t.Errorf("same file: %v", err)
	}
	if err := w.Same(fb); !errors.Is(err, ErrChanged) {
		t.Errorf("other file: %v, want ErrChanged", err)
	}
}

// loopDevice attaches a new loop device to a random file.
func loopDevice(t *testing.T) (dev, backing string) {
	t.Helper()
	imgtest.NeedRoot(t)
	imgtest.Need(t, "losetup")
	backing = filepath.Join(t.TempDir(), "backing")
	imgtest.RandomFile(t, backing, 8<<20)
	dev = strings.TrimSpace(imgtest.Run(t, "losetup", "-f", "--show", backing))
	t.Cleanup(func() { imgtest.Detach(t, dev, backing) })
	return dev, backing
}

func TestBlockDevice(t *testing.T) {
	for _, c := range []struct {
		name  string
		write func(dev, backing string) string
	}{
		{"device written", func(dev, _ string) string { return dev }},
		{"backing file written", func(_, backing string) string { return backing }},
	} {
		t.Run(c.name, func(t *testing.T) {
			dev, backing := loopDevice(t)
			w, err := Open(dev)
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			buf := make([]byte, 1<<20)
			if _, err := w.f.ReadAt(buf, 0); err != nil {
				t.Fatal(err)
			}
			if err := w.Check(); err != nil {
				t.Fatalf("after reading only: %v", err)
			}
			imgtest.Run(t, "dd", "if=/dev/zero", "of="+c.write(dev, backing), "bs=4096", "count=1", "seek=3", "conv=notrunc,fsync", "status=none")
			if err := w.Check(); !errors.Is(err, ErrChanged) {
				t.Fatalf("after a write: %v, want ErrChanged", err)
			}
		})
	}
}

// Check runs after every FUSE read (1 MiB, ~250 µs at 4 GB/s), so it must
// cost a few microseconds at most.
func BenchmarkCheck(b *testing.B) {
	b.Run("file", func(b *testing.B) {
		path := filepath.Join(b.TempDir(), "img")
		imgtest.RandomFile(b, path, 1<<20)
		w, err := Open(path)
		if err != nil {
			b.Fatal(err)
		}
		defer w.Close()
		for b.Loop() {
			if err := w.Check(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("loop device", func(b *testing.B) {
		if os.Geteuid() != 0 {
			b.Skip("needs root")
		}
		backing := filepath.Join(b.TempDir(), "backing")
		imgtest.RandomFile(b, backing, 8<<20)
		dev := strings.TrimSpace(imgtest.Run(b, "losetup", "-f", "--show", backing))
		defer imgtest.Detach(b, dev, backing)
		w, err := Open(dev)
		if err != nil {
			b.Fatal(err)
		}
		defer w.Close()
		for b.Loop() {
			if err := w.Check(); err != nil {
				b.Fatal(err)
			}
		}
	})
}
