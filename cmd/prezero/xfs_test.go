package main

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prezero/prezero/internal/imgtest"
)

// A GPT disk with an XFS partition (random bytes under it, files written
// and some deleted) and a raw one: map names the XFS with its block size,
// cat zeroes exactly what xfs_copy -d leaves out, and the partition's
// stream mounts with every file intact.
func TestXFSPartition(t *testing.T) {
	imgtest.NeedRoot(t)
	imgtest.Need(t, "sfdisk", "mkfs.xfs", "xfs_copy", "mount", "losetup")
	const (
		diskSize = 72 << 20
		xStart   = 1 << 20
		xSize    = 48 << 20
		rawStart = xStart + xSize
		rawSize  = 8 << 20
	)
	dir := t.TempDir()
	disk := filepath.Join(dir, "disk.img")
	imgtest.RandomFile(t, disk, diskSize)
	imgtest.Partition(t, disk, 512, fmt.Sprintf("label: gpt\nstart=%d,size=%d,type=L\nstart=%d,size=%d,type=L\n",
		xStart/512, xSize/512, rawStart/512, rawSize/512))
	x := filepath.Join(dir, "xfs.img")
	imgtest.MakeXFS(t, x, xSize)
	mnt := t.TempDir()
	unmount := imgtest.MountXFS(t, x, mnt, "", false)
	imgtest.WriteRandomFiles(t, mnt, map[string]int64{"a.bin": 3 << 20, "d/b.bin": 12345, "gone/c.bin": 5 << 20, "gone/e.bin": 700 << 10})
	if err := os.RemoveAll(filepath.Join(mnt, "gone")); err != nil {
		t.Fatal(err)
	}
	want := imgtest.HashTree(t, mnt)
	unmount()
	imgtest.WriteAt(t, disk, xStart, x)
	before := imgtest.SHA256File(t, disk)

	out, errOut, code := runPrezero(t, "map", "--json", disk)
	if code != 0 {
		t.Fatalf("map: exit %d: %s", code, errOut)
	}
	var m mapJSON
	if err := json.Unmarshal(out, &m); err != nil {
		t.Fatal(err)
	}
	if len(m.Partitions) != 2 {
		t.Fatalf("map: %+v", m)
	}
	p := m.Partitions[0]
	if p.FS != "xfs" || p.BlockSize != 4096 || !p.Zeroed || p.Zeroable < 30<<20 || p.Used+p.Zeroable != xSize {
		t.Fatalf("map: XFS partition %+v", p)
	}
	if m.Partitions[1].Zeroed {
		t.Fatalf("map: the raw partition is zeroed: %+v", m.Partitions[1])
	}
	text, _, _ := runPrezero(t, "map", disk)
	if !strings.Contains(string(text), " xfs ") || !strings.Contains(string(text), "zeroed") {
		t.Fatalf("map text:\n%s", text)
	}

	// The partition's stream is xfs_copy -d's copy of the partition.
	part := catFile(t, disk, "1")
	oracle := filepath.Join(dir, "xfs.copy")
	imgtest.RunXFS(t, "xfs_copy", "-d", x, oracle)
	if a, b := readFile(t, part), readFile(t, oracle); !bytes.Equal(a, b) {
		t.Fatalf("cat 1 differs from xfs_copy -d at byte %d", firstDiff(a, b))
	}
	// The whole disk: the partition zeroed the same way, the rest as is.
	whole := readFile(t, catFile(t, disk, "disk"))
	src := readFile(t, disk)
	if !bytes.Equal(whole[xStart:xStart+xSize], readFile(t, part)) ||
		!bytes.Equal(whole[:xStart], src[:xStart]) || !bytes.Equal(whole[rawStart:], src[rawStart:]) {
		t.Fatal("cat disk is not the zeroed partition inside the unchanged disk")
	}
	m2 := t.TempDir()
	imgtest.MountXFS(t, part, m2, "ro,norecovery", true)
	if got := imgtest.HashTree(t, m2); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("files through the stream differ:\n got %v\nwant %v", got, want)
	}
	if imgtest.SHA256File(t, disk) != before {
		t.Fatal("the source changed")
	}
}

// An XFS copied while mounted, right after an fsync'd write (a crash
// copy), passes through whole, and map says why.
func TestXFSDirtyLogPassesThrough(t *testing.T) {
	f, err := os.Open("../../xfsmap/testdata/crash.img.gz")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(t.TempDir(), "crash.img")
	o, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(o, zr); err != nil {
		t.Fatal(err)
	}
	o.Close()
	out, errOut, code := runPrezero(t, "map", img)
	if code != 0 || !strings.Contains(string(out), "pass-through: xfs: the log needs recovery") {
		t.Fatalf("map: exit %d\n%s%s", code, out, errOut)
	}
	stream, errOut, code := runPrezero(t, "cat", img)
	if code != 0 || !bytes.Equal(stream, readFile(t, img)) {
		t.Fatalf("cat of an XFS needing log recovery is not the source (exit %d): %s", code, errOut)
	}
}
