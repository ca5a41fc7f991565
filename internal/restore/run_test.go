package restore

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Run's rules on regular-file targets: an empty pipe is refused and leaves
// no file; a known length must match ExpectSize before anything is
// written; a stream longer than ExpectSize leaves exactly its first
// ExpectSize bytes and says so; a complete restore's summary adds up.
func TestRunRules(t *testing.T) {
	dir := t.TempDir()
	data := append(bytes.Repeat([]byte{0}, 3<<20), bytes.Repeat([]byte("data"), 1<<18)...)

	t.Run("empty pipe", func(t *testing.T) {
		out := filepath.Join(dir, "empty.img")
		_, err := Run(context.Background(), Source{Name: "standard input", R: bytes.NewReader(nil), Size: -1}, out, RunOptions{ExpectSize: -1})
		if err == nil || !strings.Contains(err.Error(), "is empty") {
			t.Fatalf("err = %v", err)
		}
		if _, err := os.Stat(out); err == nil {
			t.Error("the refused restore left its new target behind")
		}
	})
	t.Run("expect-size mismatch", func(t *testing.T) {
		out := filepath.Join(dir, "mismatch.img")
		_, err := Run(context.Background(), Source{Name: "f", R: bytes.NewReader(data), Size: int64(len(data))}, out, RunOptions{ExpectSize: 1 << 20})
		if err == nil || !strings.Contains(err.Error(), "nothing was written") {
			t.Fatalf("err = %v", err)
		}
		if _, err := os.Stat(out); err == nil {
			t.Error("a restore refused before writing created its target")
		}
	})
	t.Run("longer than expected", func(t *testing.T) {
		out := filepath.Join(dir, "long.img")
		_, err := Run(context.Background(), Source{Name: "pipe", R: bytes.NewReader(data), Size: -1}, out, RunOptions{ExpectSize: 3<<20 + 4096})
		var ie *IncompleteError
		if !errors.Is(err, ErrLong) || !errors.As(err, &ie) || ie.Pos != 3<<20+4096 {
			t.Fatalf("err = %v", err)
		}
		got, _ := os.ReadFile(out)
		if !bytes.Equal(got, data[:3<<20+4096]) {
			t.Errorf("the target holds %d bytes, not the stream's first %d", len(got), 3<<20+4096)
		}
	})
	t.Run("complete", func(t *testing.T) {
		out := filepath.Join(dir, "ok.img")
		sum, err := Run(context.Background(), Source{Name: "pipe", R: bytes.NewReader(data), Size: -1}, out, RunOptions{ExpectSize: -1})
		if err != nil {
			t.Fatal(err)
		}
		n := int64(len(data))
		if sum.StreamBytes != n || sum.Covered != n || sum.TargetSize != n || sum.Kind != "regular file" ||
			sum.Written+sum.Zeroed+sum.ZerosWritten+sum.Holes+sum.Skipped != n || sum.Holes == 0 {
			t.Errorf("summary %+v does not add up to %d bytes", sum, n)
		}
		got, _ := os.ReadFile(out)
		if !bytes.Equal(got, data) {
			t.Error("the restored file differs from the stream")
		}
	})
	t.Run("stream is target", func(t *testing.T) {
		out := filepath.Join(dir, "self.img")
		os.WriteFile(out, data, 0o644)
		f, _ := os.Open(out)
		defer f.Close()
		_, err := Run(context.Background(), Source{Name: out, R: f, Size: int64(len(data)), File: f}, out, RunOptions{ExpectSize: -1})
		if err == nil || !strings.Contains(err.Error(), "both the stream and the target") {
			t.Fatalf("err = %v", err)
		}
	})
}
