package extfsmap

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/prezero/prezero/internal/imgtest"
)

// TestLargeSparse maps a fresh 4 TiB ext4 (a sparse file; almost every group
// is BLOCK_UNINIT) and checks the cost: time and memory must not grow with
// the volume size.
func TestLargeSparse(t *testing.T) {
	if testing.Short() {
		t.Skip("makes a 4 TiB sparse file")
	}
	imgtest.Need(t, "mkfs.ext4", "dumpe2fs")
	const size = 4 << 40
	img := filepath.Join(t.TempDir(), "4t.img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Skipf("cannot make a 4 TiB sparse file here: %v", err)
	}
	imgtest.Run(t, "mkfs.ext4", "-F", "-q", img)
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
	if elapsed > 2*time.Second {
		t.Errorf("Read took %v, want < 2s", elapsed)
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
