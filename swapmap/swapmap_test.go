package swapmap

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/prezero/prezero/freemap"
	"github.com/prezero/prezero/internal/imgtest"
)

// header builds a swap header page by hand.
func header(ps int, size int64, order binary.ByteOrder, sig string, lastPage, bad uint32) []byte {
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(i*31 + 7) // not zero: a mapping mistake shows
	}
	clear(b[:ps])
	order.PutUint32(b[1024:], 1)
	order.PutUint32(b[1028:], lastPage)
	order.PutUint32(b[1032:], bad)
	copy(b[1036:], "0123456789abcdef")
	copy(b[1052:], "mylabel")
	copy(b[ps-10:], sig)
	return b
}

func TestRead(t *testing.T) {
	const size = 1 << 20
	for _, c := range []struct {
		name     string
		b        []byte
		err      error
		ps       int
		freeFrom int64
		freeTo   int64
	}{
		{"4k", header(4096, size, binary.LittleEndian, "SWAPSPACE2", size/4096-1, 0), nil, 4096, 4096, size},
		{"8k", header(8192, size, binary.LittleEndian, "SWAPSPACE2", size/8192-1, 0), nil, 8192, 8192, size},
		{"16k", header(16384, size, binary.LittleEndian, "SWAPSPACE2", size/16384-1, 0), nil, 16384, 16384, size},
		{"64k big-endian", header(65536, size, binary.BigEndian, "SWAPSPACE2", size/65536-1, 0), nil, 65536, 65536, size},
		{"shorter than volume", header(4096, size, binary.LittleEndian, "SWAPSPACE2", 100, 3), nil, 4096, 4096, 101 * 4096},
		{"longer than volume", header(4096, size, binary.LittleEndian, "SWAPSPACE2", 1000, 0), nil, 4096, 4096, size},
		{"s1suspend", header(4096, size, binary.LittleEndian, "S1SUSPEND", 255, 0), freemap.ErrUnsafe, 0, 0, 0},
		{"s2suspend", header(4096, size, binary.LittleEndian, "S2SUSPEND", 255, 0), freemap.ErrUnsafe, 0, 0, 0},
		{"ulsuspend", header(4096, size, binary.LittleEndian, "ULSUSPEND", 255, 0), freemap.ErrUnsafe, 0, 0, 0},
		{"linhib", header(65536, size, binary.LittleEndian, "LINHIB0001", 15, 0), freemap.ErrUnsafe, 0, 0, 0},
		{"v0", header(4096, size, binary.LittleEndian, "SWAP-SPACE", 255, 0), freemap.ErrUnsupported, 0, 0, 0},
		{"too many bad pages", header(4096, size, binary.LittleEndian, "SWAPSPACE2", 255, 1000), freemap.ErrFormat, 0, 0, 0},
		{"last page 0", header(4096, size, binary.LittleEndian, "SWAPSPACE2", 0, 0), freemap.ErrFormat, 0, 0, 0},
		{"no signature", header(4096, size, binary.LittleEndian, "", 255, 0), freemap.ErrFormat, 0, 0, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := c.b
			a, err := Read(bytes.NewReader(b), int64(len(b)))
			if c.err != nil {
				if !errors.Is(err, c.err) {
					t.Fatalf("got %v, want %v", err, c.err)
				}
				if c.err == freemap.ErrUnsafe && !Probe(bytes.NewReader(b), int64(len(b))) {
					t.Error("Probe does not claim a hibernation image")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			ext := a.Free.Extents()
			if a.PageSize != c.ps || len(ext) != 1 || ext[0].Off != c.freeFrom || ext[0].End() != c.freeTo {
				t.Fatalf("page %d, free %v; want page %d, free [%d, %d)", a.PageSize, ext, c.ps, c.freeFrom, c.freeTo)
			}
			if a.Label != "mylabel" || string(a.UUID[:]) != "0123456789abcdef" {
				t.Errorf("label %q uuid %q", a.Label, a.UUID[:])
			}
		})
	}
	b := header(4096, size, binary.LittleEndian, "SWAPSPACE2", 255, 0)
	binary.LittleEndian.PutUint32(b[1024:], 2)
	if _, err := Read(bytes.NewReader(b), size); !errors.Is(err, freemap.ErrUnsupported) {
		t.Errorf("version 2: %v", err)
	}
}

// TestMkswap reads swap areas made by mkswap (over random bytes) for each
// page size, and compares label and UUID with blkid.
func TestMkswap(t *testing.T) {
	imgtest.Need(t, "mkswap", "blkid")
	for _, ps := range PageSizes {
		img := filepath.Join(t.TempDir(), "swap.img")
		b := make([]byte, 4<<20)
		for i := range b {
			b[i] = byte(i*131 + i>>9)
		}
		if err := os.WriteFile(img, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("mkswap", "-p", strconv.Itoa(ps), "-L", "sw", "-U", "0e1f2a3b-4c5d-4e6f-8091-a2b3c4d5e6f7", img).CombinedOutput(); err != nil {
			t.Fatalf("mkswap: %v\n%s", err, out)
		}
		f, _ := os.Open(img)
		a, err := Read(f, 4<<20)
		f.Close()
		if err != nil {
			t.Fatalf("page %d: %v", ps, err)
		}
		out, err := exec.Command("blkid", "-p", "-o", "export", img).Output()
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(out), "LABEL="+a.Label+"\n") || !strings.Contains(string(out), "UUID="+uuid(a.UUID)+"\n") {
			t.Errorf("page %d: read label %q uuid %s; blkid says\n%s", ps, a.Label, uuid(a.UUID), out)
		}
		if a.PageSize != ps || a.Free.FreeBytes() != int64(a.LastPage)*int64(ps) || a.Free.Extents()[0].Off != int64(ps) {
			t.Errorf("page %d: read page %d, last page %d, free %v", ps, a.PageSize, a.LastPage, a.Free)
		}
	}
}

func uuid(u [16]byte) string {
	const hex = "0123456789abcdef"
	var s []byte
	for i, c := range u {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			s = append(s, '-')
		}
		s = append(s, hex[c>>4], hex[c&15])
	}
	return string(s)
}

func FuzzRead(f *testing.F) {
	f.Add(header(4096, 8192, binary.LittleEndian, "SWAPSPACE2", 1, 0))
	f.Add(header(4096, 8192, binary.BigEndian, "SWAPSPACE2", 1, 2))
	f.Add(header(4096, 8192, binary.LittleEndian, "S1SUSPEND", 1, 0))
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := Read(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			return
		}
		for _, e := range a.Free.Extents() {
			if e.Off < int64(a.PageSize) || e.End() > int64(len(b)) {
				t.Fatalf("free %v outside [page, size)", e)
			}
		}
	})
}
