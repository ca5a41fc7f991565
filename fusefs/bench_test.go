package fusefs

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/prezero/prezero/freemap"
	"github.com/prezero/prezero/stream"
)

// BenchmarkRead compares 1 MiB sequential reads through the mount with the
// same reads from the stream in process, for a free (all zeros) and a used
// (all data) volume. The bench/backup.sh script measures the same on a
// real image against prezero cat.
func BenchmarkRead(b *testing.B) {
	const size = 256 << 20
	data := bytes.Repeat([]byte("prezero!"), size/8)
	for _, c := range []struct {
		name string
		free *freemap.Map
	}{
		{"free", func() *freemap.Map { m := freemap.NewBuilder(size); m.Add(0, size); return m.Map() }()},
		{"used", freemap.NewBuilder(size).Map()},
	} {
		r := stream.New(bytes.NewReader(data), size, c.free)
		buf := make([]byte, 1<<20)
		b.Run(c.name+"/stream", func(b *testing.B) {
			b.SetBytes(size)
			for b.Loop() {
				for off := int64(0); off < size; off += int64(len(buf)) {
					r.ReadAt(buf, off)
				}
			}
		})
		b.Run(c.name+"/fuse", func(b *testing.B) {
			if os.Geteuid() != 0 {
				b.Skip("needs root")
			}
			dir := b.TempDir()
			srv, err := Mount(dir, []File{{Name: "disk.img", Stream: r}}, Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer srv.Unmount()
			b.SetBytes(size)
			for b.Loop() {
				f, err := os.Open(filepath.Join(dir, "disk.img"))
				if err != nil {
					b.Fatal(err)
				}
				for off := int64(0); off < size; off += int64(len(buf)) {
					if _, err := f.ReadAt(buf, off); err != nil {
						b.Fatal(err)
					}
				}
				f.Close()
			}
		})
	}
}
