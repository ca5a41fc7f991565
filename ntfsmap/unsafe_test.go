package ntfsmap

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/prezero/prezero/freemap"
	"github.com/prezero/prezero/internal/imgtest"
)

// openVolume parses the boot sector and $MFT of the image at path, for
// tests that need to find a structure's offset.
func openVolume(t *testing.T, path string) *volume {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	r := bytes.NewReader(b)
	bs, err := readBoot(r, int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	v := &volume{r: r, size: int64(len(b)), boot: bs}
	if err := v.loadMFT(); err != nil {
		t.Fatal(err)
	}
	return v
}

// recordOffset returns the volume offset of byte pos of MFT record num.
func recordOffset(t *testing.T, v *volume, num int64, pos int64) int64 {
	t.Helper()
	if pos%fixupBlock >= fixupBlock-2 {
		t.Fatalf("byte %d of a record is a fixup position", pos)
	}
	off := v.attrOffset(v.mft, num*int64(v.boot.recordSize)+pos)
	if off < 0 {
		t.Fatalf("record %d byte %d not mapped", num, pos)
	}
	return off
}

// valueOffset returns the volume offset of byte i of resident attribute a's
// value in record fr.
func valueOffset(t *testing.T, v *volume, fr *fileRecord, a *attr, i int64) int64 {
	t.Helper()
	pos := a.off - fr.off
	vo := int64(binary.LittleEndian.Uint16(fr.b[pos+offResValueOfs:]))
	return recordOffset(t, v, fr.num, pos+vo+i)
}

func patchFile(t *testing.T, path string, off int64, p []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(p, off); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestDirty sets VOLUME_IS_DIRTY with a one-byte write into $Volume's
// $VOLUME_INFORMATION (not at a fixup position, so no fixup is needed).
func TestDirty(t *testing.T) {
	f := getFixture(t, "c4096")
	clean := mustRead(t, f.path)
	img := filepath.Join(t.TempDir(), "dirty.img")
	imgtest.CopyFile(t, img, f.path)

	v := openVolume(t, img)
	fr, as, err := v.record(recVolume)
	if err != nil {
		t.Fatal(err)
	}
	vi := find(as, attrVolumeInfo, "")
	if vi == nil {
		t.Fatal("no $VOLUME_INFORMATION")
	}
	off := valueOffset(t, v, fr, vi, offVIFlags)
	if vi.value[offVIFlags]&volumeIsDirty != 0 {
		t.Fatal("fixture is already dirty")
	}
	patchFile(t, img, off, []byte{vi.value[offVIFlags] | volumeIsDirty})
	// Windows writes the flag to the $MFTMirr copy of record 3 too.
	mirror := v.boot.mftMirrLCN*int64(v.boot.clusterSize) + recVolume*int64(v.boot.recordSize) + (off - recordOffset(t, v, recVolume, 0))
	patchFile(t, img, mirror, []byte{vi.value[offVIFlags] | volumeIsDirty})
	// Sanity: ntfs-3g's tools see the flag too, and refuse the volume.
	if out, _ := imgtest.Output("ntfsinfo", "-m", img); !strings.Contains(out, "Volume is scheduled for check") {
		t.Errorf("ntfsinfo -m does not show the dirty flag:\n%s", out)
	}

	before := imgtest.SHA256File(t, img)
	_, err = readFile(t, img, Options{})
	if !errors.Is(err, freemap.ErrUnsafe) {
		t.Fatalf("Read of a dirty volume: err = %v, want ErrUnsafe", err)
	}
	vol, err := readFile(t, img, Options{ForceDirty: true})
	if err != nil {
		t.Fatalf("Read with ForceDirty: %v", err)
	}
	checkInvariants(t, vol)
	if len(vol.Notes) == 0 || !strings.Contains(vol.Notes[0], "dirty") {
		t.Errorf("no dirty warning: %q", vol.Notes)
	}
	if vol.Free.String() != clean.Free.String() || vol.UsedClusters != clean.UsedClusters {
		t.Errorf("forced map %v differs from the clean map %v", vol.Free, clean.Free)
	}
	if imgtest.SHA256File(t, img) != before {
		t.Fatal("Read changed the source")
	}
}

// TestHiberfil puts hiberfil.sys in the root directory among enough files
// that the root index spills into index blocks, then tries each header.
func TestHiberfil(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "base.img")
	imgtest.MakeNTFS(t, base, 32<<20, 4096, 0)
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	unmount := imgtest.MountNTFS(t, base, mnt, false)
	files := map[string]int64{"sub/hiberfil.sys": 8192}
	for i := range 300 {
		files["file-with-a-longish-name-"+strings.Repeat("x", i%7)+string(rune('a'+i%26))+"-"+strconv.Itoa(i)] = int64(i % 5)
	}
	imgtest.WriteRandomFiles(t, mnt, files)
	if err := os.WriteFile(filepath.Join(mnt, "hiberfil.sys"), make([]byte, 16384), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(mnt, "sub", "hiberfil.sys"), append([]byte("hibr"), make([]byte, 8188)...), 0o644); err != nil {
		t.Fatal(err)
	}
	unmount()

	v := openVolume(t, base)
	ref, err := v.lookupRoot("hiberfil.sys")
	if err != nil || ref < 0 {
		t.Fatalf("lookupRoot: %d, %v", ref, err)
	}
	if _, as, _ := v.record(recRoot); find(as, attrIndexAlloc, "$I30") == nil {
		t.Fatal("root index did not spill into index blocks; add more files")
	}
	_, as, err := v.record(ref)
	if err != nil {
		t.Fatal(err)
	}
	d := find(as, attrData, "")
	if d == nil || !d.nonRes {
		t.Fatal("hiberfil.sys data not non-resident")
	}
	if err := d.loadRuns(v.boot.clusters); err != nil {
		t.Fatal(err)
	}
	dataOff := d.runs[0].lcn * int64(v.boot.clusterSize)

	for _, tc := range []struct {
		head string
		bad  bool
	}{
		{"\x00\x00\x00\x00", false},
		{"hibr", true},
		{"HIBR", true},
		{"wake", true},
		{"WAKE", true},
		{"RSTR", true},
		{"junk", false},
	} {
		t.Run(tc.head, func(t *testing.T) {
			img := filepath.Join(t.TempDir(), "h.img")
			imgtest.CopyFile(t, img, base)
			patchFile(t, img, dataOff, []byte(tc.head))
			vol, err := readFile(t, img, Options{ForceDirty: true})
			if tc.bad {
				if !errors.Is(err, freemap.ErrUnsafe) {
					t.Fatalf("err = %v, want ErrUnsafe (hibernated)", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			checkInvariants(t, vol)
		})
	}
}

// TestHiberfilResident: a tiny hiberfil.sys is resident in its MFT record.
func TestHiberfilResident(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "r.img")
	imgtest.MakeNTFS(t, img, 16<<20, 4096, 0)
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	unmount := imgtest.MountNTFS(t, img, mnt, false)
	if err := os.WriteFile(filepath.Join(mnt, "HiberFil.sys"), []byte("hibr1234"), 0o644); err != nil {
		t.Fatal(err)
	}
	unmount()
	if _, err := readFile(t, img, Options{}); !errors.Is(err, freemap.ErrUnsafe) {
		t.Fatalf("err = %v, want ErrUnsafe (hibernated)", err)
	}
}

// TestLogFile writes restart pages into an empty $LogFile.
func TestLogFile(t *testing.T) {
	f := getFixture(t, "c4096")
	v := openVolume(t, f.path)
	_, as, err := v.record(recLogFile)
	if err != nil {
		t.Fatal(err)
	}
	d := find(as, attrData, "")
	if err := d.loadRuns(v.boot.clusters); err != nil {
		t.Fatal(err)
	}
	logOff := d.runs[0].lcn * int64(v.boot.clusterSize)

	restart := func(magic string, major, minor uint16, inUse, flags uint16) []byte {
		b := bytes.Repeat([]byte{0xff}, 512)
		le := binary.LittleEndian
		copy(b, magic)
		le.PutUint16(b[offRecUSAOfs:], 0x1E)
		le.PutUint16(b[offRecUSACount:], 9)
		le.PutUint64(b[offRPChkdskLSN:], 0)
		le.PutUint32(b[offRPSysPage:], 4096)
		le.PutUint32(b[offRPLogPage:], 4096)
		le.PutUint16(b[offRPAreaOfs:], 0x30)
		le.PutUint16(b[offRPMinor:], minor)
		le.PutUint16(b[offRPMajor:], major)
		ra := b[0x30:]
		le.PutUint64(ra[offRACurrentLSN:], 123456)
		le.PutUint16(ra[offRAClients:], 1)
		le.PutUint16(ra[0x0A:], noClient) // free list
		le.PutUint16(ra[offRAInUse:], inUse)
		le.PutUint16(ra[offRAFlags:], flags)
		return b
	}
	for _, tc := range []struct {
		name   string
		page   []byte
		unsafe bool // Read must refuse with ErrUnsafe
	}{
		{"unclean", restart("RSTR", 1, 1, 0, 0), true},
		{"unclean-v2", restart("RSTR", 2, 0, 0, 0), true},
		{"clean-flag", restart("RSTR", 1, 1, 0, restartVolIsClean), false},
		{"no-client", restart("RSTR", 1, 1, noClient, 0), false},
		{"bad-version", restart("RSTR", 9, 9, noClient, 0), true},
		{"record-page", append([]byte("RCRD"), bytes.Repeat([]byte{0xff}, 508)...), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := filepath.Join(t.TempDir(), "l.img")
			imgtest.CopyFile(t, img, f.path)
			patchFile(t, img, logOff, tc.page)
			vol, err := readFile(t, img, Options{ForceDirty: true})
			if !tc.unsafe {
				if err != nil {
					t.Fatal(err)
				}
				checkInvariants(t, vol)
				return
			}
			if !errors.Is(err, freemap.ErrUnsafe) || errors.Is(err, freemap.ErrFormat) {
				t.Fatalf("err = %v, want ErrUnsafe", err)
			}
		})
	}
}
