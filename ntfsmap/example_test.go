package ntfsmap_test

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"log"
	"os"

	"github.com/prezero/prezero/freemap"
	"github.com/prezero/prezero/ntfsmap"
)

// Read maps an NTFS volume (here a small image made by mkntfs -c 4096 -s
// 4096; in prezero, one partition of a disk; ntfsinfo -m counts 546 free
// clusters). Free holds the clusters
// $Bitmap proves free; a dirty, hibernated or unclean-journal volume is
// refused with an error that matches freemap.ErrUnsafe.
func Example() {
	img := gunzip("testdata/ntfs-s4096.img.gz")
	r := bytes.NewReader(img)
	if !ntfsmap.Probe(r, r.Size()) {
		log.Fatal("not NTFS")
	}
	v, err := ntfsmap.Read(r, r.Size(), ntfsmap.Options{})
	if errors.Is(err, freemap.ErrUnsafe) {
		log.Fatalf("pass through whole: %v", err)
	} else if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s, %d-byte clusters, %d of %d clusters in use\n", v.FS, v.BlockSize, v.UsedClusters, v.Clusters)
	fmt.Printf("%d of %d bytes free\n", v.Free.FreeBytes(), v.Free.Size())
	// Output:
	// ntfs, 4096-byte clusters, 477 of 1023 clusters in use
	// 2236416 of 4194304 bytes free
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
