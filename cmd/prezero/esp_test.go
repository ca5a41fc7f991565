package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prezero/prezero/internal/imgtest"
)

// tskZeroed returns the filesystem image at path with every sector The
// Sleuth Kit's blkls calls free replaced by zeros: what prezero must serve.
func tskZeroed(t *testing.T, fstype, path string, sector int) (zeroed []byte, freeBytes int64) {
	t.Helper()
	b := readFile(t, path)
	for n, free := range imgtest.Blkls(t, fstype, path) {
		if free {
			clear(b[n*sector : (n+1)*sector])
			freeBytes += int64(sector)
		}
	}
	return b, freeBytes
}

// TestGPTWithESP: a GPT disk with an EFI system partition (FAT32), an exFAT
// data partition and an unknown one. map names both filesystems and counts
// what TSK counts; cat serves exactly TSK's zeroing of both, the unknown
// partition and everything outside the partitions unchanged; the ESP's
// files read back through mtools from the stream.
func TestGPTWithESP(t *testing.T) {
	imgtest.NeedRoot(t) // the exFAT files are written through exfat-fuse on a loop device
	imgtest.Need(t, "sfdisk", "blkls", "fsck.fat", "mtype")
	const (
		espStart, espSize = 1 << 20, 40 << 20
		exStart, exSize   = espStart + espSize, 16 << 20
		rawStart, rawSize = exStart + exSize, 8 << 20
		diskSize          = rawStart + rawSize + 1<<20
	)
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	imgtest.RandomFile(t, img, diskSize)
	imgtest.Partition(t, img, 512, fmt.Sprintf("label: gpt\nstart=%d,size=%d,type=U\nstart=%d,size=%d,type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7\nstart=%d,size=%d,type=L\n",
		espStart/512, espSize/512, exStart/512, exSize/512, rawStart/512, rawSize/512))
	esp := filepath.Join(dir, "esp.img")
	hashes := imgtest.FAT(t, esp, espSize, "-F", "32", "-s", "1", "-n", "ESP")
	imgtest.WriteAt(t, img, espStart, esp)
	ex := filepath.Join(dir, "ex.img")
	imgtest.ExFAT(t, ex, exSize, 0)
	imgtest.WriteAt(t, img, exStart, ex)
	before := imgtest.SHA256File(t, img)

	out, errOut, code := runPrezero(t, "map", "--json", img)
	if code != 0 {
		t.Fatalf("map exit %d: %s", code, errOut)
	}
	var m mapJSON
	if err := json.Unmarshal(out, &m); err != nil {
		t.Fatalf("map --json: %v\n%s", err, out)
	}
	espWant, espFree := tskZeroed(t, "fat", esp, 512)
	exWant, exFree := tskZeroed(t, "exfat", ex, 512)
	if len(m.Partitions) != 3 {
		t.Fatalf("%d partitions: %+v", len(m.Partitions), m)
	}
	for i, want := range []struct {
		fs    string
		block int
		free  int64
	}{{"vfat", 512, espFree}, {"exfat", 4096, exFree}, {"", 0, 0}} {
		p := m.Partitions[i]
		if p.FS != want.fs || p.BlockSize != want.block || p.Zeroable != want.free || p.Zeroed != (want.fs != "") {
			t.Errorf("part%d: fs %q block %d zeroable %d zeroed %v (%s); want %q %d %d", p.Number, p.FS, p.BlockSize, p.Zeroable, p.Zeroed, p.Status, want.fs, want.block, want.free)
		}
	}
	text, _, _ := runPrezero(t, "map", img)
	t.Logf("prezero map:\n%s", text)
	for _, row := range []string{"EFI System", "vfat   512", "exfat  4096"} {
		if !strings.Contains(string(text), row) {
			t.Errorf("map output has no %q:\n%s", row, text)
		}
	}

	stream := catFile(t, img, "disk")
	got := readFile(t, stream)
	want := readFile(t, img)
	copy(want[espStart:], espWant)
	copy(want[exStart:], exWant)
	if i := bytes.Compare(got, want); i != 0 {
		for k := range got {
			if got[k] != want[k] {
				t.Fatalf("cat differs from the TSK-zeroed disk at byte %d", k)
			}
		}
		t.Fatalf("cat is %d bytes, want %d", len(got), len(want))
	}
	// The ESP in the stream: fsck.fat is happy and every file is intact.
	part := filepath.Join(dir, "esp.cat")
	if err := os.WriteFile(part, got[espStart:espStart+espSize], 0o644); err != nil {
		t.Fatal(err)
	}
	imgtest.Run(t, "fsck.fat", "-n", part)
	imgtest.CheckFATFiles(t, part, hashes)
	p1 := readFile(t, catFile(t, img, "1"))
	if !bytes.Equal(p1, got[espStart:espStart+espSize]) {
		t.Error("cat 1 differs from the ESP in cat disk")
	}
	if imgtest.SHA256File(t, img) != before {
		t.Fatal("the source changed")
	}
}
