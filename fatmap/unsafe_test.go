package fatmap

import (
	"bytes"
	"encoding/binary"
	"errors"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/prezero/prezero/freemap"
	"github.com/prezero/prezero/internal/imgtest"
)

// geom parses the boot sector of a test image.
func geom(t *testing.T, img []byte) *geometry {
	t.Helper()
	g, err := parseBPB(img[:512])
	if err != nil {
		t.Fatal(err)
	}
	if err := g.check(int64(len(img))); err != nil {
		t.Fatal(err)
	}
	return g
}

// setEntry writes FAT entry n of copy c.
func setEntry(img []byte, g *geometry, c, n, val uint32) {
	off := g.fatOffset(c) + int64(g.entryOffset(n))
	switch g.bits {
	case 12:
		x := binary.LittleEndian.Uint16(img[off:])
		if n&1 != 0 {
			x = x&0x000F | uint16(val)<<4
		} else {
			x = x&0xF000 | uint16(val&0xFFF)
		}
		binary.LittleEndian.PutUint16(img[off:], x)
	case 16:
		binary.LittleEndian.PutUint16(img[off:], uint16(val))
	default:
		binary.LittleEndian.PutUint32(img[off:], val)
	}
}

// chain returns the clusters of a file as mshowfat lists them.
func chain(t *testing.T, img, path string) []uint32 {
	t.Helper()
	imgtest.Need(t, "mshowfat")
	out := imgtest.Run(t, "mshowfat", "-i", img, "::/"+path)
	var cs []uint32
	for _, m := range regexp.MustCompile(`<(\d+)(?:-(\d+))?>`).FindAllStringSubmatch(out, -1) {
		a, _ := strconv.Atoi(m[1])
		b := a
		if m[2] != "" {
			b, _ = strconv.Atoi(m[2])
		}
		for c := a; c <= b; c++ {
			cs = append(cs, uint32(c))
		}
	}
	if len(cs) == 0 {
		t.Fatalf("mshowfat %s: no clusters in %q", path, out)
	}
	return cs
}

// setDirty sets the state byte Linux sets while mounted.
func setDirty(img []byte, g *geometry) {
	if g.bits == 32 {
		img[offState32] |= 1
	} else {
		img[offState16] |= 1
	}
}

func clusterFree(vol *Volume, g *geometry, n uint32) bool {
	off := g.clusterOffset(n)
	return vol.Free.IsFree(off) || vol.Free.IsFree(off+g.clusterBytes()-1)
}

