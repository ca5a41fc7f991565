package ntfsmap

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/prezero/prezero/internal/imgtest"
)

// BenchmarkReadLarge maps a 2 TiB sparse NTFS volume (4 KiB clusters, a
// 64 MiB $Bitmap). It runs only with PREZERO_BENCH_BIG=1, which builds the
// image with truncate and mkntfs -Q, or with PREZERO_BENCH_IMG=path to an
// image made beforehand (so that /usr/bin/time -v measures Read alone):
//
//	truncate -s 2T /var/tmp/big.img && mkntfs -F -f -Q -q /var/tmp/big.img
//	go test -c -o /tmp/ntfsmap.test ./internal/ntfsmap
//	PREZERO_BENCH_IMG=/var/tmp/big.img /usr/bin/time -v /tmp/ntfsmap.test \
//	    -test.run '^$' -test.bench ReadLarge -test.benchtime 1x
func BenchmarkReadLarge(b *testing.B) {
	path := os.Getenv("PREZERO_BENCH_IMG")
	if path == "" {
		if os.Getenv("PREZERO_BENCH_BIG") != "1" {
			b.Skip("set PREZERO_BENCH_BIG=1 (or PREZERO_BENCH_IMG) to map a 2 TiB volume")
		}
		imgtest.Need(b, "mkntfs")
		path = filepath.Join(b.TempDir(), "big.img")
		f, err := os.Create(path)
		if err != nil {
			b.Fatal(err)
		}
		if err := f.Truncate(2 << 40); err != nil {
			b.Fatal(err)
		}
		f.Close()
		imgtest.Run(b, "mkntfs", "-F", "-f", "-Q", "-q", "-c", "4096", path)
	}
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	var vol *Volume
	for b.Loop() {
		vol, err = Read(f, st.Size(), Options{})
		if err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(len(vol.Free.Extents())), "extents")
	b.ReportMetric(float64(vol.Free.FreeBytes())/float64(st.Size()), "free-fraction")
	b.Logf("%d clusters, %d used, %v", vol.Clusters, vol.UsedClusters, vol.Free)
}
