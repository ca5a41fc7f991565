package layout

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prezero/prezero/internal/imgtest"
)

// sfdiskImage makes a size-byte zero image and partitions it with script.
// With sector 4096 it goes through a loop device of that logical sector size.
func sfdiskImage(t *testing.T, size int64, sector int, script string) string {
	t.Helper()
	img := filepath.Join(t.TempDir(), "disk.img")
	imgtest.ZeroFile(t, img, size)
	imgtest.Partition(t, img, sector, script)
	return img
}

func readLayout(t *testing.T, img string) *Layout {
	t.Helper()
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	l, err := Read(f, fi.Size())
	if err != nil {
		t.Fatalf("Read(%s): %v", img, err)
	}
	return l
}

type want struct {
	num         int
	start, size int64
	container   bool
	problem     bool
}

func TestRealTables(t *testing.T) {
	imgtest.Need(t, "sfdisk")
	const M = 1 << 20
	tests := []struct {
		name   string
		sector int
		script string
		scheme Scheme
		want   []want
	}{
		{"mbr-logical", 512,
			"label: dos\nstart=2048, size=20480, type=83\nstart=22528, type=5\nstart=24576, size=10240, type=83\nstart=36864, size=10240, type=7\n",
			MBR, []want{{1, M, 10 * M, false, false}, {2, 22528 * 512, 108544 * 512, true, false},
				{5, 24576 * 512, 5 * M, false, false}, {6, 36864 * 512, 5 * M, false, false}}},
		{"mbr-primary", 512, "label: dos\nsize=10M, type=83\nsize=10M, type=7\nsize=10M, type=83\n",
			MBR, []want{{1, M, 10 * M, false, false}, {2, 11 * M, 10 * M, false, false}, {3, 21 * M, 10 * M, false, false}}},
		{"gpt-512", 512, "label: gpt\nsize=10M, type=L\nsize=10M, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7\n",
			GPT, []want{{1, M, 10 * M, false, false}, {2, 11 * M, 10 * M, false, false}}},
		{"gpt-4096", 4096, "label: gpt\nsize=10M, type=L\nsize=10M, type=L\n",
			GPT, []want{{1, M, 10 * M, false, false}, {2, 11 * M, 10 * M, false, false}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			img := sfdiskImage(t, 64*M, tc.sector, tc.script)
			l := readLayout(t, img)
			if l.Scheme != tc.scheme || l.SectorSize != tc.sector {
				t.Fatalf("scheme %s/%d, want %s/%d", l.Scheme, l.SectorSize, tc.scheme, tc.sector)
			}
			if len(l.Partitions) != len(tc.want) {
				t.Fatalf("got %d partitions %+v, want %d", len(l.Partitions), l.Partitions, len(tc.want))
			}
			for i, w := range tc.want {
				p := l.Partitions[i]
				if p.Number != w.num || p.Start != w.start || p.Size != w.size || p.Container != w.container || (p.Problem != "") != w.problem {
					t.Errorf("partition %d = %+v, want %+v", i, p, w)
				}
			}
		})
	}
}

func TestBare(t *testing.T) {
	// A bare NTFS boot sector carries 0x55AA and boot code where MBR entries
	// would be: it must not be read as an MBR.
	sec := make([]byte, 4096)
	copy(sec[3:], "NTFS    ")
	for i := 446; i < 510; i++ {
		sec[i] = byte(i)
	}
	sec[510], sec[511] = 0x55, 0xAA
	l, err := Read(bytes.NewReader(sec), int64(len(sec)))
	if err != nil || l.Scheme != Bare || len(l.Partitions) != 1 || l.Partitions[0].Size != 4096 {
		t.Fatalf("got %+v, %v; want one bare partition", l, err)
	}
	// Zeros (an ext filesystem's boot block) are bare too.
	l, err = Read(bytes.NewReader(make([]byte, 8192)), 8192)
	if err != nil || l.Scheme != Bare {
		t.Fatalf("zeros: got %+v, %v", l, err)
	}
	// Shorter than a sector.
	l, err = Read(bytes.NewReader(make([]byte, 100)), 100)
	if err != nil || l.Scheme != Bare || l.Partitions[0].Size != 100 {
		t.Fatalf("tiny: got %+v, %v", l, err)
	}
}

