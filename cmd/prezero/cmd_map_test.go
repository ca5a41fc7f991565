package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/prezero/prezero/internal/imgtest"
)

// dumpe2fsFree returns the block size and the free bytes dumpe2fs reports.
func dumpe2fsFree(t *testing.T, img string) (blockSize, free int64) {
	t.Helper()
	out := imgtest.Run(t, "dumpe2fs", "-h", img)
	field := func(name string) int64 {
		m := regexp.MustCompile(`(?m)^` + name + `:\s+(\d+)`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("dumpe2fs: no %q in\n%s", name, out)
		}
		n, _ := strconv.ParseInt(m[1], 10, 64)
		return n
	}
	bs := field("Block size")
	if strings.Contains(out, "bigalloc") {
		cs := field("Cluster size")
		return cs, field("Free blocks") * bs // dumpe2fs counts free blocks, in whole clusters
	}
	return bs, field("Free blocks") * bs
}

func TestMapAndCat(t *testing.T) {
	for _, tc := range []struct {
		name string
		size int64
		args []string
	}{
		{"ext4", 48 << 20, []string{"-t", "ext4", "-g", "4096"}},
		{"ext4-1k", 24 << 20, []string{"-t", "ext4", "-b", "1024"}},
		{"ext3", 24 << 20, []string{"-t", "ext3"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := filepath.Join(t.TempDir(), tc.name+".img")
			imgtest.Ext(t, img, tc.size, tc.args...)
			before := imgtest.SHA256File(t, img)

			out, errOut, code := runPrezero(t, "map", "--json", img)
			if code != 0 {
				t.Fatalf("map exit %d: %s", code, errOut)
			}
			var m mapJSON
			if err := json.Unmarshal(out, &m); err != nil {
				t.Fatalf("map --json: %v\n%s", err, out)
			}
			if len(m.Partitions) != 1 || !m.Partitions[0].Zeroed {
				t.Fatalf("map: %+v", m)
			}
			p := m.Partitions[0]
			bs, free := dumpe2fsFree(t, img)
			if int64(p.BlockSize) != bs || p.Zeroable != free || p.Used != tc.size-free || m.Used != p.Used {
				t.Fatalf("map says block %d, used %d, zeroable %d; dumpe2fs says block %d, free %d of %d",
					p.BlockSize, p.Used, p.Zeroable, bs, free, tc.size)
			}

			// cat equals zerofree's output, and fsck finds nothing wrong.
			oracle := imgtest.Zerofree(t, img)
			stream, errOut, code := runPrezero(t, "cat", img)
			if code != 0 {
				t.Fatalf("cat exit %d: %s", code, errOut)
			}
			want := readFile(t, oracle)
			if !bytes.Equal(stream, want) {
				t.Fatalf("cat differs from zerofree at byte %d", firstDiff(stream, want))
			}
			part, _, _ := runPrezero(t, "cat", img, "1")
			if !bytes.Equal(part, stream) {
				t.Fatal("cat 1 differs from cat disk on a bare filesystem")
			}
			header, _, _ := runPrezero(t, "cat", img, "header")
			if len(header) != 0 {
				t.Fatalf("bare filesystem has a %d-byte header", len(header))
			}
			zeroed := filepath.Join(t.TempDir(), "zeroed.img")
			writeFile(t, zeroed, stream)
			imgtest.Run(t, "e2fsck", "-fn", zeroed)
			if imgtest.SHA256File(t, img) != before {
				t.Fatal("the source changed")
			}
			text, _, _ := runPrezero(t, "map", img)
			if !strings.Contains(string(text), "zeroed") || !strings.Contains(string(text), "total:") {
				t.Fatalf("map text output:\n%s", text)
			}
		})
	}
}

func TestBadArguments(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "small.img")
	writeFile(t, img, bytes.Repeat([]byte{7}, 4096))
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"map"}, 2, "expected one SOURCE"},
		{[]string{"map", filepath.Join(dir, "missing.img")}, 2, "missing.img"},
		{[]string{"map", dir}, 2, "is a directory"},
		{[]string{"cat", img, "part9"}, 2, `"part9"`},
		{[]string{"cat", img, "bogus"}, 2, "choose disk, header or one of part1"},
		{[]string{"frobnicate"}, 2, "unknown command"},
		{[]string{"map", "--no-such-flag", img}, 2, "unknown flag"},
	} {
		_, errOut, code := runPrezero(t, tc.args...)
		if code != tc.code || !strings.Contains(string(errOut), tc.msg) {
			t.Errorf("prezero %q: exit %d, stderr %q; want exit %d and %q", tc.args, code, errOut, tc.code, tc.msg)
		}
	}
	// An unrecognised source passes through whole, and says why.
	out, _, code := runPrezero(t, "map", img)
	if code != 0 || !strings.Contains(string(out), "pass-through: no supported filesystem") {
		t.Errorf("map of random bytes: exit %d\n%s", code, out)
	}
	stream, _, _ := runPrezero(t, "cat", img)
	if !bytes.Equal(stream, readFile(t, img)) {
		t.Error("cat of an unknown source is not the source")
	}
}

