package stream_test

import (
	"bytes"
	"context"
	"fmt"
	"log"
	"strings"

	"github.com/prezero/prezero/freemap"
	"github.com/prezero/prezero/stream"
)

// A Reader serves the source where the map says allocated and zeros where
// it says free, without reading the source there. NextData and NextHole
// let a consumer skip the zeros (as FUSE's SEEK_DATA/SEEK_HOLE do).
func Example() {
	src := strings.NewReader("used:DEADBEEF:used")
	b := freemap.NewBuilder(src.Size())
	b.Add(5, 8) // "DEADBEEF" is free space
	r := stream.New(src, src.Size(), b.Map())

	var out bytes.Buffer
	if _, err := stream.Copy(context.Background(), &out, r); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%q\n", out.String())
	fmt.Println(r.NextHole(0), r.NextHole(13))
	// Output:
	// "used:\x00\x00\x00\x00\x00\x00\x00\x00:used"
	// 5 18
}
