package xfsmap_test

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"

	"github.com/prezero/prezero/xfsmap"
)

// Map a small v5 XFS (made by testdata/mkseeds.sh) and print what is free.
func Example() {
	f, err := os.Open("testdata/v5.img.gz")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		fmt.Println(err)
		return
	}
	img, err := io.ReadAll(zr)
	if err != nil {
		fmt.Println(err)
		return
	}
	r := bytes.NewReader(img)
	if !xfsmap.Probe(r, r.Size()) {
		fmt.Println("not XFS")
		return
	}
	vol, err := xfsmap.Read(r, r.Size())
	if err != nil {
		fmt.Println("pass through:", err)
		return
	}
	fmt.Printf("%s v%d, %d-byte blocks, %d AGs, log %s\n", vol.FS, vol.Version, vol.BlockSize, vol.AGCount, vol.Log)
	fmt.Printf("%d of %d blocks free in %d extents\n", vol.FreeBlocks, vol.Blocks, len(vol.Free.Extents()))
	// Output:
	// xfs v5, 1024-byte blocks, 2 AGs, log clean
	// 30551 of 36864 blocks free in 3 extents
}
