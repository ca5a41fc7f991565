package ntfsmap

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/prezero/prezero/internal/imgtest"
)

// firstRun returns the LCN of the first run of the $DATA runlist that
// `ntfsinfo -v` prints for inode ino (or path, with -F).
func firstRun(t *testing.T, img string, args ...string) int64 {
	t.Helper()
	out := imgtest.Run(t, "ntfsinfo", append(append([]string{"-v"}, args...), img)...)
	i := strings.Index(out, "Dumping attribute $DATA")
	if i < 0 {
		t.Fatalf("ntfsinfo %v: no $DATA attribute:\n%s", args, out)
	}
	m := regexp.MustCompile(`Runlist:\s+VCN\s+LCN\s+Length\s+0x[0-9a-f]+\s+0x([0-9a-f]+)\s+0x[0-9a-f]+`).FindStringSubmatch(out[i:])
	if m == nil {
		t.Fatalf("ntfsinfo %v: no runlist for $DATA:\n%s", args, out[i:])
	}
	lcn, err := strconv.ParseInt(m[1], 16, 64)
	if err != nil {
		t.Fatal(err)
	}
	return lcn
}

// TestCrossCheckBitmapCleared clears the $Bitmap bit of a cluster that a
// live file uses. Without the cross-check prezero zeroes it, as a bitmap
// reader must; with it (the default) the cluster stays served, the loss is
// reported, and every file survives the round trip.
func TestCrossCheckBitmapCleared(t *testing.T) {
	imgtest.Need(t, "ntfsinfo")
	f := getFixture(t, "c4096")
	dir := t.TempDir()
	img := filepath.Join(dir, "corrupt.img")
	imgtest.CopyFile(t, img, f.path)

	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	umount := imgtest.MountNTFS(t, img, mnt, true)
	want := imgtest.HashTree(t, mnt)
	// The largest file is surely non-resident.
	var victim string
	var biggest int64
	filepath.Walk(mnt, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() && fi.Size() > biggest {
			victim, biggest = p, fi.Size()
		}
		return nil
	})
	umount()
	if biggest < 64<<10 {
		t.Fatalf("no large file in the fixture (largest %d bytes)", biggest)
	}
	rel := "/" + strings.TrimPrefix(victim, mnt+"/")
	lcn := firstRun(t, img, "-F", rel)
	bitmapLCN := firstRun(t, img, "-i", "6")

	vol0 := mustRead(t, img)
	cs := int64(vol0.BlockSize)
	if vol0.Free.IsFree(lcn * cs) {
		t.Fatalf("cluster %d of %s is free before the corruption", lcn, rel)
	}
	if !vol0.CrossCheck.Done || vol0.CrossCheck.Conflicts != 0 || vol0.CrossCheck.Unreadable != 0 {
		t.Fatalf("cross-check on the clean copy: %+v", vol0.CrossCheck)
	}
	w, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	var b [1]byte
	at := bitmapLCN*cs + lcn/8
	if _, err := w.ReadAt(b[:], at); err != nil {
		t.Fatal(err)
	}
	b[0] &^= 1 << (lcn % 8)
	if _, err := w.WriteAt(b[:], at); err != nil {
		t.Fatal(err)
	}
	w.Close()

	plain, err := readFile(t, img, Options{NoCrossCheck: true})
	if err != nil {
		t.Fatal(err)
	}
	if !plain.Free.IsFree(lcn * cs) {
		t.Fatal("without the cross-check the cleared bit should free the cluster (the test would prove nothing)")
	}
	vol := mustRead(t, img)
	if vol.Free.IsFree(lcn * cs) {
		t.Fatalf("the cross-check left cluster %d of %s free", lcn, rel)
	}
	if vol.CrossCheck.Conflicts != 1 {
		t.Errorf("cross-check: %+v, want exactly 1 conflict", vol.CrossCheck)
	}
	if !strings.Contains(strings.Join(vol.Notes, "\n"), "chkdsk") {
		t.Errorf("warnings %q do not say the volume needs chkdsk", vol.Notes)
	}

	for _, c := range []struct {
		name  string
		vol   *Volume
		whole bool
	}{{"crosscheck", vol, true}, {"bitmap-only", plain, false}} {
		out := filepath.Join(dir, c.name+".img")
		writeZeroed(t, out, img, c.vol.Free)
		m := filepath.Join(dir, c.name)
		if err := os.Mkdir(m, 0o755); err != nil {
			t.Fatal(err)
		}
		un := imgtest.MountNTFS(t, out, m, true)
		got := imgtest.HashTree(t, m)
		un()
		same := len(got) == len(want)
		for k, h := range want {
			same = same && got[k] == h
		}
		if same != c.whole {
			t.Errorf("%s: every file intact = %v, want %v", c.name, same, c.whole)
		}
	}
}

