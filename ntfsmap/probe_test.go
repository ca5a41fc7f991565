package ntfsmap

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/prezero/prezero/freemap"
)

func TestProbe(t *testing.T) {
	img := seedImage(t, seedImages[0])
	if !Probe(bytes.NewReader(img), int64(len(img))) {
		t.Error("Probe(seed image) = false")
	}
	if Probe(bytes.NewReader(make([]byte, 4096)), 4096) {
		t.Error("Probe(zeros) = true")
	}
	if Probe(bytes.NewReader(img[:100]), 100) {
		t.Error("Probe(100 bytes) = true")
	}
}

func TestFormatErrors(t *testing.T) {
	img := seedImage(t, seedImages[0])
	bad := bytes.Clone(img)
	bad[offBytesPerSector] = 3 // 0x203 bytes per sector
	_, err := Read(bytes.NewReader(bad), int64(len(bad)), Options{})
	var fe *freemap.FormatError
	if !errors.Is(err, freemap.ErrFormat) || !errors.As(err, &fe) || fe.Off != offBytesPerSector {
		t.Fatalf("err = %#v, want a FormatError at %d", err, offBytesPerSector)
	}
	if !strings.Contains(err.Error(), "bytes per sector") {
		t.Errorf("message %q", err)
	}
	if _, err := Read(bytes.NewReader(img), -1, Options{}); err == nil {
		t.Error("negative size accepted")
	}
	// A source shorter than the size it claims: reads fail, Read errors.
	short := io.NewSectionReader(bytes.NewReader(img), 0, 16<<10)
	if _, err := Read(short, int64(len(img)), Options{}); err == nil {
		t.Error("truncated source accepted")
	}
	// A volume whose boot sector claims more sectors than it has.
	if _, err := Read(bytes.NewReader(img), int64(len(img))/2, Options{}); !errors.Is(err, freemap.ErrFormat) {
		t.Errorf("volume cut in half: err = %v", err)
	}
}
