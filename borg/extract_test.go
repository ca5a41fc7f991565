package borg

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeBorg writes a borg stand-in: "list" prints items, "extract" writes
// EXTRACT_BYTES bytes, a line of stderr noise, and exits with EXTRACT_EXIT.
func fakeBorg(t *testing.T) *Borg {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "borg")
	script := `#!/bin/sh
case "$1" in
list) printf '0 dir\n4194304 disk.img\n12 with space.img\n' ;;
extract)
	head -c ${EXTRACT_BYTES:-100} /dev/zero
	i=0; while [ $i -lt 300 ]; do echo "noise line $i" >&2; i=$((i+1)); done
	echo "Archive x does not exist" >&2
	exit ${EXTRACT_EXIT:-0} ;;
esac
`
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return &Borg{Path: bin, Version: "1.2.4", Major: 1}
}

func TestList(t *testing.T) {
	items, err := fakeBorg(t).List(context.Background(), Ref{Repo: "/r", Archive: "a"})
	if err != nil {
		t.Fatal(err)
	}
	want := []Item{{"dir", 0}, {"disk.img", 4194304}, {"with space.img", 12}}
	if len(items) != len(want) {
		t.Fatalf("items %+v, want %+v", items, want)
	}
	for i := range want {
		if items[i] != want[i] {
			t.Errorf("item %d: %+v, want %+v", i, items[i], want[i])
		}
	}
}

// Extract's stream ends in borg's failure, with its exit code and the tail
// of its stderr, instead of io.EOF; a warning ends in io.EOF.
func TestExtract(t *testing.T) {
	b := fakeBorg(t)
	tests := []struct {
		exit     string
		wantCode int // 0: no error
		warning  bool
	}{
		{"0", 0, false},
		{"1", 0, true},
		{"2", 2, false},
	}
	for _, tc := range tests {
		t.Run("exit "+tc.exit, func(t *testing.T) {
			t.Setenv("EXTRACT_EXIT", tc.exit)
			t.Setenv("EXTRACT_BYTES", "300000")
			s, err := b.Extract(context.Background(), Ref{Repo: "/r", Archive: "a"}, "disk.img")
			if err != nil {
				t.Fatal(err)
			}
			n, err := io.Copy(io.Discard, s)
			if n != 300000 {
				t.Errorf("read %d bytes, want 300000", n)
			}
			var ee *ExitError
			switch {
			case tc.wantCode == 0 && err != nil:
				t.Fatalf("err = %v", err)
			case tc.wantCode != 0 && (!errors.As(err, &ee) || ee.Code != tc.wantCode):
				t.Fatalf("err = %v, want exit code %d", err, tc.wantCode)
			case tc.wantCode != 0:
				if !strings.HasSuffix(ee.Stderr, "Archive x does not exist") || len(ee.Stderr) > stderrTail || strings.Contains(ee.Stderr, "noise line 0\n") {
					t.Errorf("stderr tail %q", ee.Stderr)
				}
			}
			if (s.Warning() != nil) != tc.warning {
				t.Errorf("Warning() = %v", s.Warning())
			}
			if cerr := s.Close(); (cerr != nil) != (tc.wantCode != 0) {
				t.Errorf("Close() = %v", cerr)
			}
		})
	}
}

// Closing a stream that is still being written stops borg.
func TestExtractCloseEarly(t *testing.T) {
	t.Setenv("EXTRACT_BYTES", "1000000000")
	s, err := fakeBorg(t).Extract(context.Background(), Ref{Repo: "/r", Archive: "a"}, "disk.img")
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	if _, err := io.ReadFull(s, buf); err != nil {
		t.Fatal(err)
	}
	s.Close() // must return, not wait for a gigabyte
}
