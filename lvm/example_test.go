package lvm_test

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"

	"github.com/prezero/prezero/lvm"
)

// Read a PV's label and metadata, list its VG's LVs and their segments,
// and find the extents no LV uses.
func ExampleRead() {
	f, _ := os.Open("testdata/pv0.img.gz") // the first MiB of a 32 MiB PV
	z, _ := gzip.NewReader(f)
	head, _ := io.ReadAll(z)
	pv, err := lvm.Read(bytes.NewReader(head), 32<<20)
	if err != nil {
		fmt.Println(err)
		return
	}
	vg := pv.VG
	fmt.Printf("PV %s of VG %s, extents of %d bytes from byte %d\n", pv.Info.Name, vg.Name, vg.ExtentSize, pv.PEStart)
	for _, lv := range vg.LVs {
		fmt.Printf("%s (%s): %d bytes in %d segments\n", lv.Name, lvm.DMName(vg.Name, lv.Name), lv.Size, len(lv.Segments))
	}
	free := vg.FreeExtents(pv.Info, 32<<20)
	fmt.Println("free extents:", free.Extents())
	// Output:
	// PV pv0 of VG seedvg, extents of 1048576 bytes from byte 1048576
	// root (seedvg-root): 12582912 bytes in 2 segments
	// gap (seedvg-gap): 2097152 bytes in 1 segments
	// data (seedvg-data): 8388608 bytes in 1 segments
	// my-swap (seedvg-my--swap): 4194304 bytes in 1 segments
	// free extents: [{19922944 13631488}]
}
