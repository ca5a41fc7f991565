package main

import (
	"fmt"
	"runtime/debug"
	"strconv"
	"strings"

	"github.com/spf13/pflag"

	"github.com/prezero/prezero/freemap"
	"github.com/prezero/prezero/internal/source"
)

// defaultMapMemory is --max-map-memory's default: the peak memory prezero
// aims for, whatever the image.
const defaultMapMemory = 256 << 20

// mapMemory is --max-map-memory, shared by every command that maps a SOURCE.
var mapMemory = memoryFlag(defaultMapMemory)

// crossCheck and noCrossCheck are --crosscheck and --no-crosscheck.
var crossCheck, noCrossCheck bool

// crossCheckOption turns the two flags into the source option.
func crossCheckOption() source.CrossCheck {
	switch {
	case noCrossCheck:
		return source.CrossCheckOff
	case crossCheck:
		return source.CrossCheckOn
	}
	return source.CrossCheckAuto
}

// addMemoryFlag adds --max-map-memory, and the cross-check flags.
func addMemoryFlag(f *pflag.FlagSet) {
	f.BoolVar(&crossCheck, "crosscheck", false, "also cross-check bitmaps that have checksums (ext4 with metadata_csum) against the blocks files use")
	f.BoolVar(&noCrossCheck, "no-crosscheck", false, "do not cross-check bitmaps against the blocks files use (by default: ext2, ext3, ext4 without metadata_csum, NTFS)")
	f.Var(&mapMemory, "max-map-memory", "keep memory use near `SIZE` (e.g. 256MiB, 1GiB): past it, the smallest free extents are served from the source instead of as zeros (safe; map says how much)")
}

// applyMemoryLimit gives the free maps five eighths of --max-map-memory
// (the rest is for buffers, FUSE and the runtime) and makes the Go runtime
// collect garbage before the heap passes the whole (at least 64 MiB: values
// below that only make sense to see coarsening at work on a small image).
func applyMemoryLimit() {
	freemap.SetMemoryLimit(int64(mapMemory) * 5 / 8)
	debug.SetMemoryLimit(max(int64(mapMemory), 64<<20))
}

type memoryFlag int64

func (m *memoryFlag) String() string { return strconv.FormatInt(int64(*m), 10) }
func (m *memoryFlag) Type() string   { return "SIZE" }

func (m *memoryFlag) Set(s string) error {
	units := map[string]int64{"": 1, "k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20, "g": 1 << 30, "gib": 1 << 30}
	t := strings.ToLower(strings.TrimSpace(s))
	i := strings.IndexFunc(t, func(r rune) bool { return r < '0' || r > '9' })
	if i < 0 {
		i = len(t)
	}
	n, err := strconv.ParseInt(t[:i], 10, 64)
	u, ok := units[strings.TrimSpace(t[i:])]
	if err != nil || !ok || n <= 0 || n > (1<<50)/u {
		return fmt.Errorf("%q is not a size such as 256MiB or 1GiB", s)
	}
	if n*u < 64<<10 {
		return fmt.Errorf("%q is below the 64KiB minimum", s)
	}
	*m = memoryFlag(n * u)
	return nil
}
