package source

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/prezero/prezero/internal/imgtest"
	"github.com/prezero/prezero/stream"
)

// TestImageBlockStatus reads a qcow2 whose disk is mostly unallocated: an
// ext4, and a partition no parser claims that is zeros but for 1 MiB. The
// streams equal the raw image's, and the zeros qemu reports are never
// asked for: fewer bytes cross the socket than the image holds, and the
// unclaimed partition's zeros are free (holes) in its stream.
func TestImageBlockStatus(t *testing.T) {
	imgtest.Need(t, "qemu-img", "qemu-nbd", "sfdisk", "mkfs.ext4", "debugfs")
	dir := t.TempDir()
	raw := filepath.Join(dir, "disk.raw")
	const size = 64 * mib
	imgtest.ZeroFile(t, raw, size)
	imgtest.Partition(t, raw, 512, fmt.Sprintf("label: gpt\nstart=2048,size=%d,type=L\nstart=%d,size=%d,type=0FC63DAF-8483-4772-8E79-3D69D8477DE5\n",
		8*mib/512, 16*mib/512, 40*mib/512))
	ext := filepath.Join(dir, "ext.img")
	imgtest.Ext(t, ext, 8*mib)
	imgtest.WriteAt(t, raw, mib, ext)
	junk := filepath.Join(dir, "junk")
	imgtest.RandomFile(t, junk, mib)
	imgtest.WriteAt(t, raw, 30*mib, junk)
	img := filepath.Join(dir, "disk.qcow2")
	imgtest.Run(t, "qemu-img", "convert", "-O", "qcow2", raw, img)

	want, err := Open(raw, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer want.Close()
	for _, noDirect := range []bool{true, false} {
		t.Run(fmt.Sprintf("noDirect=%v", noDirect), func(t *testing.T) {
			checkBlockStatus(t, img, want, size, noDirect)
		})
	}
}

func checkBlockStatus(t *testing.T, img string, want *Source, size int64, noDirect bool) {
	src, err := Open(img, Options{noDirect: noDirect})
	if err != nil {
		t.Fatal(err)
	}
	if src.Format != "qcow2" || src.KnownZero == nil {
		t.Fatalf("format %q, known zeros %v", src.Format, src.KnownZero)
	}
	pid := src.Server().Pid()
	for _, what := range []string{"disk", "header", "1", "2"} {
		a, _ := want.Lookup(what)
		b, _ := src.Lookup(what)
		var x, y bytes.Buffer
		if _, err := stream.Copy(context.Background(), &x, a); err != nil {
			t.Fatal(err)
		}
		if _, err := stream.Copy(context.Background(), &y, b); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(x.Bytes(), y.Bytes()) {
			t.Fatalf("%s of the qcow2 differs from the raw image's", what)
		}
	}
	kz := src.KnownZero.FreeBytes()
	req, got := src.Transferred()
	inPlace, placed := src.ReadInPlace()
	t.Logf("size %d, known zero %d, requested %d, received %d, read in place %d of %d placed", size, kz, req, got, inPlace, placed)
	if noDirect != (inPlace == 0) || noDirect != (placed == 0) {
		t.Fatalf("read in place %d of %d placed bytes", inPlace, placed)
	}
	if placed > size-kz {
		t.Fatalf("%d bytes placed in the image file, but only %d are not known zeros", placed, size-kz)
	}
	// Bytes read in place are bytes not asked of the server.
	req += inPlace
	got += inPlace
	if kz < 45*mib {
		t.Fatalf("only %d bytes reported zero", kz)
	}
	// The disk was read, and partitions 1 and 2 again (the header is a
	// known zero); the parsers read a little more. Known zeros are never
	// requested, so at most twice the rest.
	if req >= size/2 || req > 2*(size-kz)+2*mib {
		t.Fatalf("requested %d bytes of a %d-byte image with %d known zeros", req, size, kz)
	}
	if got > req {
		t.Fatalf("received %d > requested %d", got, req)
	}
	// Partition 2 passes through, yet its zeros are free in its stream.
	p2 := src.Files()[1]
	if p2.Zeroed || p2.Free.FreeBytes() != 0 {
		t.Fatalf("partition 2: %s, parser free %d", p2.Status(), p2.Free.FreeBytes())
	}
	if free := p2.Stream.Free().FreeBytes(); free < 38*mib {
		t.Fatalf("partition 2's stream has %d free bytes, want its ~39 MiB of zeros", free)
	}
	if src.Zeroable() != want.Zeroable() {
		t.Fatalf("zeroable %d, raw %d", src.Zeroable(), want.Zeroable())
	}
	if err := src.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
		if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); string(bytes.TrimSpace(b)) == "qemu-nbd" {
			t.Fatalf("qemu-nbd %d still runs after Close", pid)
		}
	}
}
