package imgtest

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// Gunzip returns the decompressed contents of a gzip'd file, such as a
// committed seed image in a package's testdata.
func Gunzip(t testing.TB, path string) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return b
}

// Seeds returns the package's testdata/*.img.gz images, decompressed, by
// file name. It fails the test if there are none.
func Seeds(t testing.TB) map[string][]byte {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join("testdata", "*.img.gz"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no seed images in testdata: %v", err)
	}
	imgs := map[string][]byte{}
	for _, p := range paths {
		imgs[filepath.Base(p)] = Gunzip(t, p)
	}
	return imgs
}

// TrimZeros returns b without its trailing zero bytes: a fuzzer's seed
// stays small, and PaddedReader gives the zeros back.
func TrimZeros(b []byte) []byte {
	return b[:len(bytes.TrimRight(b, "\x00"))]
}

// PaddedReader reads B followed by zeros up to Size: a fuzzer's short
// input read as a whole volume.
type PaddedReader struct {
	B    []byte
	Size int64
}

// ReadAt implements io.ReaderAt.
func (r *PaddedReader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, io.ErrUnexpectedEOF
	}
	if off >= r.Size {
		return 0, io.EOF
	}
	n := len(p)
	var err error
	if int64(n) > r.Size-off {
		n, err = int(r.Size-off), io.EOF
	}
	clear(p[:n])
	if off < int64(len(r.B)) {
		copy(p[:n], r.B[off:])
	}
	return n, err
}

// Overlay reads Base with Patch laid over it at Off: a fuzzer's short
// patch over a whole seed image, without copying the image.
type Overlay struct {
	Base  []byte
	Off   int64
	Patch []byte
}

// ReadAt implements io.ReaderAt.
func (o *Overlay) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, io.ErrUnexpectedEOF
	}
	if off >= int64(len(o.Base)) {
		return 0, io.EOF
	}
	n := copy(p, o.Base[off:])
	for i := range n {
		if j := off + int64(i) - o.Off; j >= 0 && j < int64(len(o.Patch)) {
			p[i] = o.Patch[j]
		}
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}
