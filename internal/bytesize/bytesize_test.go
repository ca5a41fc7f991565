package bytesize

import (
	"testing"

	"github.com/spf13/pflag"
)

func TestParse(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"0", 0, true},
		{"4096", 4096, true},
		{"4K", 4 << 10, true},
		{"4k", 4 << 10, true},
		{"4KiB", 4 << 10, true},
		{"4mib", 4 << 20, true},
		{"4MiB", 4 << 20, true},
		{"4M", 4 << 20, true},
		{"4MB", 4 << 20, true},
		{"1G", 1 << 30, true},
		{"2T", 2 << 40, true},
		{"1P", 1 << 50, true},
		{"12B", 12, true},
		{" 8M ", 8 << 20, true},
		{"8191P", 8191 << 50, true},
		{"8192P", 0, false}, // overflows int64
		{"9223372036854775807", 1<<63 - 1, true},
		{"9223372036854775808", 0, false},
		{"", 0, false},
		{"M", 0, false},
		{"-1", 0, false},
		{"+1", 0, false},
		{"1.5M", 0, false},
		{"4X", 0, false},
		{"4i", 0, false},
		{"4iB", 0, false},
		{"4 M B", 0, false},
		{"0x10", 0, false},
	} {
		got, err := Parse(c.in)
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("Parse(%q) = %d, %v; want %d, ok=%v", c.in, got, err, c.want, c.ok)
		}
	}
}

func TestFormatRoundTrips(t *testing.T) {
	for _, n := range []int64{0, 1, 512, 4095, 4096, 4 << 20, 3<<30 + 4096, 5 << 40, 1<<63 - 1} {
		s := Format(n)
		got, err := Parse(s)
		if err != nil || got != n {
			t.Errorf("Parse(Format(%d) = %q) = %d, %v", n, s, got, err)
		}
	}
	if s := Format(4 << 20); s != "4MiB" {
		t.Errorf("Format(4 MiB) = %q", s)
	}
}

// Every size flag is a Value: the same words are accepted everywhere.
func TestValueIsAFlag(t *testing.T) {
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	a, b := Value(4<<20), Value(-1)
	fs.Var(&a, "hole-align", "")
	fs.Var(&b, "expect-size", "")
	if b.String() != "" || a.String() != "4MiB" {
		t.Fatalf("defaults print as %q, %q", a.String(), b.String())
	}
	if err := fs.Parse([]string{"--hole-align", "1mib", "--expect-size=4mib"}); err != nil {
		t.Fatal(err)
	}
	if a != 1<<20 || b != 4<<20 {
		t.Fatalf("parsed %d, %d", a, b)
	}
	if err := fs.Parse([]string{"--hole-align", "lots"}); err == nil {
		t.Fatal("--hole-align lots accepted")
	}
}
