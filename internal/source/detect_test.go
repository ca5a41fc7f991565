package source

import (
	"bytes"
	"testing"

	"github.com/prezero/prezero/internal/imgtest"
)

// TestDetectOrder: each committed seed image is claimed by its own parser.
// NTFS and exFAT boot sectors carry a jump and 0x55AA like FAT's, so the
// FAT probe must not claim them whatever the order.
func TestDetectOrder(t *testing.T) {
	for path, want := range map[string]string{
		"../../extfsmap/testdata/ext4.img.gz":       "ext",
		"../../ntfsmap/testdata/ntfs-c512.img.gz":   "ntfs",
		"../../exfatmap/testdata/exfat-c4k.img.gz":  "exfat",
		"../../fatmap/testdata/fat12.img.gz":        "vfat",
		"../../fatmap/testdata/fat16.img.gz":        "vfat",
		"../../fatmap/testdata/fat32.img.gz":        "vfat",
		"../../exfatmap/testdata/exfat-c512.img.gz": "exfat",
		"../../ntfsmap/testdata/ntfs-s4096.img.gz":  "ntfs",
		"../../extfsmap/testdata/bigalloc.img.gz":   "ext",
		"../../xfsmap/testdata/v5.img.gz":           "xfs",
		"../../xfsmap/testdata/v4.img.gz":           "xfs",
	} {
		r := bytes.NewReader(imgtest.Gunzip(t, path))
		var claims []string
		for _, fs := range probes {
			if fs.probe(r, r.Size()) {
				claims = append(claims, fs.name)
			}
		}
		if len(claims) != 1 || claims[0] != want {
			t.Errorf("%s: claimed by %q, want only %q", path, claims, want)
			continue
		}
		res, err := detect(r, r.Size()).read(r, r.Size(), Options{})
		if err != nil || res.Free.Size() != r.Size() || res.Free.FreeBytes() == 0 {
			t.Errorf("%s: %v %v", path, res, err)
		}
	}
}