// mbrSectorBytes builds an MBR or EBR sector from entries.
func mbrSectorBytes(entries ...MBREntry) []byte {
	sec := make([]byte, 512)
	for i, e := range entries {
		b := sec[mbrEntries+i*mbrEntrySize:]
		b[0], b[4] = e.Status, e.Type
		binary.LittleEndian.PutUint32(b[8:], e.Start)
		binary.LittleEndian.PutUint32(b[12:], e.Sectors)
	}
	sec[510], sec[511] = 0x55, 0xAA
	return sec
}

func TestHostileMBR(t *testing.T) {
	const size = 1 << 20
	t.Run("past-end", func(t *testing.T) {
		img := make([]byte, size)
		copy(img, mbrSectorBytes(MBREntry{0, 0x83, 2048, 4096}))
		l, err := Read(bytes.NewReader(img), size)
		if err != nil || len(l.Partitions) != 1 || !strings.Contains(l.Partitions[0].Problem, "past the end") {
			t.Fatalf("got %+v, %v", l, err)
		}
		s, n := l.Partitions[0].Clip(size)
		if s != 2048*512 || n != size-2048*512 {
			t.Fatalf("clip = %d,%d", s, n)
		}
	})
	t.Run("ebr-loop", func(t *testing.T) {
		img := make([]byte, size)
		copy(img, mbrSectorBytes(MBREntry{0, 0x05, 100, 1000}))
		// EBR at sector 100 points at itself as the next EBR.
		copy(img[100*512:], mbrSectorBytes(MBREntry{0, 0x83, 10, 20}, MBREntry{0, 0x05, 50, 50}))
		copy(img[150*512:], mbrSectorBytes(MBREntry{0, 0x83, 10, 20}, MBREntry{0, 0x05, 50, 50}))
		l, err := Read(bytes.NewReader(img), size)
		if err != nil {
			t.Fatal(err)
		}
		if len(l.Partitions) != 3 || !strings.Contains(l.Partitions[0].Problem, "loops") {
			t.Fatalf("got %+v", l.Partitions)
		}
	})
	t.Run("ebr-outside", func(t *testing.T) {
		img := make([]byte, size)
		copy(img, mbrSectorBytes(MBREntry{0, 0x05, 100, 100}))
		copy(img[100*512:], mbrSectorBytes(MBREntry{0, 0x83, 10, 20}, MBREntry{0, 0x05, 5000, 50}))
		l, err := Read(bytes.NewReader(img), size)
		if err != nil || len(l.Partitions) != 2 || !strings.Contains(l.Partitions[0].Problem, "outside") {
			t.Fatalf("got %+v, %v", l, err)
		}
	})
	t.Run("logical-outside-container", func(t *testing.T) {
		img := make([]byte, size)
		copy(img, mbrSectorBytes(MBREntry{0, 0x05, 100, 100}))
		copy(img[100*512:], mbrSectorBytes(MBREntry{0, 0x83, 10, 500}))
		l, err := Read(bytes.NewReader(img), size)
		if err != nil || len(l.Partitions) != 2 || l.Partitions[1].Problem == "" {
			t.Fatalf("got %+v, %v", l, err)
		}
	})
}

