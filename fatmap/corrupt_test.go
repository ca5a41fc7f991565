package fatmap

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/prezero/prezero/internal/imgtest"
)

// patchedReader reads b with one byte changed, without copying b.
type patchedReader struct {
	b   []byte
	off int64
	val byte
}

func (r *patchedReader) ReadAt(p []byte, off int64) (int, error) {
	n, err := bytes.NewReader(r.b).ReadAt(p, off)
	if r.off >= off && r.off < off+int64(n) {
		p[r.off-off] = r.val
	}
	return n, err
}

// corruptions lists the structure bytes worth corrupting: the BPB (and the
// signature), the start of every FAT copy and the entries of a few chains,
// FAT entries past the last cluster, the root directory's entries and a
// subdirectory's.
func corruptions(t *testing.T, f *fixture, img []byte, g *geometry) map[string]int64 {
	out := map[string]int64{}
	for o := int64(0); o < 0x5A; o++ {
		out[fmt.Sprintf("boot+0x%x", o)] = o
	}
	out["boot+0x1fe"], out["boot+0x1ff"] = 0x1FE, 0x1FF
	for c := uint32(0); c < g.nfats; c++ {
		for i := int64(0); i < 12; i++ {
			out[fmt.Sprintf("FAT%d+%d", c+1, i)] = g.fatOffset(c) + i
		}
		for _, p := range []string{"f00.bin", "EFI/BOOT/f13.bin", "EFI/BOOT", "data/sub/deep"} {
			for k, n := range chain(t, f.path, p) {
				if k > 3 {
					break
				}
				off := g.fatOffset(c) + int64(g.entryOffset(n))
				for i := range int64(g.entryBytes()) {
					out[fmt.Sprintf("FAT%d %s cluster %d byte %d", c+1, p, n, i)] = off + i
				}
			}
		}
		end := g.fatOffset(c) + int64(g.entryOffset(g.clusters+2))
		out[fmt.Sprintf("FAT%d past the end", c+1)] = end + 1
	}
	root := int64(g.rsvd+g.nfats*g.fatSz) * int64(g.bps)
	if g.bits == 32 {
		root = g.clusterOffset(g.rootClus)
	}
	sub := g.clusterOffset(chain(t, f.path, "EFI/BOOT")[0])
	for i := int64(0); i < 128; i++ {
		out[fmt.Sprintf("root dir+%d", i)] = root + i
		out[fmt.Sprintf("EFI/BOOT dir+%d", i)] = sub + i
	}
	return out
}

// TestCorruptions applies each one-byte corruption, four ways, to real
// images, clean and (but for the boot sector) dirty. Each must give an error or a map whose free
// bytes are all free in the true map: never a used byte zeroed, never a
// panic.
func TestCorruptions(t *testing.T) {
	for _, name := range []string{"fat12", "fat16", "fat32-c512"} {
		t.Run(name, func(t *testing.T) {
			f := getFixture(t, name)
			img, truth := readImage(t, f.path)
			g := geom(t, img)
			dirty := bytes.Clone(img)
			setDirty(dirty, g)
			cs := corruptions(t, f, img, g)
			for _, base := range [][]byte{img, dirty} {
				var nerr, nok, nsame int
				for what, off := range cs {
					if off < 512 && &base[0] == &dirty[0] {
						continue // the boot sector's checks do not depend on the state byte
					}
					old := base[off]
					for _, val := range []byte{old ^ 0xFF, old + 1, old - 1, old ^ 0x10} {
						vol, err := Read(&patchedReader{base, off, val}, int64(len(base)))
						if err != nil {
							nerr++
							continue
						}
						nok++
						if vol.Free.String() == truth.Free.String() {
							nsame++
						}
						if e, ok := imgtest.FreeOutside(vol.Free, truth.Free); ok {
							t.Errorf("%s = 0x%02x (dirty %v): free extent %+v holds used bytes", what, val, vol.Dirty, e)
						}
					}
				}
				t.Logf("%d corruptions: %d errors, %d maps (%d unchanged)", nerr+nok, nerr, nok, nsame)
			}
		})
	}
}
