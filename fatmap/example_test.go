package fatmap_test

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"

	"github.com/prezero/prezero/fatmap"
)

// Read maps a small FAT32 volume (an ESP-like tree made by mkfs.fat and
// mtools): every byte outside the free extents must be kept.
func Example() {
	f, err := os.Open("testdata/fat32.img.gz")
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
	if !fatmap.Probe(r, r.Size()) {
		panic("not FAT")
	}
	vol, err := fatmap.Read(r, r.Size())
	if err != nil {
		panic(err) // errors.Is(err, freemap.ErrFormat / ErrUnsupported / ErrUnsafe): pass the volume through
	}
	fmt.Printf("%s %s, %d-byte clusters, %d of %d clusters free\n", vol.FS, vol.Type, vol.BlockSize, vol.FreeClusters, vol.Clusters)
	fmt.Printf("used: %d of %d bytes\n", vol.Free.Size()-vol.Free.FreeBytes(), vol.Free.Size())
	// Output:
	// vfat FAT32, 512-byte clusters, 68480 of 68528 clusters free
	// used: 589824 of 35651584 bytes
}