func TestHostileGPT(t *testing.T) {
	imgtest.Need(t, "sfdisk")
	img := sfdiskImage(t, 8<<20, 512, "label: gpt\nsize=1M, type=L\n")
	orig, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	// A huge entry count in both headers must not allocate or panic.
	b := append([]byte(nil), orig...)
	binary.LittleEndian.PutUint32(b[512+gptEntryNumOff:], 1<<30)
	last := len(b) - 512
	binary.LittleEndian.PutUint32(b[last+gptEntryNumOff:], 1<<30)
	if _, err := Read(bytes.NewReader(b), int64(len(b))); err == nil {
		t.Fatal("huge entry count accepted")
	}
	// A corrupt primary falls back to the backup GPT, and says so.
	b = append([]byte(nil), orig...)
	b[512+40] ^= 0xFF
	l, err := Read(bytes.NewReader(b), int64(len(b)))
	if err != nil || len(l.Partitions) != 1 || len(l.Notes) == 0 {
		t.Fatalf("backup GPT: %+v, %v", l, err)
	}
}

// FuzzRead checks that no table panics Read, that partitions it returns
// without a Problem and every metadata extent lie inside the source, and
// that any primary GPT ReadGPT accepts round-trips through the backup
// writer: the regenerated backup decodes to the same entries.
func FuzzRead(f *testing.F) {
	f.Add(mbrSectorBytes(MBREntry{0, 0x83, 1, 10}, MBREntry{0, 0x05, 20, 100}))
	for _, name := range []string{"testdata/mbr-logical.bin", "testdata/gpt.bin", "testdata/gpt-wide.bin"} {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		size := int64(len(b))
		l, err := Read(bytes.NewReader(b), size)
		if err == nil {
			for _, p := range l.Partitions {
				if p.Problem == "" && (p.Start < 0 || p.Size <= 0 || p.End() > size) {
					t.Fatalf("partition %+v outside a %d-byte source", p, size)
				}
			}
			for _, m := range l.Meta {
				if m.Start < 0 || m.Size <= 0 || m.Start+m.Size > size {
					t.Fatalf("metadata %+v outside a %d-byte source", m, size)
				}
			}
		}
		for _, ss := range []int{512, 4096} {
			g, err := ReadGPT(bytes.NewReader(b), size, ss, 1)
			if err != nil || !g.BackupFits() || g.End() > 16<<20 {
				continue
			}
			off, data := g.Backup()
			if off <= 0 || off+int64(len(data)) != g.End() {
				t.Fatalf("backup at %d (%d bytes), end %d", off, len(data), g.End())
			}
			disk := make([]byte, g.End())
			copy(disk[off:], data)
			bg, err := ReadGPT(bytes.NewReader(disk), g.End(), ss, g.Header.AlternateLBA)
			if err != nil {
				t.Fatalf("regenerated backup: %v", err)
			}
			if fmt.Sprint(bg.Entries) != fmt.Sprint(g.Entries) || bg.Header.AlternateLBA != 1 {
				t.Fatalf("backup entries %+v, primary %+v", bg.Entries, g.Entries)
			}
		}
	})
}

// A GPT entry that covers the table itself (outside the usable LBAs, with
// valid CRCs) passes through: zeroing "free" blocks there would destroy
// the partition table.
func TestGPTEntryOverTable(t *testing.T) {
	imgtest.Need(t, "sfdisk")
	img := sfdiskImage(t, 8<<20, 512, "label: gpt\nsize=1M, type=L\n")
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	hdr := b[512:]
	entries := b[binary.LittleEndian.Uint64(hdr[gptEntryLBAOff:])*512:]
	n := binary.LittleEndian.Uint32(hdr[gptEntryNumOff:]) * binary.LittleEndian.Uint32(hdr[gptEntrySzOff:])
	binary.LittleEndian.PutUint64(entries[32:], 1) // first LBA of entry 1
	binary.LittleEndian.PutUint32(hdr[88:], crc32.ChecksumIEEE(entries[:n]))
	binary.LittleEndian.PutUint32(hdr[16:], 0)
	binary.LittleEndian.PutUint32(hdr[16:], crc32.ChecksumIEEE(hdr[:92]))
	l, err := Read(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Partitions) != 1 || l.Partitions[0].Start != 512 || !strings.Contains(l.Partitions[0].Problem, "usable area") {
		t.Fatalf("got %+v", l.Partitions)
	}
}
