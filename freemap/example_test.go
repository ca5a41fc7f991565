package freemap_test

import (
	"errors"
	"fmt"

	"github.com/prezero/prezero/freemap"
)

// A parser adds the ranges it proves free, in any order; the Map is sorted
// and merged. Anything never added is allocated: unknown means allocated.
func Example() {
	b := freemap.NewBuilder(1 << 20) // a 1 MiB volume
	b.Add(4096, 8192)
	b.Add(65536, 4096)
	b.Add(12288, 4096) // touches the first extent: merged
	m := b.Map()
	fmt.Println(m.Extents(), m.FreeBytes())
	fmt.Println(m.IsFree(8192), m.IsFree(20000))
	next, _ := m.NextData(4096)
	fmt.Println(next, m.NextHole(16384))
	// Output:
	// [{4096 12288} {65536 4096}] 16384
	// true false
	// 16384 65536
}

// Every parser's errors are one of three kinds, told apart with errors.Is.
func ExampleFormatError() {
	err := fmt.Errorf("partition 2: %w", freemap.Formatf(1080, "ext4: bad superblock magic %#04x", 0))
	fmt.Println(err)
	fmt.Println(errors.Is(err, freemap.ErrFormat), errors.Is(err, freemap.ErrUnsafe))
	err = freemap.Unsafe("ntfs: volume is dirty")
	fmt.Println(errors.Is(err, freemap.ErrUnsafe), errors.Is(err, freemap.ErrUnsupported))
	// Output:
	// partition 2: ext4: bad superblock magic 0x0000 (at byte 1080)
	// true false
	// true false
}