// A crash-consistent copy of a mounted ext4 (needs_recovery set, fsync'd
// files only in the journal) is zeroed through an in-memory journal
// replay: map says so, --json carries the figures, and cat's stream,
// replayed by e2fsck, holds every fsync'd file.
func TestNeedsRecoveryCrashCopy(t *testing.T) {
	imgtest.NeedRoot(t)
	imgtest.Need(t, "losetup", "mkfs.ext4", "mount", "umount", "e2fsck")
	dir := t.TempDir()
	src, crash := filepath.Join(dir, "src.img"), filepath.Join(dir, "crash.img")
	imgtest.Ext(t, src, 24<<20, "-t", "ext4", "-b", "4096")
	dev := strings.TrimSpace(imgtest.Run(t, "losetup", "-f", "--show", src))
	t.Cleanup(func() { imgtest.Detach(t, dev, src) })
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	imgtest.Run(t, "mount", "-o", "commit=600", dev, mnt)
	files := map[string]int64{"a": 700 << 10, "b/c": 1 << 20, "b/d": 5000}
	imgtest.WriteRandomFiles(t, mnt, files)
	for name := range files {
		f, err := os.OpenFile(filepath.Join(mnt, name), os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.Sync()
		f.Close()
	}
	want := imgtest.HashTree(t, mnt)
	imgtest.CopyFile(t, crash, src) // while mounted
	imgtest.Umount(t, mnt)
	imgtest.Detach(t, dev, src)

	out, errOut, code := runPrezero(t, "map", crash)
	if code != 0 || !strings.Contains(string(out), "zeroed (journal replayed in memory: ") {
		t.Fatalf("map: exit %d\n%s%s", code, out, errOut)
	}
	js, _, _ := runPrezero(t, "map", "--json", crash)
	var m struct {
		Partitions []struct {
			Journal *struct {
				Transactions int `json:"transactions"`
				Blocks       int `json:"blocks"`
			} `json:"journal"`
		} `json:"partitions"`
	}
	if err := json.Unmarshal(js, &m); err != nil || len(m.Partitions) != 1 || m.Partitions[0].Journal == nil ||
		m.Partitions[0].Journal.Transactions == 0 || m.Partitions[0].Journal.Blocks == 0 {
		t.Fatalf("map --json carries no journal figures (%v):\n%s", err, js)
	}
	stream, errOut, code := runPrezero(t, "cat", crash)
	if code != 0 || bytes.Equal(stream, readFile(t, crash)) {
		t.Fatalf("cat (exit %d) did not zero anything: %s", code, errOut)
	}
	z := filepath.Join(dir, "z.img")
	if err := os.WriteFile(z, stream, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := imgtest.Output("e2fsck", "-fy", z); err != nil && !strings.Contains(err.Error(), "exit status 1") {
		t.Fatalf("e2fsck -fy on the stream: %v\n%s", err, out)
	}
	zdev := strings.TrimSpace(imgtest.Run(t, "losetup", "-f", "--show", z))
	t.Cleanup(func() { imgtest.Detach(t, zdev, z) })
	imgtest.Run(t, "mount", "-o", "ro", zdev, mnt)
	got := imgtest.HashTree(t, mnt)
	imgtest.Umount(t, mnt)
	for name := range files {
		if got[name] != want[name] || want[name] == "" {
			t.Errorf("%s: %q in the replayed stream, %q in the mounted source", name, got[name], want[name])
		}
	}
}

// An ext4 needing recovery whose journal is on an external device (not
// part of the source) passes through whole, and map says why.
func TestNeedsRecoveryExternalJournalPassesThrough(t *testing.T) {
	img := filepath.Join(t.TempDir(), "dirty.img")
	imgtest.Ext(t, img, 24<<20, "-t", "ext4")
	imgtest.Run(t, "debugfs", "-w", "-R", "ssv journal_inum 0", img)
	imgtest.Run(t, "debugfs", "-w", "-R", "feature needs_recovery", img)
	out, errOut, code := runPrezero(t, "map", img)
	if code != 0 || !strings.Contains(string(out), "pass-through: ext4: needs_recovery set; its journal is on an external device") {
		t.Fatalf("map: exit %d\n%s%s", code, out, errOut)
	}
	stream, errOut, code := runPrezero(t, "cat", img)
	if code != 0 || !bytes.Equal(stream, readFile(t, img)) {
		t.Fatalf("cat of a filesystem needing recovery is not the source (exit %d): %s", code, errOut)
	}
}
