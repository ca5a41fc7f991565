package fatmap

import (
	"fmt"

	"github.com/prezero/prezero/freemap"
)

// chunkEntries is how many FAT entries are read at a time (256 KiB of FAT32).
const chunkEntries = 1 << 16

// readEntries decodes entries first .. first+len(dst)-1 of FAT copy c.
// The caller keeps them inside 0 .. clusters+1.
func (v *volume) readEntries(c uint32, first uint32, dst []uint32, buf []byte) ([]byte, error) {
	g := v.g
	if len(dst) == 0 {
		return buf, nil
	}
	lo := g.entryOffset(first)
	hi := g.entryOffset(first+uint32(len(dst))-1) + uint64(g.entryBytes())
	if uint64(cap(buf)) < hi-lo {
		buf = make([]byte, hi-lo)
	}
	b := buf[:hi-lo]
	if err := v.readAt(b, g.fatOffset(c)+int64(lo)); err != nil {
		return buf, err
	}
	for i := range dst {
		n := first + uint32(i)
		off := g.entryOffset(n) - lo
		switch g.bits {
		case 12:
			x := le16(b, int(off))
			if n&1 != 0 {
				x >>= 4
			}
			dst[i] = x & 0xFFF
		case 16:
			dst[i] = le16(b, int(off))
		default:
			dst[i] = le32(b, int(off)) // all 32 bits: nonzero reserved bits still mean allocated
		}
	}
	return buf, nil
}

// loadFATs builds the free bitmap: cluster n is free iff its entry is zero
// in every FAT copy.
func (v *volume) loadFATs() error {
	g := v.g
	v.free = make([]uint64, (g.clusters+63)/64)
	vals := make([]uint32, chunkEntries)
	acc := make([]uint32, chunkEntries)
	first0 := make([]uint32, chunkEntries)
	var buf []byte
	diff := make([]int64, g.nfats)
	end := g.clusters + 2
	for first := uint32(2); first < end; first += chunkEntries {
		n := min(uint32(chunkEntries), end-first)
		for c := uint32(0); c < g.nfats; c++ {
			var err error
			if c == 0 {
				buf, err = v.readEntries(c, first, acc[:n], buf)
				if err != nil {
					return err
				}
				copy(first0, acc[:n])
				continue
			}
			if buf, err = v.readEntries(c, first, vals[:n], buf); err != nil {
				return err
			}
			for i, x := range vals[:n] {
				if x != first0[i] {
					diff[c]++
				}
				acc[i] |= x
			}
		}
		for i, x := range acc[:n] {
			if x == 0 {
				k := first + uint32(i) - 2
				v.free[k/64] |= 1 << (k % 64)
			}
		}
	}
	if err := v.checkEnds(); err != nil {
		return err
	}
	for c, d := range diff {
		if d > 0 {
			v.note("FAT copy %d differs from copy 1 in %d entries; a cluster counts as free only if every copy says so", c+1, d)
		}
	}
	return nil
}

// keepPointed keeps every cluster that an allocated entry of any FAT copy
// points at: on a dirty volume the chain's next cluster may not have its own
// entry written yet.
func (v *volume) keepPointed() error {
	g := v.g
	vals := make([]uint32, chunkEntries)
	var buf []byte
	end := g.clusters + 2
	for c := uint32(0); c < g.nfats; c++ {
		for first := uint32(2); first < end; first += chunkEntries {
			n := min(uint32(chunkEntries), end-first)
			var err error
			if buf, err = v.readEntries(c, first, vals[:n], buf); err != nil {
				return err
			}
			for _, x := range vals[:n] {
				if g.bits == 32 {
					x &= 0x0FFFFFFF
				}
				if x >= 2 && x < g.clusters+2 && v.isFree(x) {
					v.keep(x)
					v.kept++
				}
			}
		}
	}
	return nil
}

