package extfsmap_test

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"

	"github.com/prezero/prezero/extfsmap"
)

// A crash-consistent copy (needs_recovery set: copied while mounted) is
// mapped through an in-memory replay of its journal; the source is only
// read.
func ExampleRead_journal() {
	f, err := os.Open("testdata/crash/crash-ext4.img.gz")
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
	vol, err := extfsmap.Read(bytes.NewReader(img), int64(len(img)))
	if err != nil {
		fmt.Println("pass through:", err)
		return
	}
	fmt.Println(vol.FS, vol.Journal)
	fmt.Printf("transactions %d to %d\n", vol.Journal.FirstTID, vol.Journal.EndTID-1)
	// Output:
	// ext4 journal replayed in memory: 7 transactions, 13 blocks
	// transactions 2 to 8
}
