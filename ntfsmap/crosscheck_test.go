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
	cs := int64(vol0.ClusterSize)
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
	if !strings.Contains(strings.Join(vol.Warnings, "\n"), "chkdsk") {
		t.Errorf("warnings %q do not say the volume needs chkdsk", vol.Warnings)
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
