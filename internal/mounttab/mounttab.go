// Package mounttab reads the kernel's mount table, /proc/self/mountinfo, as
// proc(5) describes it. It is prezero's one reader of that table: the in-use
// checks (internal/inuse), the FUSE mount's watchdog and umount (fusefs) and
// the tests all go through it, so that every one of them decodes the
// kernel's escapes the same way.
//
// The kernel escapes four bytes in paths and sources: space as \040, tab as
// \011, newline as \012 and backslash as \134. A path compared without
// decoding them never matches a path that holds one of them, and a check
// that compares paths then says "not mounted" about a mounted file.
package mounttab

import (
	"bufio"
	"fmt"
	"os"
	"strings"
)

// Mount is one line of mountinfo.
type Mount struct {
	Dev    string // MAJ:MIN of the mounted filesystem (st_dev)
	Root   string // the root of the mount within its filesystem (a bind mount's subtree)
	Point  string // the mount point, decoded
	FSType string // "ext4", "fuse.prezero", ...
	Source string // what was mounted, decoded: /dev/NAME, a file, or a name such as "none"
	RW     bool   // the superblock is writable
}

// Path is the mount table of the calling process's mount namespace.
const Path = "/proc/self/mountinfo"

// Read reads and parses the mount table at path (normally Path).
func Read(path string) ([]Mount, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading the mount table: %w", err)
	}
	ms, err := Parse(string(b))
	if err != nil {
		return nil, fmt.Errorf("reading the mount table %s: %w", path, err)
	}
	return ms, nil
}

// Top returns the mount on top at dir (the last one mounted there), if any.
// dir must be absolute and clean.
func Top(mounts []Mount, dir string) (Mount, bool) {
	var top Mount
	found := false
	for _, m := range mounts {
		if m.Point == dir {
			top, found = m, true
		}
	}
	return top, found
}

// Parse parses mountinfo text:
//
//	ID PARENT MAJ:MIN ROOT POINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS
//
// A line too long to read is an error: a mount left out could be the one
// that matters. Lines with too few fields are skipped.
func Parse(text string) ([]Mount, error) {
	var out []Mount
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		sep := -1
		for i := 6; i < len(f); i++ {
			if f[i] == "-" {
				sep = i
				break
			}
		}
		if len(f) < 6 || sep < 0 || len(f) < sep+4 {
			continue
		}
		out = append(out, Mount{
			Dev:    f[2],
			Root:   Unescape(f[3]),
			Point:  Unescape(f[4]),
			FSType: Unescape(f[sep+1]),
			Source: Unescape(f[sep+2]),
			RW:     HasOption(f[sep+3], "rw"),
		})
	}
	return out, sc.Err()
}

// HasOption reports whether the comma-separated option list opts holds name.
func HasOption(opts, name string) bool {
	for _, o := range strings.Split(opts, ",") {
		if o == name {
			return true
		}
	}
	return false
}

// Unescape undoes the kernel's octal escapes: a backslash and exactly three
// octal digits stand for one byte (\040 a space, \134 a backslash). Anything
// else is kept as it is.
func Unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && isOctal(s[i+1]) && isOctal(s[i+2]) && isOctal(s[i+3]) && s[i+1] <= '3' {
			b.WriteByte((s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0'))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Escape writes a path as the kernel writes it in mountinfo.
func Escape(s string) string {
	return escaper.Replace(s)
}

var escaper = strings.NewReplacer(" ", `\040`, "\t", `\011`, "\n", `\012`, `\`, `\134`)

func isOctal(c byte) bool { return c >= '0' && c <= '7' }
