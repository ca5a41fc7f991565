package fusefs_test

import (
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strings"

	"github.com/prezero/prezero/freemap"
	"github.com/prezero/prezero/fusefs"
	"github.com/prezero/prezero/stream"
)

// Mount serves streams as read-only files (needs /dev/fuse: root, or
// fusermount3). A file reads as its stream does: here the free middle of
// part1.img reads as zeros, and SEEK_HOLE would report it only as whole
// HoleAlign windows.
func Example() {
	src := strings.NewReader("MBR.data.free.free.data")
	b := freemap.NewBuilder(src.Size())
	b.Add(9, 10) // "free.free."
	part := stream.New(src, src.Size(), b.Map())

	dir, err := os.MkdirTemp("", "fusefs-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.Remove(dir)
	srv, err := fusefs.Mount(dir, []fusefs.File{{Name: "part1.img", Stream: part}}, fusefs.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Unmount()

	got, err := os.ReadFile(filepath.Join(dir, "part1.img"))
	if err != nil {
		log.Fatal(err)
	}
	fi, _ := os.Stat(filepath.Join(dir, "part1.img"))
	fmt.Printf("%s %q\n", fi.Mode(), got)
	// Output:
	// -r--r--r-- "MBR.data.\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00data"
}
