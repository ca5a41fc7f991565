package source

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/prezero/prezero/extfsmap"
	"github.com/prezero/prezero/freemap"
	"github.com/prezero/prezero/internal/imgtest"
	"github.com/prezero/prezero/internal/layout"
	"github.com/prezero/prezero/stream"
)

// sfdiskList returns the partition lines of `sfdisk -d img`, without the
// device name: what a restored disk must still list.
func sfdiskList(t *testing.T, img string) []string {
	t.Helper()
	out := imgtest.Run(t, "sfdisk", "-d", img)
	var lines []string
	for _, m := range regexp.MustCompile(`(?m)^\S+?(\d+) : (.*)$`).FindAllStringSubmatch(out, -1) {
		lines = append(lines, m[1]+": "+m[2])
	}
	return lines
}

// writeStream writes r to a new file and returns its path.
func writeStream(t *testing.T, r *stream.Reader) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "stream.img")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := stream.Copy(context.Background(), f, r); err != nil {
		t.Fatal(err)
	}
	return path
}

// putFS writes the filesystem image fs into img at byte off, keeping the
// table sectors keep of img as they were (a table placed inside the
// filesystem's free space), and checks that ext really calls those
// sectors free: otherwise the test could not fail.
func putFS(t *testing.T, img string, off int64, fs string, keep []int64, ss int64) {
	t.Helper()
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	var saved [][]byte
	for _, k := range keep {
		saved = append(saved, bytes.Clone(b[k:k+ss]))
	}
	fsb, err := os.ReadFile(fs)
	if err != nil {
		t.Fatal(err)
	}
	v, err := extfsmap.Read(bytes.NewReader(fsb), int64(len(fsb)))
	if err != nil {
		t.Fatal(err)
	}
	copy(b[off:], fsb)
	for i, k := range keep {
		if k < off || k+ss > off+int64(len(fsb)) || !v.Free.IsFree(k-off) || !v.Free.IsFree(k-off+ss-1) {
			t.Fatalf("table sector at byte %d is not in the filesystem's free space", k)
		}
		copy(b[k:], saved[i])
	}
	if err := os.WriteFile(img, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// checkMetaKept opens img and checks that every table sector reads from
// the disk stream and from its partition's stream as in the source, that
// the partition holding it is still zeroed, and that the restored disk
// lists the same partitions (sfdisk) with no damaged table (layout).
func checkMetaKept(t *testing.T, img string, holder int) {
	t.Helper()
	want := sfdiskList(t, img)
	src, err := Open(img, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	orig, _ := os.ReadFile(img)
	restored := writeStream(t, src.Disk())
	got, _ := os.ReadFile(restored)
	for _, m := range src.Layout.Meta {
		if !bytes.Equal(got[m.Start:m.Start+m.Size], orig[m.Start:m.Start+m.Size]) {
			t.Errorf("%s at byte %d is not served from the source", m.What, m.Start)
		}
		for _, p := range src.Files() {
			if p.Start <= m.Start && m.Start+m.Size <= p.Start+p.Stream.Size() {
				b := make([]byte, m.Size)
				if _, err := p.Stream.ReadAt(b, m.Start-p.Start); err != nil || !bytes.Equal(b, orig[m.Start:m.Start+m.Size]) {
					t.Errorf("part%d: %s at byte %d is not served from the source (%v)", p.Number, m.What, m.Start, err)
				}
			}
		}
	}
	for _, p := range src.Parts {
		if p.Number == holder && (!p.Zeroed || p.Free.FreeBytes() == 0) {
			t.Fatalf("part%d: %s, %d bytes zeroed", p.Number, p.Status(), p.Free.FreeBytes())
		}
	}
	if l := sfdiskList(t, restored); fmt.Sprint(l) != fmt.Sprint(want) {
		t.Errorf("the restored disk lists\n%q\nthe source\n%q", l, want)
	}
	if l := readLayout(t, restored); len(l.Notes) != 0 || len(l.Partitions) != len(src.Layout.Partitions) {
		t.Errorf("restored layout %+v, notes %q", l.Partitions, l.Notes)
	}
}

// Partition-table sectors inside a partition's free space are served from
// the source, never zeroed.
func TestTableInsideFreeSpace(t *testing.T) {
	imgtest.Need(t, "sfdisk", "mkfs.ext4", "debugfs")
	const s = 512
	dir := t.TempDir()
	mbrScript := "label: dos\nstart=2048, size=20480, type=83\nstart=22528, type=5\nstart=24576, size=10240, type=83\nstart=36864, size=10240, type=83\n"
	const ebr5, ebr6 = 22528 * s, 34816 * s // where sfdisk puts the EBRs

	t.Run("ebr-inside-logical", func(t *testing.T) {
		img := filepath.Join(dir, "ebr5.img")
		imgtest.RandomFile(t, img, 64<<20)
		imgtest.Partition(t, img, s, mbrScript)
		// Partition 5 grows to the start of partition 6: the EBR of
		// partition 6 now lies inside it.
		patchU32(t, img, ebr5+446+12, 36864-24576)
		fs := filepath.Join(dir, "fs5.img")
		imgtest.Ext(t, fs, (36864-24576)*s, "-t", "ext4", "-b", "1024")
		putFS(t, img, 24576*s, fs, []int64{ebr6}, s)
		checkMetaKept(t, img, 5)
	})
	t.Run("primary-over-ebr", func(t *testing.T) {
		img := filepath.Join(dir, "p1.img")
		imgtest.RandomFile(t, img, 64<<20)
		imgtest.Partition(t, img, s, mbrScript)
		// Primary 1 grows over the extended container's first EBR.
		patchU32(t, img, 446+12, 24576-2048)
		fs := filepath.Join(dir, "fs1.img")
		imgtest.Ext(t, fs, (24576-2048)*s, "-t", "ext4", "-b", "1024")
		putFS(t, img, 2048*s, fs, []int64{ebr5}, s)
		checkMetaKept(t, img, 1)
	})
	t.Run("gpt-array-inside-partition", func(t *testing.T) {
		img := filepath.Join(dir, "gpt.img")
		imgtest.RandomFile(t, img, 32<<20)
		imgtest.Partition(t, img, s, "label: gpt\nstart=2048, size=16384, type=L\nstart=18432, size=8192, type=L\n")
		// Move the primary entry array (32 sectors at LBA 2) to LBA 12288,
		// inside partition 1, as the header's PartitionEntryLBA allows.
		b, _ := os.ReadFile(img)
		const arr = 12288
		copy(b[arr*s:], b[2*s:34*s])
		le := binary.LittleEndian
		h := b[s : s+92]
		le.PutUint64(h[72:], arr)
		le.PutUint32(h[16:], 0)
		le.PutUint32(h[16:], crc32.ChecksumIEEE(h))
		os.WriteFile(img, b, 0o644)
		fs := filepath.Join(dir, "fsg.img")
		imgtest.Ext(t, fs, 16384*s, "-t", "ext4", "-b", "1024")
		var keep []int64
		for i := int64(0); i < 32; i++ {
			keep = append(keep, (arr+i)*s)
		}
		putFS(t, img, 2048*s, fs, keep, s)
		if l := readLayout(t, img); len(l.Notes) != 0 || len(l.Partitions) != 2 {
			t.Fatalf("crafted table: %+v, notes %q", l.Partitions, l.Notes)
		}
		checkMetaKept(t, img, 1)
	})
}

func patchU32(t *testing.T, img string, off int64, v uint32) {
	t.Helper()
	f, err := os.OpenFile(img, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], v)
	if _, err := f.WriteAt(b[:], off); err != nil {
		t.Fatal(err)
	}
}

// The header is the bytes before the first partition table entry's start,
// even when that partition is cut off by the end of the source.
func TestTruncatedHeader(t *testing.T) {
	imgtest.Need(t, "sfdisk")
	for _, tc := range []struct {
		name       string
		cut, first int64
	}{
		{"inside-first", 3 << 20, 1 << 20},
		{"before-first", 768 << 10, 768 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := filepath.Join(t.TempDir(), "disk.img")
			imgtest.RandomFile(t, img, 16<<20)
			imgtest.Partition(t, img, 512, "label: dos\nstart=2048, size=8192, type=83\nstart=10240, size=8192, type=83\n")
			if err := os.Truncate(img, tc.cut); err != nil {
				t.Fatal(err)
			}
			src, err := Open(img, Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			if src.Header().Size() != tc.first {
				t.Fatalf("header is %d bytes, want %d", src.Header().Size(), tc.first)
			}
			orig, _ := os.ReadFile(img)
			compare(t, "header", src.Header(), orig[:tc.first])
		})
	}
}

// An EBR chain that loops is cut; the container's status and the
// layout's notes say where.
func TestEBRLoopReported(t *testing.T) {
	imgtest.Need(t, "sfdisk")
	img := filepath.Join(t.TempDir(), "disk.img")
	imgtest.RandomFile(t, img, 32<<20)
	imgtest.Partition(t, img, 512, "label: dos\nstart=2048, size=2048, type=83\nstart=4096, type=5\nstart=6144, size=2048, type=83\nstart=10240, size=2048, type=83\n")
	// The EBR of partition 6 (sector 8192) links back to itself.
	b, _ := os.ReadFile(img)
	if b[8192*512+510] != 0x55 {
		t.Fatal("no EBR at sector 8192")
	}
	link := b[8192*512+446+16:]
	link[4] = 0x05
	binary.LittleEndian.PutUint32(link[8:], 8192-4096)
	binary.LittleEndian.PutUint32(link[12:], 1)
	os.WriteFile(img, b, 0o644)
	src, err := Open(img, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	cut := fmt.Sprintf("the EBR at byte %d links back to the EBR at byte %d", 8192*512, 8192*512)
	if len(src.Layout.Notes) != 1 || !strings.Contains(src.Layout.Notes[0], "cut") || !strings.Contains(src.Layout.Notes[0], cut) {
		t.Errorf("notes %q, want the cut at %q", src.Layout.Notes, cut)
	}
	if st := src.Parts[1].Status(); !src.Parts[1].Container || !strings.Contains(st, cut) {
		t.Errorf("container status %q", st)
	}
	if len(src.Parts) != 4 {
		t.Errorf("%d partitions", len(src.Parts))
	}
}

// An MBR made for 4096-byte sectors: a 4Kn block device says so
// (BLKSSZGET); the same image as a file is read at 4096 because only that
// puts filesystems at the entries' starts.
func TestMBR4096(t *testing.T) {
	fss := testFilesystems(t)
	imgtest.Need(t, "losetup")
	img := filepath.Join(t.TempDir(), "disk.img")
	imgtest.RandomFile(t, img, 64<<20)
	imgtest.Partition(t, img, 4096, "label: dos\nstart=256, size=4096, type=83\nstart=4352, size=6144, type=7\n")
	imgtest.WriteAt(t, img, 256*4096, fss["ext2-1k"].img)
	imgtest.WriteAt(t, img, 4352*4096, fss["ntfs-4k"].img)
	want, _ := os.ReadFile(img)
	copy(want[256*4096:], readAll(t, fss["ext2-1k"].oracle))
	copy(want[4352*4096:], readAll(t, fss["ntfs-4k"].oracle))

	dev := strings.TrimSpace(imgtest.Run(t, "losetup", "-f", "--show", "-r", "--sector-size", "4096", img))
	t.Cleanup(func() { imgtest.Detach(t, dev, img) })
	for _, tc := range []struct {
		name, path string
		note       bool
	}{{"device", dev, false}, {"file", img, true}} {
		t.Run(tc.name, func(t *testing.T) {
			src, err := Open(tc.path, Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			if src.Layout.SectorSize != 4096 || (len(src.Layout.Notes) == 1) != tc.note {
				t.Fatalf("sector size %d, notes %q", src.Layout.SectorSize, src.Layout.Notes)
			}
			for _, p := range src.Parts {
				if !p.Zeroed {
					t.Errorf("part%d at %d: %s", p.Number, p.Start, p.Status())
				}
			}
			compare(t, "disk", src.Disk(), want)
		})
	}
}

func TestKeepMeta(t *testing.T) {
	b := freemap.NewBuilder(100)
	b.Add(0, 40)
	b.Add(50, 50)
	meta := []layout.Extent{{Start: 1010, Size: 5}, {Start: 1030, Size: 30}, {Start: 1095, Size: 100}, {Start: 900, Size: 102}}
	got := keepMeta(b.Map(), 1000, meta)
	want := "[{2 8} {15 15} {60 35}]"
	if fmt.Sprint(got.Extents()) != want || got.Size() != 100 {
		t.Fatalf("got %v, want %s", got.Extents(), want)
	}
}
