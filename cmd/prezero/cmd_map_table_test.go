package main

import (
	"encoding/binary"
	"encoding/json"
	"os"
	"path/filepath"
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
