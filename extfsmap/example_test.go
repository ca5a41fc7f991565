package extfsmap_test

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"log"
	"os"

	"github.com/prezero/prezero/extfsmap"
)

// Read maps a whole ext4 volume (here a small image; in prezero, one
// partition of a disk, as an io.SectionReader). Free holds the byte ranges
// the block bitmaps prove free: a backup may store zeros there.
func Example() {
	// mkfs.ext4 -b 1024 on 1 MiB, with a few files; dumpe2fs -h says
	// "Free blocks: 877".
	img := gunzip("testdata/ext4.img.gz")
	r := bytes.NewReader(img)
	if !extfsmap.Probe(r, r.Size()) {
		log.Fatal("not ext")
	}
	v, err := extfsmap.Read(r, r.Size())
	if err != nil {
		// errors.Is(err, freemap.ErrFormat / ErrUnsupported / ErrUnsafe)
		// tells why; the caller passes the volume through whole.
		log.Fatal(err)
	}
	fmt.Printf("%s, %d-byte blocks, %d of %d bytes free (%d blocks)\n",
		v.FS, v.BlockSize, v.Free.FreeBytes(), v.Free.Size(), v.Free.FreeBytes()/int64(v.BlockSize))
	first := v.Free.Extents()[0]
	fmt.Printf("first free extent: %d bytes at %d\n", first.Len, first.Off)
	// Output:
	// ext4, 1024-byte blocks, 898048 of 1048576 bytes free (877 blocks)
	// first free extent: 115712 bytes at 147456
}

func gunzip(name string) []byte {
	f, err := os.Open(name)
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	z, err := gzip.NewReader(f)
	if err != nil {
		log.Fatal(err)
	}
	b, err := io.ReadAll(z)
	if err != nil {
		log.Fatal(err)
	}
	return b
}
