package restore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// dirArchive is an Archive of the files in a directory.
type dirArchive struct{ dir string }

func (a dirArchive) Open(_ context.Context, p string) (io.ReadCloser, error) {
	return os.Open(filepath.Join(a.dir, p))
}

func (a dirArchive) items(t *testing.T) []Item {
	t.Helper()
	ents, err := os.ReadDir(a.dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []Item
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, Item{Path: e.Name(), Size: fi.Size()})
	}
	return out
}

// splitDisk writes what 'prezero backup --partitions' stores for disk:
// header.img (the bytes before the first partition) and partN.img.
func splitDisk(t *testing.T, disk []byte, parts []tablePart) dirArchive {
	t.Helper()
	dir := t.TempDir()
	first := int64(len(disk))
	for _, p := range parts {
		first = min(first, p.Start)
		name := filepath.Join(dir, fmt.Sprintf("part%d.img", p.Number))
		if err := os.WriteFile(name, disk[p.Start:p.Start+p.Size], 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, HeaderItem), disk[:first], 0o600); err != nil {
		t.Fatal(err)
	}
	return dirArchive{dir}
}

// fillParts fills each partition of disk with random bytes and zero runs,
// leaving the gaps (zero, as sfdisk left them) alone.
func fillParts(disk []byte, parts []tablePart, seed uint64) {
	r := rand.New(rand.NewPCG(seed, seed))
	for _, p := range parts {
		b := disk[p.Start : p.Start+p.Size]
		for off := 0; off < len(b); off += 64 << 10 {
			if r.IntN(3) == 0 {
				continue // a zero run
			}
			for i := off; i < min(off+64<<10, len(b)); i++ {
				b[i] = byte(r.Uint32())
			}
		}
	}
}

func restoreDisk(t *testing.T, a dirArchive, items []Item, target string) (*DiskPlan, error) {
	t.Helper()
	ctx := context.Background()
	plan, err := PlanDisk(ctx, items, a)
	if err != nil {
		return nil, err
	}
	tg, err := Open(target, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	w, err := NewWriter(tg, Options{Limit: -1})
	if err != nil {
		t.Fatal(err)
	}
	if err := plan.Restore(ctx, w, a); err != nil {
		return plan, err
	}
	return plan, w.Finish(ctx)
}

func TestDiskPlanRoundTrip(t *testing.T) {
	tests := []struct {
		name   string
		sector int
		script string
		scheme string
	}{
		{"gpt512", 512, "label: gpt\nstart=1MiB, size=6MiB\nstart=10MiB, size=12MiB\nstart=30MiB, size=2MiB\n", "gpt"},
		{"gpt4096", 4096, "label: gpt\nstart=1MiB, size=6MiB\nstart=10MiB, size=20MiB\n", "gpt"},
		{"mbr", 512, "label: dos\nstart=2048, size=8192\nstart=20480, size=20480, type=7\n", "mbr"},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			disk := sfdiskImage(t, 40<<20, tc.sector, tc.script)
			tb, err := readTable(bytes.NewReader(disk[:1<<20]), 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			fillParts(disk, tb.parts, uint64(i))
			a := splitDisk(t, disk, tb.parts)

			for _, existing := range []bool{false, true} {
				target := filepath.Join(t.TempDir(), "target.img")
				if existing {
					stale := bytes.Repeat([]byte{0xEE}, len(disk)+3<<20)
					if err := os.WriteFile(target, stale, 0o600); err != nil {
						t.Fatal(err)
					}
				}
				plan, err := restoreDisk(t, a, a.items(t), target)
				if err != nil {
					t.Fatal(err)
				}
				if plan.Scheme != tc.scheme {
					t.Errorf("scheme %s, want %s", plan.Scheme, tc.scheme)
				}
				got, err := os.ReadFile(target)
				if err != nil {
					t.Fatal(err)
				}
				want := disk
				if tc.scheme == "mbr" {
					// An MBR does not record the disk's size: the restore
					// ends with the last partition.
					last := tb.parts[len(tb.parts)-1]
					want = disk[:last.Start+last.Size]
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("existing=%v: restored disk (%d bytes) differs from the original (%d) at %d", existing, len(got), len(want), firstDiff(got, want))
				}
			}
		})
	}
}

func TestDiskPlanRefusals(t *testing.T) {
	disk := sfdiskImage(t, 40<<20, 512, "label: gpt\nstart=1MiB, size=6MiB\nstart=10MiB, size=12MiB\n")
	tb, err := readTable(bytes.NewReader(disk[:1<<20]), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	a := splitDisk(t, disk, tb.parts)
	without := func(name string) []Item {
		var out []Item
		for _, it := range a.items(t) {
			if it.Path != name {
				out = append(out, it)
			}
		}
		return out
	}
	tests := []struct {
		name  string
		items []Item
		want  string
	}{
		{"no header", without("header.img"), "no header.img"},
		{"missing partition", without("part2.img"), "no part2.img"},
		{"extra partition", append(a.items(t), Item{"part7.img", 4096}), "does not list"},
		{"partition too big", append(without("part1.img"), Item{"part1.img", 7 << 20}), "only"},
		{"empty header with many parts", []Item{{"header.img", 0}, {"part1.img", 10}, {"part2.img", 10}}, "exactly part1.img"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := PlanDisk(context.Background(), tc.items, a)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one saying %q", err, tc.want)
			}
		})
	}

	// header.img shorter than its listed size: the borg stream ended early.
	short := t.TempDir()
	os.WriteFile(filepath.Join(short, "header.img"), disk[:600], 0o600)
	_, err = PlanDisk(context.Background(), []Item{{"header.img", 1 << 20}, {"part1.img", 6 << 20}}, dirArchive{short})
	if !errors.Is(err, ErrShort) {
		t.Fatalf("truncated header: err = %v, want ErrShort", err)
	}
}

func TestDiskPlanBare(t *testing.T) {
	dir := t.TempDir()
	part := bytes.Repeat([]byte("bare"), 5000)
	os.WriteFile(filepath.Join(dir, "header.img"), nil, 0o600)
	os.WriteFile(filepath.Join(dir, "part1.img"), part, 0o600)
	a := dirArchive{dir}
	target := filepath.Join(t.TempDir(), "t.img")
	plan, err := restoreDisk(t, a, a.items(t), target)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(target)
	if plan.Scheme != "none" || !bytes.Equal(got, part) {
		t.Fatalf("scheme %s, equal %v", plan.Scheme, bytes.Equal(got, part))
	}
}