// dirtyState reports whether the volume was not cleanly unmounted, and why:
// the state byte Linux sets while mounted read-write, or the clean-shutdown
// and hard-error bits Windows keeps in FAT[1] (FAT16 and FAT32 only).
func (v *volume) dirtyState(boot []byte) (bool, string, error) {
	g := v.g
	off := offState16
	if g.bits == 32 {
		off = offState32
	}
	if boot[off]&1 != 0 {
		return true, fmt.Sprintf("boot sector state byte %#02x", boot[off]), nil
	}
	if g.bits == 12 {
		return false, "", nil
	}
	clean, noErr := uint32(0x8000), uint32(0x4000)
	if g.bits == 32 {
		clean, noErr = 0x08000000, 0x04000000
	}
	var e [1]uint32
	for c := uint32(0); c < g.nfats; c++ {
		if _, err := v.readEntries(c, 1, e[:], nil); err != nil {
			return false, "", err
		}
		switch {
		case e[0]&clean == 0:
			return true, fmt.Sprintf("clean-shutdown bit clear in FAT[1] of copy %d", c+1), nil
		case e[0]&noErr == 0:
			return true, fmt.Sprintf("hard-error bit set in FAT[1] of copy %d", c+1), nil
		}
	}
	return false, "", nil
}

// fatCache serves single entries of one FAT copy for chain following.
type fatCache struct {
	ok    bool
	copy  uint32
	first uint32
	vals  []uint32
	buf   []byte
}

const cacheEntries = 1024

// entry returns entry n (2 <= n < clusters+2) of FAT copy c.
func (v *volume) entry(c, n uint32) (uint32, error) {
	fc := &v.cache
	if !fc.ok || fc.copy != c || n < fc.first || n-fc.first >= uint32(len(fc.vals)) {
		first := n - n%cacheEntries
		first = max(first, 2)
		cnt := min(uint32(cacheEntries), v.g.clusters+2-first)
		if cap(fc.vals) < cacheEntries {
			fc.vals = make([]uint32, cacheEntries)
		}
		fc.vals = fc.vals[:cnt]
		fc.ok = false
		var err error
		if fc.buf, err = v.readEntries(c, first, fc.vals, fc.buf); err != nil {
			return 0, err
		}
		fc.ok, fc.copy, fc.first = true, c, first
	}
	return fc.vals[n-fc.first], nil
}

// checkEnds checks the entries outside the clusters in every copy: FAT[0]
// holds the media byte with all other bits set, and the entries past the
// last cluster are zero. A FAT read from the wrong place (a corrupt reserved
// sector count or FAT size) fails this.
func (v *volume) checkEnds() error {
	g := v.g
	var e [1]uint32
	vals := make([]uint32, chunkEntries)
	var buf []byte
	for c := uint32(0); c < g.nfats; c++ {
		var err error
		if buf, err = v.readEntries(c, 0, e[:], buf); err != nil {
			return err
		}
		ones := uint32(1)<<g.bits - 1
		if g.bits == 32 {
			ones = 0x0FFFFFFF
		}
		if e[0]&ones|0xFF != ones || e[0]&0xFF < 0xF0 {
			return freemap.Formatf(g.fatOffset(c), "vfat: FAT copy %d does not begin with a media entry (FAT[0] = %#x)", c+1, e[0])
		}
		for first, end := uint64(g.clusters)+2, g.capacity(); first < end; first += chunkEntries {
			n := min(chunkEntries, end-first)
			if buf, err = v.readEntries(c, uint32(first), vals[:n], buf); err != nil {
				return err
			}
			for i, x := range vals[:n] {
				if x != 0 {
					return freemap.Formatf(g.fatOffset(c)+int64(g.entryOffset(uint32(first)+uint32(i))),
						"vfat: FAT copy %d has entry %d in use (%#x), past the last cluster %d", c+1, first+uint64(i), x, g.clusters+1)
				}
			}
		}
	}
	return nil
}
