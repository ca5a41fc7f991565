package extfsmap

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/prezero/prezero/internal/imgtest"
)

// TestLargeSparse maps fresh 4 TiB filesystems (sparse files; with ext4
// almost every group is BLOCK_UNINIT, with ext3 every bitmap is read) and
// checks the cost: time and memory must not grow with the volume size.
func TestLargeSparse(t *testing.T) {
	if testing.Short() {
		t.Skip("makes 4 TiB sparse files")
	}
	imgtest.Need(t, "mkfs.ext4", "dumpe2fs")
	for _, c := range []struct {
		name string
		args []string
	}{
		{"ext4", []string{"-t", "ext4"}},
		{"ext4-no-flex_bg", []string{"-t", "ext4", "-O", "^flex_bg"}},
		{"ext3", []string{"-t", "ext3"}},
	} {
		t.Run(c.name, func(t *testing.T) { testLarge(t, c.args) })
	}
}

func testLarge(t *testing.T, mkfsArgs []string) {
	const size = 4 << 40
	img := filepath.Join(largeDir(t), "4t.img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		if imgtest.InCI() {
			t.Fatalf("a 4 TiB sparse file is needed under CI=true: %v", err)
		}
		t.Skipf("cannot make a 4 TiB sparse file here: %v", err)
	}
	imgtest.Run(t, "mkfs.ext4", append(append([]string{"-F", "-q"}, mkfsArgs...), img)...)
	dump := imgtest.Run(t, "dumpe2fs", "-h", img)

	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	start := time.Now()
	vol, err := Read(f, size)
	elapsed := time.Since(start)
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	checkInvariants(t, vol, size)
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("4 TiB: %v, %d KiB allocated in total, %v", elapsed, alloc>>10, vol.Free)
	// About 0.1 s for ext4 and 2 s for ext3 (every bitmap is read) on an
	// idle 2-core box; the bound catches a cost that grows with the size,
	// not a loaded machine (the old map took 84 s for 256 GiB).
	if elapsed > 10*time.Second {
		t.Errorf("Read took %v, want < 10s", elapsed)
	}
	if alloc > 64<<20 {
		t.Errorf("Read allocated %d MiB in total, want < 64 MiB", alloc>>20)
	}
	if vol.Fallbacks != 0 {
		t.Errorf("%d fallbacks: %q", vol.Fallbacks, vol.Notes)
	}
	bs := dumpField(t, dump, "Block size")
	blocks, free := dumpField(t, dump, "Block count"), dumpField(t, dump, "Free blocks")
	if got, want := vol.Free.FreeBytes(), free*bs; got != want {
		t.Errorf("free bytes = %d, dumpe2fs implies %d (difference %d blocks)", got, want, (got-want)/bs)
	}
	if blocks*bs != size {
		t.Errorf("block count %d", blocks)
	}
}

// largeDir returns a directory for a 4 TiB sparse image: on tmpfs when it
// has room, because mkfs leaves some 1.3 GiB in tens of thousands of
// extents, and unlinking that from a disk filesystem took 15-20 s here.
func largeDir(t *testing.T) string {
	if root := tmpfsWithRoom(4 << 30); root != "" {
		if dir, err := os.MkdirTemp(root, "extfsmap-large-"); err == nil {
			t.Cleanup(func() { os.RemoveAll(dir) })
			return dir
		}
	}
	return t.TempDir()
}
