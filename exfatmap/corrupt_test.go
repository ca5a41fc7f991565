package exfatmap

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/prezero/prezero/internal/imgtest"
)

// patchedReader reads b with one byte changed, and the boot checksum
// recomputed if fix is set, without copying b.
type patchedReader struct {
	b    []byte
	off  int64
	val  byte
	boot []byte // a patched copy of the boot region, or nil
}

func (r *patchedReader) ReadAt(p []byte, off int64) (int, error) {
	n, err := bytes.NewReader(r.b).ReadAt(p, off)
	if r.off >= off && r.off < off+int64(n) {
		p[r.off-off] = r.val
	}
	if r.boot != nil && off < int64(len(r.boot)) {
		copy(p[:n], r.boot[off:])
	}
	return n, err
}

// firstSubdir returns the byte offset of the first subdirectory of the
// root (its first cluster).
func firstSubdir(t *testing.T, img []byte, l *layout) int64 {
	t.Helper()
	root := img[l.rootOff : l.rootOff+l.clusterLen]
	for i := 0; i+64 <= len(root); i += 32 {
		if root[i] == typeFile && le16(root, i+4)&attrDirectory != 0 && root[i+32] == typeStream {
			return l.v.clusterOffset(le32(root, i+32+20))
		}
	}
	t.Fatal("no subdirectory in the root's first cluster")
	return 0
}

// TestCorruptions applies one-byte corruptions, four ways, to a clean and a
// dirty image: the boot sector (raw, and with the checksum made to match),
// the FAT's first entries, the bitmap's first bytes, the root directory and
// a subdirectory. Each must give an error or a map whose free bytes are all
// free in the true map.
func TestCorruptions(t *testing.T) {
	for _, name := range []string{"c4k", "c512"} {
		t.Run(name, func(t *testing.T) {
			f := getFixture(t, name)
			img, truth := readImage(t, f.path)
			l := getLayout(t, img)
			b := l.v.boot
			type corruption struct {
				what     string
				off      int64
				checksum bool
			}
			var cs []corruption
			for o := int64(0); o < 120; o++ {
				cs = append(cs, corruption{fmt.Sprintf("boot+%d", o), o, false})
				if o >= 64 {
					cs = append(cs, corruption{fmt.Sprintf("boot+%d, checksum fixed", o), o, true})
				}
			}
			fat := b.fatOff * int64(b.bps)
			sub := firstSubdir(t, img, l)
			for i := int64(0); i < 64; i++ {
				cs = append(cs, corruption{fmt.Sprintf("FAT+%d", i), fat + i, false},
					corruption{fmt.Sprintf("bitmap+%d", i), l.bitmapOff + i, false})
			}
			for i := int64(0); i < 384; i++ {
				cs = append(cs, corruption{fmt.Sprintf("root+%d", i), l.rootOff + i, false},
					corruption{fmt.Sprintf("subdir+%d", i), sub + i, false})
			}
			for _, dirty := range []bool{false, true} {
				base := img
				if dirty {
					base = bytes.Clone(img)
					base[offVolumeFlags] |= flagDirty
				}
				var nerr, nok, nsame int
				for _, c := range cs {
					old := base[c.off]
					for _, val := range []byte{old ^ 0xFF, old + 1, old - 1, old ^ 0x10} {
						r := &patchedReader{b: base, off: c.off, val: val}
						if c.checksum {
							r.boot = bytes.Clone(base[:12*b.bps])
							r.boot[c.off] = val
							fixChecksumBps(r.boot, int(b.bps))
						}
						vol, err := Read(r, int64(len(base)))
						if err != nil {
							nerr++
							continue
						}
						nok++
						if vol.Free.String() == truth.Free.String() {
							nsame++
						}
						if e, ok := imgtest.FreeOutside(vol.Free, truth.Free); ok {
							t.Errorf("%s = 0x%02x (dirty %v): free extent %+v holds used bytes", c.what, val, dirty, e)
						}
					}
				}
				t.Logf("dirty %v: %d corruptions: %d errors, %d maps (%d unchanged)", dirty, nerr+nok, nerr, nok, nsame)
			}
		})
	}
}
