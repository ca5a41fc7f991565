package imgtest

import (
	"bufio"
	"strconv"
	"strings"
	"testing"

	"github.com/prezero/prezero/freemap"
)

// Blkls returns The Sleuth Kit's allocation state of every sector of the
// filesystem image at path (true = free), in order from sector 0, as
// `blkls -l -e -f FSTYPE` lists it. It fails the test if blkls lists no
// sector or lists them out of order.
func Blkls(t *testing.T, fstype, path string) []bool {
	t.Helper()
	Need(t, "blkls")
	out := Run(t, "blkls", "-l", "-e", "-f", fstype, path)
	var free []bool
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		a, st, ok := strings.Cut(sc.Text(), "|")
		n, err := strconv.ParseInt(a, 10, 64)
		if !ok || err != nil {
			continue // the header lines
		}
		if n != int64(len(free)) {
			t.Fatalf("blkls: sector %d out of order", n)
		}
		free = append(free, st == "f")
	}
	if len(free) == 0 {
		t.Fatalf("blkls listed no sectors:\n%s", out)
	}
	return free
}

// MatchBlkls checks that m frees exactly the sectors (of sector bytes) that
// tsk, from Blkls, calls free, each sector wholly, and nothing past the
// sectors tsk lists.
func MatchBlkls(t *testing.T, m *freemap.Map, tsk []bool, sector int64) {
	t.Helper()
	bad := 0
	for s, f := range tsk {
		off := int64(s) * sector
		got := m.IsFree(off)
		if got != m.IsFree(off+sector-1) {
			t.Errorf("sector %d is partly free", s)
		}
		if got != f {
			if bad++; bad <= 5 {
				t.Errorf("sector %d: prezero free=%v, blkls free=%v", s, got, f)
			}
		}
	}
	if bad > 5 {
		t.Errorf("... %d sectors differ in all", bad)
	}
	if e, ok := m.Next(int64(len(tsk)) * sector); ok {
		t.Errorf("free extent %+v past the %d sectors blkls lists", e, len(tsk))
	}
}
