package mounttab

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestParse(t *testing.T) {
	text := `27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard
28 27 0:25 / /mnt/with\040space ro,nosuid shared:5 master:1 - tmpfs none ro,size=4k
29 27 0:40 / /data rw,relatime - btrfs /dev/sdb1 rw,space_cache=v2
30 27 7:0 /sub\011dir /ro-bind ro,relatime - ext4 /dev/loop0 rw
31 27 0:50 / /m\134n\012x rw - fuse.prezero /t/a\040b\134c\011d\012e.img ro
garbage line
`
	got, err := Parse(text)
	if err != nil {
		t.Fatal(err)
	}
	want := []Mount{
		{Dev: "254:0", Root: "/", Point: "/", FSType: "ext4", Source: "/dev/vda", RW: true},
		{Dev: "0:25", Root: "/", Point: "/mnt/with space", FSType: "tmpfs", Source: "none", RW: false},
		{Dev: "0:40", Root: "/", Point: "/data", FSType: "btrfs", Source: "/dev/sdb1", RW: true},
		{Dev: "7:0", Root: "/sub\tdir", Point: "/ro-bind", FSType: "ext4", Source: "/dev/loop0", RW: true},
		{Dev: "0:50", Root: "/", Point: "/m\\n\nx", FSType: "fuse.prezero", Source: "/t/a b\\c\td\ne.img", RW: false},
	}
	if len(got) != len(want) {
		t.Fatalf("parsed %d mounts, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("line %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	if m, ok := Top(got, "/m\\n\nx"); !ok || m.Dev != "0:50" {
		t.Errorf("Top of a decoded path: %+v, %v", m, ok)
	}
}

func TestParseTooLong(t *testing.T) {
	text := "27 1 254:0 / / rw - ext4 /dev/vda rw\n28 27 0:25 / /" + strings.Repeat("x", 2<<20) + " rw - tmpfs none rw\n"
	if _, err := Parse(text); err == nil {
		t.Errorf("a 2 MiB line was read without an error")
	}
}

func TestUnescape(t *testing.T) {
	for in, want := range map[string]string{
		`plain`:            "plain",
		`a\040b`:           "a b",
		`\011\012\134\040`: "\t\n\\ ",
		`\134040`:          `\040`, // a literal backslash followed by "040"
		`trail\04`:         `trail\04`,
		`\400`:             `\400`, // not a byte
		`\08x`:             `\08x`,
		"caf\303\251":      "café",
		`end\`:             `end\`,
	} {
		if got := Unescape(in); got != want {
			t.Errorf("Unescape(%q) = %q, want %q", in, got, want)
		}
	}
	for _, s := range []string{"a b", "t\tab", "new\nline", `back\slash`, `\040`, "ünï cödé", "plain"} {
		if got := Unescape(Escape(s)); got != s {
			t.Errorf("Unescape(Escape(%q)) = %q", s, got)
		}
	}
}

// TestKernelEscapes mounts a tmpfs on directories whose names hold every
// byte the kernel escapes, and non-ASCII, and finds each in the real table.
func TestKernelEscapes(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs root under CI")
		}
		t.Skip("needs root to mount")
	}
	base := t.TempDir()
	for _, name := range []string{"a b", "tab\there", "new\nline", `back\slash`, "ünïcödé", `lit\040eral`} {
		dir := filepath.Join(base, name)
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Mount("prezero-test "+name, dir, "tmpfs", 0, "size=64k"); err != nil {
			t.Fatalf("mount tmpfs on %q: %v", dir, err)
		}
		t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
		ms, err := Read(Path)
		if err != nil {
			t.Fatal(err)
		}
		m, ok := Top(ms, dir)
		if !ok || m.FSType != "tmpfs" || m.Source != "prezero-test "+name {
			t.Errorf("%q: found %v, %+v", dir, ok, m)
		}
	}
}