// TestDirty covers the dirty volume: the state byte and FAT[1]'s bits are
// noticed; a directory entry whose FAT chain is not written yet keeps its
// start cluster; a chain whose last cluster's entry is not written yet
// keeps that cluster; and a tree that cannot be walked passes through.
func TestDirty(t *testing.T) {
	for _, name := range []string{"fat12", "fat16", "fat32-c512"} {
		t.Run(name, func(t *testing.T) {
			f := getFixture(t, name)
			img, truth := readImage(t, f.path)
			g := geom(t, img)
			read := func(b []byte) (*Volume, error) { return Read(bytes.NewReader(b), int64(len(b))) }

			// The state byte alone: same map, walked.
			b := bytes.Clone(img)
			setDirty(b, g)
			vol, err := read(b)
			if err != nil {
				t.Fatal(err)
			}
			if !vol.Dirty || vol.Free.String() != truth.Free.String() || !strings.Contains(strings.Join(vol.Notes, ";"), "state byte") {
				t.Errorf("state byte: dirty %v, %v (want %v), notes %q", vol.Dirty, vol.Free, truth.Free, vol.Notes)
			}

			// FAT[1]'s clean-shutdown and hard-error bits (FAT16/32).
			if g.bits != 12 {
				for _, bit := range []uint32{0x8000, 0x4000} {
					if g.bits == 32 {
						bit <<= 12
					}
					b := bytes.Clone(img)
					e := uint32(0xFFFF)
					if g.bits == 32 {
						e = 0x0FFFFFFF
					}
					setEntry(b, g, 1, 1, e&^bit)
					vol, err := read(b)
					if err != nil || !vol.Dirty {
						t.Errorf("FAT[1] bit %#x clear in copy 2: %v, dirty %v", bit, err, vol != nil && vol.Dirty)
					}
				}
			}

			// A file whose FAT chain was never written: every entry zero.
			file := "EFI/BOOT/f13.bin"
			cs := chain(t, f.path, file)
			b = bytes.Clone(img)
			for _, c := range cs {
				for k := uint32(0); k < g.nfats; k++ {
					setEntry(b, g, k, c, 0)
				}
			}
			if _, err := read(b); !errors.Is(err, freemap.ErrFormat) || !strings.Contains(err.Error(), "marks free") {
				t.Errorf("clean volume whose entry starts at a free cluster: %v, want a format error", err)
			}
			setDirty(b, g)
			vol, err = read(b)
			if err != nil {
				t.Fatal(err)
			}
			if clusterFree(vol, g, cs[0]) {
				t.Errorf("start cluster %d of %s is free", cs[0], file)
			}
			if len(cs) > 1 && !clusterFree(vol, g, cs[len(cs)-1]) {
				t.Errorf("cluster %d, in no chain any more, is kept", cs[len(cs)-1])
			}
			// The rest of the chain is lost from the FAT: nothing points
			// at it any more, so it reads as free.
			if got, want := vol.Free.FreeBytes(), truth.Free.FreeBytes()+int64(len(cs)-1)*g.clusterBytes(); got != want {
				t.Errorf("%d free bytes, want %d", got, want)
			}

			// A chain whose last cluster's entry was never written.
			if len(cs) > 1 {
				b = bytes.Clone(img)
				last := cs[len(cs)-1]
				for k := uint32(0); k < g.nfats; k++ {
					setEntry(b, g, k, last, 0)
				}
				setDirty(b, g)
				vol, err = read(b)
				if err != nil {
					t.Fatal(err)
				}
				if clusterFree(vol, g, last) || vol.Free.String() != truth.Free.String() {
					t.Errorf("last cluster %d: free %v; map %v, want %v", last, clusterFree(vol, g, last), vol.Free, truth.Free)
				}
			}

			// A directory whose chain loops: clean, a format error; dirty,
			// unsafe (pass through).
			dir := chain(t, f.path, "EFI/BOOT")
			b = bytes.Clone(img)
			for k := uint32(0); k < g.nfats; k++ {
				setEntry(b, g, k, dir[len(dir)-1], dir[0])
			}
			if _, err := read(b); !errors.Is(err, freemap.ErrFormat) {
				t.Errorf("clean, looping directory: %v", err)
			}
			setDirty(b, g)
			if _, err := read(b); !errors.Is(err, freemap.ErrUnsafe) || !strings.HasPrefix(err.Error(), "vfat: volume is dirty") {
				t.Errorf("dirty, looping directory: %v", err)
			}
		})
	}
}

// TestFATCopiesDiffer makes the second FAT disagree with the first both
// ways: a cluster free in one copy only is kept, and the map says so.
func TestFATCopiesDiffer(t *testing.T) {
	for _, name := range []string{"fat12", "fat16", "fat32-c512"} {
		t.Run(name, func(t *testing.T) {
			f := getFixture(t, name)
			img, truth := readImage(t, f.path)
			g := geom(t, img)
			used := chain(t, f.path, "f00.bin")[0]
			var free uint32
			for n := g.clusters + 1; n >= 2; n-- {
				if clusterFree(truth, g, n) {
					free = n
					break
				}
			}
			b := bytes.Clone(img)
			setEntry(b, g, 1, used, 0)     // copy 2 calls a used cluster free
			setEntry(b, g, 1, free, 0xFF7) // and a free one bad
			mirror := []bool{false}
			if g.bits == 32 {
				mirror = append(mirror, true)
			}
			for _, disabled := range mirror {
				if disabled {
					binary.LittleEndian.PutUint16(b[offExtFlags:], 0x81) // only copy 2 active
				}
				vol, err := Read(bytes.NewReader(b), int64(len(b)))
				if err != nil {
					t.Fatal(err)
				}
				notes := strings.Join(vol.Notes, ";")
				if clusterFree(vol, g, used) || clusterFree(vol, g, free) || !strings.Contains(notes, "differs from copy 1 in 2 entries") {
					t.Errorf("mirroring disabled %v: used %d free %v, bad %d free %v, notes %q", disabled, used, clusterFree(vol, g, used), free, clusterFree(vol, g, free), notes)
				}
				if disabled && !strings.Contains(notes, "mirroring is disabled") {
					t.Errorf("notes %q", notes)
				}
				if got, want := vol.Free.FreeBytes(), truth.Free.FreeBytes()-g.clusterBytes(); got != want {
					t.Errorf("%d free bytes, want %d", got, want)
				}
			}
		})
	}
}