// TestFragmentedMFT builds, with ntfs-3g, a volume whose $MFT is so
// fragmented that record 0 needs an $ATTRIBUTE_LIST (its $FILE_NAME and
// later $DATA extents move to extension records): 512-byte clusters, the
// volume filled with pairs of two-cluster files, every second one truncated
// to free one hole per pair, then empty files until the $MFT has grown
// through the holes. The map must equal ntfsclone -O, and the cross-check
// must read every record through the whole $MFT runlist.
func TestFragmentedMFT(t *testing.T) {
	imgtest.Need(t, "ntfsclone", "ntfsinfo")
	dir := t.TempDir()
	img := filepath.Join(dir, "frag.img")
	imgtest.MakeNTFS(t, img, 8<<20, 512, 0)
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	umount := imgtest.MountNTFS(t, img, mnt, false)
	data := make([]byte, 800) // non-resident: two clusters
	pairs := 0
	for ; ; pairs++ {
		a := os.WriteFile(filepath.Join(mnt, "a"+strconv.Itoa(pairs)), data, 0o644)
		b := os.WriteFile(filepath.Join(mnt, "b"+strconv.Itoa(pairs)), data, 0o644)
		if a != nil || b != nil {
			break
		}
	}
	for i := 0; i < pairs; i++ {
		os.Truncate(filepath.Join(mnt, "b"+strconv.Itoa(i)), 0)
	}
	empties := 0
	for ; empties < 1500; empties++ {
		if os.WriteFile(filepath.Join(mnt, "e"+strconv.Itoa(empties)), nil, 0o644) != nil {
			break
		}
	}
	want := imgtest.HashTree(t, mnt)
	umount()
	info := imgtest.Run(t, "ntfsinfo", "-i", "0", img)
	if !strings.Contains(info, "$ATTRIBUTE_LIST") {
		t.Fatalf("$MFT did not get an attribute list (%d pairs, %d empty files)", pairs, empties)
	}
	vol := mustRead(t, img)
	cc := vol.CrossCheck
	if !cc.Done || cc.Conflicts != 0 || cc.Unreadable != 0 {
		t.Fatalf("cross-check %+v on a clean, fragmented volume", cc)
	}
	if cc.Records < int64(2*pairs+empties) {
		t.Errorf("cross-check read %d records, the volume has at least %d files", cc.Records, 2*pairs+empties)
	}
	zeroed := filepath.Join(dir, "zeroed.img")
	writeZeroed(t, zeroed, img, vol.Free)
	clone := filepath.Join(dir, "clone.img")
	imgtest.Run(t, "ntfsclone", "-q", "-O", clone, img)
	if a, b := imgtest.SHA256File(t, zeroed), imgtest.SHA256File(t, clone); a != b {
		t.Fatal("stream differs from ntfsclone -O")
	}
	m := filepath.Join(dir, "check")
	if err := os.Mkdir(m, 0o755); err != nil {
		t.Fatal(err)
	}
	un := imgtest.MountNTFS(t, zeroed, m, true)
	got := imgtest.HashTree(t, m)
	un()
	if len(got) != len(want) {
		t.Fatalf("%d files after the round trip, want %d", len(got), len(want))
	}
	for k, h := range want {
		if got[k] != h {
			t.Fatalf("%s differs after the round trip", k)
		}
	}
}
