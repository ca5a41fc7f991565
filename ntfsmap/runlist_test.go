package ntfsmap

import (
	"bytes"
	"slices"
	"strings"
	"testing"
)

func TestDecodeRunlist(t *testing.T) {
	for _, tc := range []struct {
		name     string
		b        []byte
		clusters int64
		want     []run
		err      string
	}{
		{"one", []byte{0x11, 0x04, 0x20, 0}, 100, []run{{0, 0x20, 4}}, ""},
		// Second run's delta is -0x10 (0xF0 as one signed byte).
		{"negative delta", []byte{0x11, 0x04, 0x20, 0x11, 0x02, 0xF0, 0}, 100, []run{{0, 0x20, 4}, {4, 0x10, 2}}, ""},
		{"sparse", []byte{0x11, 0x04, 0x20, 0x01, 0x08, 0x11, 0x01, 0x05, 0}, 100, []run{{0, 0x20, 4}, {4, -1, 8}, {12, 0x25, 1}}, ""},
		{"two-byte length", []byte{0x12, 0x00, 0x01, 0x01, 0}, 1000, []run{{0, 1, 256}}, ""},
		{"empty", []byte{0}, 100, nil, ""},
		{"no terminator", []byte{0x11, 0x04, 0x20}, 100, nil, "terminator"},
		{"truncated pair", []byte{0x21, 0x04, 0x20}, 100, nil, "past the attribute"},
		{"zero length", []byte{0x11, 0x00, 0x20, 0}, 100, nil, "invalid length"},
		{"negative length", []byte{0x11, 0xFF, 0x20, 0}, 100, nil, "invalid length"},
		{"no length bytes", []byte{0x10, 0x20, 0}, 100, nil, "invalid sizes"},
		{"past the volume", []byte{0x11, 0x04, 0x62, 0}, 100, nil, "outside the volume"},
		{"ends past the volume", []byte{0x11, 0x04, 0x61, 0}, 100, nil, "outside the volume"},
		{"before cluster 0", []byte{0x11, 0x04, 0x20, 0x11, 0x01, 0xD0, 0}, 100, nil, "outside the volume"},
		{"huge delta", []byte{0x81, 0x01, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0}, 100, nil, "outside the volume"},
		{"min delta", []byte{0x11, 0x01, 0x05, 0x81, 0x01, 0, 0, 0, 0, 0, 0, 0, 0x80, 0}, 100, nil, "outside the volume"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decodeRunlist(tc.b, 0, tc.clusters)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || !slices.Equal(got, tc.want) {
				t.Fatalf("got %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}

// TestReadAttrAcrossRuns reads data that straddles runs, as an MFT record
// does when it lies across two fragments of $MFT.
func TestReadAttrAcrossRuns(t *testing.T) {
	const cs = 512
	disk := make([]byte, 64*cs)
	for i := range disk {
		disk[i] = byte(i / cs) // each cluster holds its number
	}
	v := &volume{r: bytes.NewReader(disk), size: int64(len(disk)), boot: &boot{clusterSize: cs, clusters: 64}}
	a := &attr{nonRes: true, runs: []run{{0, 10, 1}, {1, 3, 2}, {3, -1, 1}, {4, 40, 4}}, initSize: 8 * cs, dataSize: 8 * cs}
	p := make([]byte, 2*cs)
	if err := v.readAttr(a, p, cs/2); err != nil {
		t.Fatal(err)
	}
	want := slices.Concat(bytes.Repeat([]byte{10}, cs/2), bytes.Repeat([]byte{3}, cs), bytes.Repeat([]byte{4}, cs/2))
	if !bytes.Equal(p, want) {
		t.Fatalf("read across runs: got %v", p)
	}
	if err := v.readAttr(a, p, 2*cs+cs/2); err == nil || !strings.Contains(err.Error(), "sparse") {
		t.Fatalf("read of a sparse run: err = %v", err)
	}
	if err := v.readAttr(a, p, 7*cs); err == nil || !strings.Contains(err.Error(), "initialized") {
		t.Fatalf("read past the initialized size: err = %v", err)
	}
	a.initSize = 10 * cs
	if err := v.readAttr(a, p, 8*cs); err == nil || !strings.Contains(err.Error(), "runlist") {
		t.Fatalf("read past the runlist: err = %v", err)
	}
}
