package source

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	mrand "math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/prezero/prezero/internal/imgtest"
	"github.com/prezero/prezero/internal/nbd"
)

// TestDirectReader reads a qcow2 whose guest disk mixes every kind of
// extent: data in the top image (read in place), compressed clusters and
// data of the backing file (through NBD), holes and zeros. Every read, at
// odd offsets and lengths, equals the raw disk, and both paths are used.
func TestDirectReader(t *testing.T) {
	imgtest.Need(t, "qemu-img", "qemu-nbd", "qemu-io")
	dir := t.TempDir()
	const size = 8 * mib
	want := make([]byte, size)
	rand.Read(want[0 : 2*mib])
	copy(want[3*mib:4*mib], bytes.Repeat([]byte("compressible "), mib/13+1))
	rand.Read(want[5*mib : 5*mib+300<<10])
	raw := filepath.Join(dir, "base.raw")
	if err := os.WriteFile(raw, want, 0o644); err != nil {
		t.Fatal(err)
	}
	base, top := filepath.Join(dir, "base.qcow2"), filepath.Join(dir, "top.qcow2")
	imgtest.Run(t, "qemu-img", "convert", "-c", "-O", "qcow2", raw, base)
	imgtest.Run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", top)
	// The top image holds new data over parts of both.
	patch := make([]byte, 1*mib+4096)
	rand.Read(patch)
	copy(want[1536<<10:], patch)
	pf := filepath.Join(dir, "patch")
	if err := os.WriteFile(pf, patch, 0o644); err != nil {
		t.Fatal(err)
	}
	imgtest.Run(t, "qemu-io", "-f", "qcow2", "-c", fmt.Sprintf("write -s %s %d %d", pf, 1536<<10, len(patch)), top)

	f, err := os.Open(top)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	info, err := probeImage(f, top)
	if err != nil || info == nil || info.Format != "qcow2" {
		t.Fatalf("probe: %+v, %v", info, err)
	}
	q, err := nbd.StartQemu(context.Background(), top, nbd.QemuOptions{Format: "qcow2", Timeout: nbd.DefaultTimeout})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	d := directReaderFor(f, top, info, q.Client, Options{})
	if d == nil {
		t.Fatal("no in-place reading for a plain qcow2")
	}
	var placed int64
	for _, e := range d.ext {
		placed += e.n
	}
	// Exactly the patch is in the top image (whole clusters around it).
	if placed < int64(len(patch)) || placed > int64(len(patch))+128<<10 {
		t.Fatalf("%d bytes placed in the top image, want about %d: %v", placed, len(patch), d.ext)
	}
	if err := iotest.TestReader(io.NewSectionReader(d, 1526<<10, 20<<10), want[1526<<10:1546<<10]); err != nil {
		t.Fatal(err)
	}
	rnd := mrand.New(mrand.NewSource(1))
	for i := 0; i < 100; i++ {
		off := rnd.Int63n(size + 4096)
		n := rnd.Intn(mib)
		p := make([]byte, n)
		k, err := d.ReadAt(p, off)
		end := min(off+int64(n), size)
		if off >= size {
			if k != 0 || err != io.EOF {
				t.Fatalf("ReadAt(%d, %d) past the end = %d, %v", n, off, k, err)
			}
			continue
		}
		if int64(k) != end-off || (end < off+int64(n)) != (err == io.EOF) || (err != nil && err != io.EOF) {
			t.Fatalf("ReadAt(%d, %d) = %d, %v", n, off, k, err)
		}
		if !bytes.Equal(p[:k], want[off:end]) {
			t.Fatalf("ReadAt(%d, %d): content differs", n, off)
		}
	}
	if d.direct.Load() == 0 || q.Requested() == 0 {
		t.Fatalf("read in place %d, through NBD %d: both paths should be used", d.direct.Load(), q.Requested())
	}

	// --force-share, other formats, an external data file: all through NBD.
	if directReaderFor(f, top, info, q.Client, Options{ForceShare: true}) != nil {
		t.Fatal("in-place reading with --force-share")
	}
	df := *info
	df.Specific.Data.DataFile = "/x"
	if directReaderFor(f, top, &df, q.Client, Options{}) != nil {
		t.Fatal("in-place reading of a qcow2 with an external data file")
	}
}

func TestParseHostMap(t *testing.T) {
	const size, fsize = 1 << 20, 1 << 20
	for _, c := range []struct {
		name, in string
		want     []hostExtent
		err      string
	}{
		{"merge", `[{"start":0,"length":4096,"depth":0,"zero":false,"data":true,"offset":8192},
			{"start":4096,"length":4096,"depth":0,"zero":false,"data":true,"offset":12288},
			{"start":8192,"length":4096,"depth":0,"zero":false,"data":true,"offset":65536}]`,
			[]hostExtent{{0, 8192, 8192}, {8192, 65536, 4096}}, ""},
		{"skipped", `[{"start":0,"length":4096,"depth":1,"zero":false,"data":true,"offset":8192},
			{"start":4096,"length":4096,"depth":0,"zero":false,"data":true},
			{"start":8192,"length":4096,"depth":0,"zero":true,"data":false,"offset":8192},
			{"start":12288,"length":4096,"depth":0,"zero":false,"data":true,"offset":1048576}]`,
			nil, ""},
		{"unaligned", `[{"start":0,"length":4096,"depth":0,"zero":false,"data":true,"offset":8200}]`, nil, "unaligned"},
		{"order", `[{"start":4096,"length":4096,"depth":0,"data":true,"offset":0},{"start":0,"length":4096,"depth":0,"data":true,"offset":0}]`, nil, "out of order"},
		{"outside", `[{"start":0,"length":2097152,"depth":0,"data":true,"offset":0}]`, nil, "outside"},
		{"negative", `[{"start":0,"length":-1,"depth":0,"data":true,"offset":0}]`, nil, "outside"},
		{"not json", `{"a":1}`, nil, "not a JSON array"},
		{"truncated", `[{"start":0,"length":4096,"depth":0,"data":true,"offset":0},{"sta`, nil, "qemu-img map"},
	} {
		got, err := parseHostMap(strings.NewReader(c.in), size, fsize)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s: err %v, want %q", c.name, err, c.err)
			}
			continue
		}
		if err != nil || fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("%s: %v, %v; want %v", c.name, got, err, c.want)
		}
	}
}

// FuzzHostMap: whatever qemu-img map prints, the extents kept are sorted,
// disjoint, sector-aligned, inside the disk and inside the file.
func FuzzHostMap(f *testing.F) {
	f.Add([]byte(`[{"start":0,"length":4096,"depth":0,"zero":false,"data":true,"offset":8192},
		{"start":4096,"length":4096,"depth":0,"zero":false,"data":true,"offset":12288},
		{"start":65536,"length":512,"depth":1,"zero":false,"data":true,"offset":0}]`))
	f.Add([]byte(`[{"start":0,"length":1048576,"depth":0,"present":false,"zero":true,"data":false}]`))
	const size, fsize = 1 << 20, 512 << 10
	f.Fuzz(func(t *testing.T, in []byte) {
		ext, err := parseHostMap(bytes.NewReader(in), size, fsize)
		if err != nil {
			return
		}
		last := int64(0)
		for _, e := range ext {
			if e.guest < last || e.n <= 0 || e.guest+e.n > size || e.host < 0 || e.host+e.n > fsize || e.guest%512 != 0 || e.host%512 != 0 {
				t.Fatalf("bad extent %+v in %v", e, ext)
			}
			last = e.guest + e.n
		}
	})
}
