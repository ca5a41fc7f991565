// Package bytesize parses and formats the byte counts of prezero's size
// flags (--hole-align, --expect-size, --block-size): "4194304", "4M",
// "4MiB", "4mib" and "4MB" all mean 4×1024×1024. Every suffix is a power of
// 1024, as in borg's and dd's binary units; a decimal unit would silently
// misalign a hole window or an expected size.
package bytesize

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Parse reads a non-negative byte count: digits, then optionally one of
// K, M, G, T, P (any case), then optionally "i" and/or "B". Surrounding
// spaces are ignored.
func Parse(s string) (int64, error) {
	m := syntax.FindStringSubmatch(s)
	if m == nil || (m[2] == "" && strings.HasPrefix(m[3], "i")) {
		return 0, syntaxError(s)
	}
	shift := 0
	if m[2] != "" {
		shift = 10 * (strings.IndexByte("KMGTP", strings.ToUpper(m[2])[0]) + 1)
	}
	n, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil || n > (1<<63-1)>>shift {
		return 0, fmt.Errorf("%q is too large a byte count", s)
	}
	return n << shift, nil
}

var syntax = regexp.MustCompile(`^\s*([0-9]+)\s*([kKmMgGtTpP]?)((?i:i?b)?)\s*$`)

func syntaxError(s string) error {
	return fmt.Errorf("%q is not a byte count (write e.g. 4096, 4K, 4MiB, 1G; units are powers of 1024)", s)
}

// Format writes n with the largest binary unit that divides it exactly:
// 4194304 is "4MiB", 4097 is "4097".
func Format(n int64) string {
	for _, u := range []struct {
		s     string
		shift uint
	}{{"TiB", 40}, {"GiB", 30}, {"MiB", 20}, {"KiB", 10}} {
		if n > 0 && n%(1<<u.shift) == 0 {
			return strconv.FormatInt(n>>u.shift, 10) + u.s
		}
	}
	return strconv.FormatInt(n, 10)
}

// Human writes n for people, rounded to one decimal with binary units:
// "512B", "1.5KiB", "3.9GiB". Map, restore and notes all print sizes so.
func Human(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	div, exp := int64(unit), 0
	for v := n / unit; v >= unit; v /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f%ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// Value is a byte count flag (a pflag.Value and a flag.Value). Unset is -1
// if the flag has no default: see Set.
type Value int64

// String formats the value; a negative one (unset) is empty.
func (v *Value) String() string {
	if *v < 0 {
		return ""
	}
	return Format(int64(*v))
}

// Set parses s with Parse.
func (v *Value) Set(s string) error {
	n, err := Parse(s)
	if err != nil {
		return err
	}
	*v = Value(n)
	return nil
}

// Type names the flag's argument in help texts.
func (v *Value) Type() string { return "BYTES" }
