package exfatmap_test

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"

	"github.com/prezero/prezero/exfatmap"
)

// Read maps a small exFAT volume made by mkfs.exfat and written through
// exfat-fuse: every byte outside the free extents must be kept.
func Example() {
	f, err := os.Open("testdata/exfat-c4k.img.gz")
	if err != nil {
		panic(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		panic(err)
	}
	img, err := io.ReadAll(zr)
	if err != nil {
		panic(err)
	}
	r := bytes.NewReader(img)
	if !exfatmap.Probe(r, r.Size()) {
		panic("not exFAT")
	}
	vol, err := exfatmap.Read(r, r.Size())
	if err != nil {
		panic(err) // errors.Is(err, freemap.ErrFormat / ErrUnsupported / ErrUnsafe): pass the volume through
	}
	fmt.Printf("%s, %d-byte clusters, %d of %d clusters free\n", vol.FS, vol.BlockSize, vol.FreeClusters, vol.Clusters)
	fmt.Printf("used: %d of %d bytes\n", vol.Free.Size()-vol.Free.FreeBytes(), vol.Free.Size())
	// Output:
	// exfat, 4096-byte clusters, 937 of 992 clusters free
	// used: 356352 of 4194304 bytes
}
