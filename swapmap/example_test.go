package swapmap_test

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"github.com/prezero/prezero/swapmap"
)

// Read a swap header page and see what may be zeroed: everything after the
// first page, up to the area's last page.
func ExampleRead() {
	area := make([]byte, 1<<20)
	binary.LittleEndian.PutUint32(area[1024:], 1)   // version
	binary.LittleEndian.PutUint32(area[1028:], 255) // last page
	copy(area[1052:], "swap0")                      // label
	copy(area[4096-10:], "SWAPSPACE2")
	a, err := swapmap.Read(bytes.NewReader(area), int64(len(area)))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(a.FS, a.Label, a.PageSize, a.Free.Extents())

	copy(area[4096-10:], "S1SUSPEND\x00") // a hibernated system
	_, err = swapmap.Read(bytes.NewReader(area), int64(len(area)))
	fmt.Println(err)
	// Output:
	// swap swap0 4096 [{4096 1044480}]
	// swap: holds a hibernation image (S1SUSPEND): the suspended system resumes from it
}
