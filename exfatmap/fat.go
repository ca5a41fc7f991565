package exfatmap

import (
	"fmt"

	"github.com/prezero/prezero/freemap"
)

const cacheEntries = 1024

// fatCache serves entries of the active FAT.
type fatCache struct {
	ok    bool
	first uint32
	buf   []byte
}

// entry returns FAT entry n (2 <= n < clusters+2) of the active FAT.
func (v *volume) entry(n uint32) (uint32, error) {
	fc := &v.cache
	if !fc.ok || n < fc.first || uint64(n-fc.first)*4 >= uint64(len(fc.buf)) {
		first := n - n%cacheEntries
		cnt := min(uint64(cacheEntries), uint64(v.boot.clusters)+2-uint64(first))
		if cap(fc.buf) < cacheEntries*4 {
			fc.buf = make([]byte, cacheEntries*4)
		}
		fc.buf = fc.buf[:cnt*4]
		fc.ok = false
		b := v.boot
		off := (b.fatOff+int64(b.activeFAT)*b.fatLen)*int64(b.bps) + int64(first)*4
		if err := v.readAt(fc.buf, off); err != nil {
			return 0, err
		}
		fc.ok, fc.first = true, first
	}
	return le32(fc.buf, int(n-fc.first)*4), nil
}

// chain returns the clusters of an allocation starting at first, of length
// bytes (0: unknown, follow the FAT to its end), as runs. NoFatChain
// allocations are contiguous. With lenient, a chain that ends early (a
// dirty volume's FAT not yet written) is completed with the clusters that
// follow its last one, up to the length, as exFAT allocates contiguously;
// otherwise it is an error.
func (v *volume) chain(first uint32, length uint64, noFatChain bool, what string) ([]run, error) {
	return v.chainOpt(first, length, noFatChain, false, what)
}

func (v *volume) chainOpt(first uint32, length uint64, noFatChain, lenient bool, what string) ([]run, error) {
	cb := uint64(v.boot.clusterBytes())
	want := (length + cb - 1) / cb
	if noFatChain {
		if !v.inHeap(first, want) {
			return nil, fmt.Errorf("%s: clusters %d..+%d outside clusters 2..%d", what, first, want, uint64(v.boot.clusters)+1)
		}
		return []run{{first, uint32(want)}}, nil
	}
	if !v.inHeap(first, 1) {
		return nil, fmt.Errorf("%s starts at cluster %d, outside clusters 2..%d", what, first, uint64(v.boot.clusters)+1)
	}
	var runs []run
	add := func(c uint32) {
		if k := len(runs); k > 0 && runs[k-1].end() == uint64(c) {
			runs[k-1].n++
			return
		}
		runs = append(runs, run{c, 1})
	}
	c := first
	for got := uint64(1); ; got++ {
		add(c)
		if want > 0 && got == want {
			return runs, nil
		}
		if got > uint64(v.boot.clusters) {
			return nil, fmt.Errorf("%s: its FAT chain loops", what)
		}
		next, err := v.entry(c)
		if err != nil {
			return nil, err
		}
		if next == fatEOC {
			if want > got {
				if lenient {
					return v.completeRun(runs, c, want-got), nil
				}
				return nil, fmt.Errorf("%s: FAT chain ends after %d of %d clusters", what, got, want)
			}
			return runs, nil
		}
		if next < 2 || uint64(next) >= uint64(v.boot.clusters)+2 {
			if lenient && want > got {
				return v.completeRun(runs, c, want-got), nil
			}
			return nil, fmt.Errorf("%s: cluster %d's FAT entry %#x is neither a next cluster nor end of chain", what, c, next)
		}
		c = next
	}
}

// completeRun adds up to n clusters after last, inside the heap.
func (v *volume) completeRun(runs []run, last uint32, n uint64) []run {
	end := min(uint64(last)+1+n, uint64(v.boot.clusters)+2)
	if end > uint64(last)+1 {
		runs = append(runs, run{last + 1, uint32(end - uint64(last) - 1)})
	}
	return runs
}

// readRuns reads the clusters of runs, at most limit bytes.
func (v *volume) readRuns(runs []run, limit int64, what string) ([]byte, error) {
	cb := v.boot.clusterBytes()
	total := int64(countRuns(runs)) * cb
	if total > limit {
		return nil, freemap.Unsupported("exfat: %s is %d bytes, more than the %d read", what, total, limit)
	}
	out := make([]byte, 0, total)
	for _, r := range runs {
		b := make([]byte, int64(r.n)*cb)
		if err := v.readAt(b, v.clusterOffset(r.first)); err != nil {
			return nil, err
		}
		out = append(out, b...)
	}
	return out, nil
}
