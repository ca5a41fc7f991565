package main

import (
	"encoding/binary"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/prezero/prezero/internal/imgtest"
)

// map and map --json say that a looping EBR chain was cut, and where, and
// which sector size the MBR was read with.
func TestMapEBRLoop(t *testing.T) {
	img := filepath.Join(t.TempDir(), "disk.img")
	imgtest.ZeroFile(t, img, 32<<20)
	imgtest.Partition(t, img, 512, "label: dos\nstart=2048, size=2048, type=83\nstart=4096, type=5\nstart=6144, size=2048, type=83\nstart=10240, size=2048, type=83\n")
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	link := b[8192*512+446+16:] // the EBR of partition 6 links back to itself
	link[4] = 0x05
	binary.LittleEndian.PutUint32(link[8:], 8192-4096)
	binary.LittleEndian.PutUint32(link[12:], 1)
	if err := os.WriteFile(img, b, 0o644); err != nil {
		t.Fatal(err)
	}
	const cut = "EBR chain of partition 2 cut after 2 logical partitions: EBR chain loops: the EBR at byte 4194304 links back to the EBR at byte 4194304"
	out, errOut, code := runPrezero(t, "map", img)
	if code != 0 || !strings.Contains(string(out), "note: "+cut+"\n") || !strings.Contains(string(out), "partition table: mbr (512-byte sectors)") {
		t.Fatalf("map exit %d:\n%s%s", code, out, errOut)
	}
	out, errOut, code = runPrezero(t, "map", "--json", img)
	var m mapJSON
	if code != 0 || json.Unmarshal(out, &m) != nil {
		t.Fatalf("map --json exit %d:\n%s%s", code, out, errOut)
	}
	if m.SectorSize != 512 || len(m.Notes) != 1 || m.Notes[0] != cut || len(m.Partitions) != 4 ||
		!strings.Contains(m.Partitions[1].Status, "loops") {
		t.Fatalf("map --json: %+v", m)
	}
}

// An MBR made on a 4096-byte-sector disk, read from an image file: map says
// which sector size it used and why, and zeroes the filesystem found there.
func TestMapMBR4096(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	imgtest.ZeroFile(t, img, 32<<20)
	imgtest.Partition(t, img, 4096, "label: dos\nstart=256, size=4096, type=83\n")
	fs := filepath.Join(dir, "fs.img")
	imgtest.Ext(t, fs, 16<<20, "-t", "ext4")
	imgtest.WriteAt(t, img, 256*4096, fs)
	out, errOut, code := runPrezero(t, "map", img)
	if code != 0 || !strings.Contains(string(out), "partition table: mbr (4096-byte sectors)\nnote: MBR read with 4096-byte sectors") ||
		!regexp.MustCompile(`(?m)^1\s+1048576\s+16\.0MiB\s+Linux\s+ext4 .* zeroed$`).Match(out) {
		t.Fatalf("map exit %d:\n%s%s", code, out, errOut)
	}
	out, _, code = runPrezero(t, "map", "--json", img)
	var m mapJSON
	if code != 0 || json.Unmarshal(out, &m) != nil || m.SectorSize != 4096 || !m.Partitions[0].Zeroed {
		t.Fatalf("map --json exit %d: %s", code, out)
	}
}

// A GPT with 512-byte entries: map and cat work.
func TestMapCatWideGPT(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	imgtest.ZeroFile(t, img, 24<<20)
	imgtest.Partition(t, img, 512, "label: gpt\nstart=2048, size=32768, type=L\n")
	imgtest.WidenGPTEntries(t, img, 512, 512)
	fs := filepath.Join(dir, "fs.img")
	imgtest.Ext(t, fs, 16<<20, "-t", "ext4")
	imgtest.WriteAt(t, img, 1<<20, fs)
	out, errOut, code := runPrezero(t, "map", "--json", img)
	var m mapJSON
	if code != 0 || json.Unmarshal(out, &m) != nil || len(m.Partitions) != 1 || !m.Partitions[0].Zeroed {
		t.Fatalf("map exit %d: %s%s", code, out, errOut)
	}
	want := imgtest.SHA256File(t, imgtest.Zerofree(t, fs))
	part := filepath.Join(dir, "part1.out")
	f, err := os.Create(part)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command(prezeroBin(t), "cat", img, "1")
	cmd.Stdout = f
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("cat: %v %s", err, stderr.String())
	}
	if got := imgtest.SHA256File(t, part); got != want {
		t.Fatal("cat 1 differs from zerofree's copy of the filesystem")
	}
}
