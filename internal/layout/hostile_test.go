package layout

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/prezero/prezero/internal/imgtest"
)

// sfdiskParts returns start and size in bytes of each partition that
// `sfdisk -d` lists, by number: the oracle for what a table holds.
func sfdiskParts(t *testing.T, img string, ss int64) map[int][2]int64 {
	t.Helper()
	out := imgtest.Run(t, "sfdisk", "-d", img)
	re := regexp.MustCompile(`(?m)(\d+) : start=\s*(\d+), size=\s*(\d+)`)
	got := map[int][2]int64{}
	for _, m := range re.FindAllStringSubmatch(out, -1) {
		n, _ := strconv.Atoi(m[1])
		s, _ := strconv.ParseInt(m[2], 10, 64)
		z, _ := strconv.ParseInt(m[3], 10, 64)
		got[n] = [2]int64{s * ss, z * ss}
	}
	return got
}

// sameAsSfdisk checks that l lists exactly the partitions sfdisk lists.
func sameAsSfdisk(t *testing.T, l *Layout, img string) {
	t.Helper()
	want := sfdiskParts(t, img, int64(l.SectorSize))
	if len(want) == 0 {
		t.Fatal("sfdisk lists no partitions")
	}
	got := map[int][2]int64{}
	for _, p := range l.Partitions {
		got[p.Number] = [2]int64{p.Start, p.Size}
		if p.Problem != "" {
			t.Errorf("partition %d: %s", p.Number, p.Problem)
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("partitions %v, sfdisk says %v", got, want)
	}
}

// A GPT with 256- or 512-byte entries is valid (UEFI: 128 * 2^n): it reads
// as sfdisk reads it.
func TestWideGPTEntries(t *testing.T) {
	for _, esz := range []int{256, 512} {
		t.Run(strconv.Itoa(esz), func(t *testing.T) {
			img := sfdiskImage(t, 8<<20, 512, "label: gpt\nsize=1M, type=L\nsize=2M, name=two\n")
			imgtest.WidenGPTEntries(t, img, 512, esz)
			l := readLayout(t, img)
			sameAsSfdisk(t, l, img)
			if l.Partitions[1].Name != "two" || l.Partitions[0].TypeName != "Linux filesystem" || len(l.Notes) != 0 {
				t.Fatalf("got %+v, notes %q", l.Partitions, l.Notes)
			}
			// The backup alone (primary header destroyed) reads the same.
			b, _ := os.ReadFile(img)
			b[512] ^= 0xFF
			os.WriteFile(img, b, 0o644)
			l = readLayout(t, img)
			if len(l.Partitions) != 2 || len(l.Notes) != 1 || !strings.Contains(l.Notes[0], "backup") {
				t.Fatalf("from backup: %+v, notes %q", l.Partitions, l.Notes)
			}
		})
	}
}

// Meta lists every table sector: the MBR and each EBR, or the protective
// MBR, both GPT headers and both entry arrays.
func TestMeta(t *testing.T) {
	const M = 1 << 20
	t.Run("mbr-logical", func(t *testing.T) {
		img := sfdiskImage(t, 64*M, 512, "label: dos\nstart=2048, size=20480, type=83\nstart=22528, type=5\nstart=24576, size=10240, type=83\nstart=36864, size=10240, type=7\n")
		l := readLayout(t, img)
		// Each 55 AA sector of the image is a boot record.
		b, _ := os.ReadFile(img)
		var want []Extent
		for off := 0; off < len(b); off += 512 {
			if b[off+510] == 0x55 && b[off+511] == 0xAA {
				what := "EBR"
				if off == 0 {
					what = "MBR"
				}
				want = append(want, Extent{int64(off), 512, what})
			}
		}
		if len(want) != 3 || fmt.Sprint(l.Meta) != fmt.Sprint(want) {
			t.Fatalf("meta %v, want %v", l.Meta, want)
		}
	})
	for _, ss := range []int{512, 4096} {
		t.Run(fmt.Sprintf("gpt-%d", ss), func(t *testing.T) {
			img := sfdiskImage(t, 64*M, ss, "label: gpt\nsize=10M, type=L\n")
			l := readLayout(t, img)
			s, last := int64(ss), 64*M/int64(ss)-1
			arr := 16384 / s // sfdisk's 128 entries of 128 bytes
			want := []Extent{{0, s, "protective MBR"}, {s, s, "primary GPT header"}, {2 * s, arr * s, "primary GPT entry array"},
				{last * s, s, "backup GPT header"}, {(last - arr) * s, arr * s, "backup GPT entry array"}}
			if fmt.Sprint(l.Meta) != fmt.Sprint(want) {
				t.Fatalf("meta %v\nwant %v", l.Meta, want)
			}
		})
	}
}

// A looping EBR chain is cut, and a note says where.
func TestEBRLoopNote(t *testing.T) {
	img := sfdiskImage(t, 64<<20, 512, "label: dos\nstart=2048, size=20480, type=83\nstart=22528, type=5\nstart=24576, size=10240, type=83\nstart=36864, size=10240, type=7\nstart=49152, size=10240, type=83\n")
	b, _ := os.ReadFile(img)
	// sfdisk puts the EBRs of partitions 6 and 7 at sectors 34816 and
	// 47104. Make the last one link back to the one before it: its second
	// entry, relative to the container's start (sector 22528).
	const ebr2, ebr3 = 34816 * 512, 47104 * 512
	if b[ebr3+510] != 0x55 || b[ebr2+510] != 0x55 {
		t.Fatal("no EBRs where sfdisk puts them")
	}
	link := b[ebr3+446+16:]
	link[4] = 0x05
	binary.LittleEndian.PutUint32(link[8:], 34816-22528)
	binary.LittleEndian.PutUint32(link[12:], 1)
	loop := filepath.Join(t.TempDir(), "loop.img")
	os.WriteFile(loop, b, 0o644)
	l := readLayout(t, loop)
	if len(l.Partitions) != 5 {
		t.Fatalf("partitions %+v", l.Partitions)
	}
	want := fmt.Sprintf("EBR chain of partition 2 cut after 3 logical partitions: EBR chain loops: the EBR at byte %d links back to the EBR at byte %d", ebr3, ebr2)
	if len(l.Notes) != 1 || l.Notes[0] != want || !strings.Contains(l.Partitions[1].Problem, "loops") {
		t.Fatalf("notes %q, want %q; container %q", l.Notes, want, l.Partitions[1].Problem)
	}
}

// extMagic recognises an ext superblock, as source's probe table does.
func extMagic(r io.ReaderAt, size int64) bool {
	var b [2]byte
	if size < 2048 {
		return false
	}
	r.ReadAt(b[:], 1024+56)
	return b[0] == 0x53 && b[1] == 0xEF
}

// An MBR written on a 4096-byte-sector disk counts 4 KiB sectors. A block
// device says so (Options.SectorSize); for an image file, 4096 is used when
// only it puts a filesystem at an entry's start.
func TestMBR4096(t *testing.T) {
	imgtest.Need(t, "mkfs.ext4")
	img := sfdiskImage(t, 32<<20, 4096, "label: dos\nstart=256, size=2048, type=83\nstart=2304, size=2048, type=83\n")
	fs := filepath.Join(t.TempDir(), "fs.img")
	imgtest.ZeroFile(t, fs, 8<<20)
	imgtest.Run(t, "mkfs.ext4", "-q", "-F", fs)
	imgtest.WriteAt(t, img, 2304*4096, fs)
	f, _ := os.Open(img)
	defer f.Close()
	for _, tc := range []struct {
		name string
		opt  Options
		ss   int
		note bool
	}{
		{"no-hint", Options{}, 512, false},
		{"device", Options{SectorSize: 4096}, 4096, false},
		{"guess", Options{Recognise: extMagic}, 4096, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := ReadOptions(f, 32<<20, tc.opt)
			if err != nil {
				t.Fatal(err)
			}
			if l.SectorSize != tc.ss || (len(l.Notes) > 0) != tc.note || l.Partitions[1].Start != 2304*int64(tc.ss) {
				t.Fatalf("sector %d, notes %q, %+v", l.SectorSize, l.Notes, l.Partitions)
			}
		})
	}
	// A filesystem at an entry's start read at 4096 is not enough when the
	// entries would then reach past the end of the source.
	small := filepath.Join(t.TempDir(), "small.img")
	imgtest.ZeroFile(t, small, 12<<20)
	copy4k := mbrSectorBytes(MBREntry{0, 0x83, 256, 2048}, MBREntry{0, 0x83, 2304, 2048})
	os.WriteFile(small, append(copy4k, make([]byte, 12<<20-512)...), 0o644)
	imgtest.WriteAt(t, small, 256*4096, fs)
	fsm, _ := os.Open(small)
	defer fsm.Close()
	if l, err := ReadOptions(fsm, 12<<20, Options{Recognise: extMagic}); err != nil || l.SectorSize != 512 || len(l.Notes) != 0 {
		t.Fatalf("past the end at 4096: %+v, %v", l, err)
	}
	// A 512-byte MBR with a filesystem at its entries is left at 512.
	img5 := sfdiskImage(t, 32<<20, 512, "label: dos\nstart=2048, size=16384, type=83\n")
	imgtest.WriteAt(t, img5, 2048*512, fs)
	f5, _ := os.Open(img5)
	defer f5.Close()
	if l, err := ReadOptions(f5, 32<<20, Options{Recognise: extMagic}); err != nil || l.SectorSize != 512 || len(l.Notes) != 0 {
		t.Fatalf("512: %+v, %v", l, err)
	}
}
