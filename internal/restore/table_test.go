package restore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prezero/prezero/freemap"
	"github.com/prezero/prezero/internal/imgtest"
	"github.com/prezero/prezero/internal/layout"
)

// GPT header fields (UEFI 2.10, 5.3.2) the corruption table writes.
const (
	gptHeaderSize = 12
	gptHeaderCRC  = 16
	gptMyLBA      = 24
	gptAlternate  = 32
	gptEntryLBA   = 72
	gptEntryCount = 80
	gptEntrySize  = 84
)

// sfdiskImage makes a zero-filled image of size bytes partitioned by the
// sfdisk script, with sector-byte logical sectors, and returns its bytes.
func sfdiskImage(t testing.TB, size int64, sector int, script string) []byte {
	t.Helper()
	img := filepath.Join(t.TempDir(), "disk.img")
	imgtest.ZeroFile(t, img, size)
	imgtest.Partition(t, img, sector, script)
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestGPTBackupMatchesSfdisk(t *testing.T) {
	for _, ss := range []int{512, 4096} {
		t.Run(map[int]string{512: "512", 4096: "4096"}[ss], func(t *testing.T) {
			disk := sfdiskImage(t, 64<<20, ss, "label: gpt\nstart=1MiB, size=8MiB\nstart=20MiB, size=30MiB, name=two\n")
			header := disk[:1<<20]
			tb, err := readTable(bytes.NewReader(header), int64(len(header)))
			if err != nil {
				t.Fatal(err)
			}
			if tb.scheme != "gpt" || tb.sectorSize != int64(ss) {
				t.Fatalf("scheme %s sector %d", tb.scheme, tb.sectorSize)
			}
			want := []tablePart{{1, 1 << 20, 8 << 20}, {2, 20 << 20, 30 << 20}}
			if len(tb.parts) != len(want) || tb.parts[0] != want[0] || tb.parts[1] != want[1] {
				t.Fatalf("parts %+v, want %+v", tb.parts, want)
			}
			if end := tb.gpt.End(); end != int64(len(disk)) {
				t.Errorf("GPT end %d, disk is %d", end, len(disk))
			}
			off, data := tb.gpt.Backup()
			if got := disk[off : off+int64(len(data))]; !bytes.Equal(got, data) {
				t.Errorf("regenerated backup GPT differs from sfdisk's at byte %d of %d", off+int64(firstDiff(got, data)), len(disk))
			}
			if off+int64(len(data)) != int64(len(disk)) {
				t.Errorf("backup ends at %d, disk at %d", off+int64(len(data)), len(disk))
			}
		})
	}
}

func TestMBRTable(t *testing.T) {
	disk := sfdiskImage(t, 32<<20, 512, "label: dos\nstart=2048, size=4096, type=83\nstart=8192, size=8192, type=7\n")
	tb, err := readTable(bytes.NewReader(disk[:1<<20]), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	want := []tablePart{{1, 2048 * 512, 4096 * 512}, {2, 8192 * 512, 8192 * 512}}
	if tb.scheme != "mbr" || len(tb.parts) != 2 || tb.parts[0] != want[0] || tb.parts[1] != want[1] {
		t.Fatalf("got %s %+v, want mbr %+v", tb.scheme, tb.parts, want)
	}
}

func TestMBRExtendedRefused(t *testing.T) {
	disk := sfdiskImage(t, 32<<20, 512, "label: dos\nstart=2048, size=4096, type=83\nstart=8192, size=16384, type=5\nstart=10240, size=4096, type=83\n")
	_, err := readTable(bytes.NewReader(disk[:1<<20]), 1<<20)
	if !errors.Is(err, freemap.ErrFormat) || !errors.Is(err, ErrExtended) || !strings.Contains(err.Error(), "EBR") {
		t.Fatalf("err = %v, want a clear refusal of the extended partition", err)
	}
}

// TestTableCorrupt damages one field at a time: each must be an error, never
// a panic or a table that points outside the header.
func TestTableCorrupt(t *testing.T) {
	disk := sfdiskImage(t, 64<<20, 512, "label: gpt\nstart=1MiB, size=8MiB\n")
	le := binary.LittleEndian
	fixCRC := func(h []byte) {
		hdr := h[512 : 512+92]
		le.PutUint32(hdr[gptHeaderCRC:], 0)
		le.PutUint32(hdr[gptHeaderCRC:], crc32.ChecksumIEEE(hdr))
	}
	tests := []struct {
		name string
		mess func(h []byte)
	}{
		{"header byte flipped", func(h []byte) { h[512+60] ^= 1 }},
		{"entry byte flipped", func(h []byte) { h[1024+40] ^= 1 }},
		{"huge entry count", func(h []byte) { le.PutUint32(h[512+gptEntryCount:], 1<<30); fixCRC(h) }},
		{"entry size 100", func(h []byte) { le.PutUint32(h[512+gptEntrySize:], 100); fixCRC(h) }},
		{"entries outside header", func(h []byte) { le.PutUint64(h[512+gptEntryLBA:], 1<<40); fixCRC(h) }},
		{"header size 9999", func(h []byte) { le.PutUint32(h[512+gptHeaderSize:], 9999); fixCRC(h) }},
		{"MyLBA 7", func(h []byte) { le.PutUint64(h[512+gptMyLBA:], 7); fixCRC(h) }},
		{"AlternateLBA inside usable", func(h []byte) { le.PutUint64(h[512+gptAlternate:], 100); fixCRC(h) }},
		{"AlternateLBA huge", func(h []byte) { le.PutUint64(h[512+gptAlternate:], 1<<63); fixCRC(h) }},
		{"protective MBR, no GPT", func(h []byte) { copy(h[512:], "XXXXXXXX") }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := append([]byte(nil), disk[:1<<20]...)
			tc.mess(h)
			if _, err := readTable(bytes.NewReader(h), int64(len(h))); !errors.Is(err, freemap.ErrFormat) {
				t.Fatalf("err = %v, want ErrFormat", err)
			}
		})
	}
}

// TestGPTRoundTrip decodes a disk's table with layout (what map and backup
// see), regenerates the backup GPT with restore's writer from header.img,
// and reads the disk back from that backup alone: the partitions must be
// the same, for 128-, 256- and 512-byte entries and both sector sizes.
func TestGPTRoundTrip(t *testing.T) {
	for _, tc := range []struct{ ss, esz int }{{512, 128}, {512, 256}, {512, 512}, {4096, 128}, {4096, 256}} {
		t.Run(fmt.Sprintf("%d-%d", tc.ss, tc.esz), func(t *testing.T) {
			img := filepath.Join(t.TempDir(), "disk.img")
			imgtest.ZeroFile(t, img, 64<<20)
			imgtest.Partition(t, img, tc.ss, "label: gpt\nstart=1MiB, size=8MiB, name=one\nstart=20MiB, size=30MiB, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7\n")
			if tc.esz != 128 {
				imgtest.WidenGPTEntries(t, img, tc.ss, tc.esz)
			}
			disk, err := os.ReadFile(img)
			if err != nil {
				t.Fatal(err)
			}
			want, err := layout.Read(bytes.NewReader(disk), int64(len(disk)))
			if err != nil || want.SectorSize != tc.ss || len(want.Partitions) != 2 {
				t.Fatalf("layout: %+v, %v", want, err)
			}
			tb, err := readTable(bytes.NewReader(disk[:1<<20]), 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			for i, p := range want.Partitions {
				if tp := tb.parts[i]; tp.Number != p.Number || tp.Start != p.Start || tp.Size != p.Size {
					t.Errorf("restore reads %+v, layout %+v", tp, p)
				}
			}
			off, data := tb.gpt.Backup()
			if !bytes.Equal(disk[off:off+int64(len(data))], data) {
				t.Errorf("regenerated backup GPT differs from sfdisk's at byte %d", off+int64(firstDiff(disk[off:], data)))
			}
			// The regenerated backup alone: no primary, the rest zero.
			rebuilt := make([]byte, len(disk))
			copy(rebuilt, disk[:512]) // the protective MBR
			copy(rebuilt[off:], data)
			got, err := layout.Read(bytes.NewReader(rebuilt), int64(len(rebuilt)))
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got.Partitions) != fmt.Sprint(want.Partitions) || len(got.Notes) != 1 {
				t.Fatalf("from the regenerated backup: %+v (notes %q), want %+v", got.Partitions, got.Notes, want.Partitions)
			}
		})
	}
}
