package imgtest

import (
	"encoding/binary"
	"hash/crc32"
	"os"
	"testing"
)

// WidenGPTEntries rewrites the GPT of the image file img (ss-byte sectors)
// to use entries of esz bytes (256, 512, ...; the UEFI spec allows any
// 128 * 2^n). Both entry arrays keep their place and byte length, so they
// hold fewer entries; each used entry keeps its index; the extra bytes of
// each entry are zero; both headers' CRCs are recomputed. sfdisk reads such
// tables (check with sfdisk -d).
func WidenGPTEntries(t testing.TB, img string, ss, esz int) {
	t.Helper()
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	le := binary.LittleEndian
	for _, hoff := range []int{ss, len(b) - ss} {
		h := b[hoff : hoff+92]
		if string(h[:8]) != "EFI PART" {
			t.Fatalf("%s: no GPT header at byte %d", img, hoff)
		}
		n, old := int(le.Uint32(h[80:])), int(le.Uint32(h[84:]))
		arr := b[int(le.Uint64(h[72:]))*ss:][:n*old]
		wide := make([]byte, len(arr))
		for i := 0; i*esz < len(wide) && i < n; i++ {
			copy(wide[i*esz:], arr[i*old:(i+1)*old])
		}
		for i := len(wide) / esz; i < n; i++ {
			for _, c := range arr[i*old : i*old+16] {
				if c != 0 {
					t.Fatalf("%s: entry %d is used and does not fit with %d-byte entries", img, i+1, esz)
				}
			}
		}
		copy(arr, wide)
		le.PutUint32(h[80:], uint32(len(wide)/esz))
		le.PutUint32(h[84:], uint32(esz))
		le.PutUint32(h[88:], crc32.ChecksumIEEE(arr))
		le.PutUint32(h[16:], 0)
		le.PutUint32(h[16:], crc32.ChecksumIEEE(h[:le.Uint32(h[12:])]))
	}
	if err := os.WriteFile(img, b, 0o644); err != nil {
		t.Fatal(err)
	}
}
