package borg

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestRefAbsolute(t *testing.T) {
	cwd, _ := os.Getwd()
	t.Setenv("BORG_REPO", "")
	for _, c := range []struct{ repo, want string }{
		{"repo", filepath.Join(cwd, "repo")},
		{"./a/b", filepath.Join(cwd, "a/b")},
		{"/abs/repo", "/abs/repo"},
		{"ssh://user@host:22/./repo", "ssh://user@host:22/./repo"},
		{"user@host:repo", "user@host:repo"},
		{"host:/srv/repo", "host:/srv/repo"},
		{"dir/with:colon", filepath.Join(cwd, "dir/with:colon")},
		{"", ""},
	} {
		if got := (Ref{Repo: c.repo, Archive: "a"}).Absolute(); got.Repo != c.want || got.Archive != "a" {
			t.Errorf("Absolute(%q) = %+v, want repo %q", c.repo, got, c.want)
		}
	}
	t.Setenv("BORG_REPO", "rel")
	if got := (Ref{Archive: "a"}).Absolute(); got.Repo != filepath.Join(cwd, "rel") {
		t.Errorf("relative BORG_REPO: %+v", got)
	}
	t.Setenv("BORG_REPO", "/abs")
	if got := (Ref{Archive: "a"}).Absolute(); got.Repo != "" {
		t.Errorf("absolute BORG_REPO should stay with borg: %+v", got)
	}
}

// Create runs borg in dir with prezero's flags and keeps its exit code.
func TestCreate(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "log")
	bin := filepath.Join(dir, "borg")
	script := "#!/bin/sh\necho \"$PWD $*\" > " + log + "\nexit ${FAKE_EXIT:-0}\n"
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	b := &Borg{Path: bin, Version: "1.2.4", Major: 1}
	for _, code := range []int{0, 1, 2} {
		t.Setenv("FAKE_EXIT", string(rune('0'+code)))
		err := b.Create(work, Ref{Repo: "/r", Archive: "a"}, []string{"--stats"}, []string{"disk.img"})
		var ee *ExitError
		switch {
		case code == 0 && err != nil:
			t.Fatalf("exit 0: %v", err)
		case code != 0 && (!errors.As(err, &ee) || ee.Code != code || ee.Warning() != (code == 1)):
			t.Fatalf("exit %d: %v", code, err)
		}
		b, _ := os.ReadFile(log)
		want := work + " create --read-special --sparse --chunker-params fixed,4194304 --stats /r::a disk.img"
		if got := strings.TrimSpace(string(b)); got != want {
			t.Fatalf("borg ran as %q, want %q", got, want)
		}
	}
}

func TestMergeCreateFlags(t *testing.T) {
	for _, c := range []struct {
		extra   []string
		flags   string
		chunker string // "fixed SIZE HEADER", "buzhash", or ""
		bad     bool
	}{
		{nil, "--read-special --sparse --chunker-params fixed,4194304", "", false},
		{[]string{"--stats", "-C", "zstd"}, "--read-special --sparse --chunker-params fixed,4194304", "", false},
		{[]string{"--chunker-params", "fixed,1048576"}, "--read-special --sparse", "fixed 1048576 0", false},
		{[]string{"--chunker-params=fixed,2097152,4096"}, "--read-special --sparse", "fixed 2097152 4096", false},
		{[]string{"--sparse", "--read-special"}, "--chunker-params fixed,4194304", "", false},
		{[]string{"--chunker-params", "buzhash,19,23,21,4095"}, "--read-special --sparse", "buzhash", false},
		{[]string{"--chunker-params", "19,23,21,4095"}, "--read-special --sparse", "buzhash", false},
		{[]string{"--chunker-params", "default"}, "--read-special --sparse", "buzhash", false},
		{[]string{"--chunker-params"}, "", "", true},
		{[]string{"--chunker-params", "fixed,x"}, "", "", true},
		{[]string{"--chunker-params", "nonsense"}, "", "", true},
	} {
		flags, ch, err := MergeCreateFlags(c.extra)
		if (err != nil) != c.bad {
			t.Errorf("%q: err %v", c.extra, err)
			continue
		}
		if c.bad {
			continue
		}
		got := ""
		if ch != nil {
			got = "buzhash"
			if ch.Fixed {
				got = fmt.Sprintf("fixed %d %d", ch.Size, ch.Header)
			}
		}
		if strings.Join(flags, " ") != c.flags || got != c.chunker {
			t.Errorf("%q: flags %q chunker %q; want %q, %q", c.extra, flags, got, c.flags, c.chunker)
		}
	}
}

// A signal Create passes on to borg is reported when borg still exits 0
// (the archive is complete), and borg's own code is kept when it stops.
func TestCreatePassedSignal(t *testing.T) {
	for _, code := range []int{0, 2} {
		dir := t.TempDir()
		ready, got := filepath.Join(dir, "ready"), filepath.Join(dir, "got")
		bin := filepath.Join(dir, "borg")
		script := fmt.Sprintf("#!/bin/sh\ntrap 'echo TERM > %s; exit %d' TERM\ntouch %s\nwhile :; do sleep 0.05; done\n", got, code, ready)
		if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
		b := &Borg{Path: bin, Version: "1.2.4", Major: 1}
		done := make(chan error, 1)
		go func() { done <- b.Create(t.TempDir(), Ref{Repo: "/r", Archive: "a"}, nil, []string{"disk.img"}) }()
		deadline := time.Now().Add(10 * time.Second)
		for {
			if _, err := os.Stat(ready); err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the fake borg did not start")
			}
			time.Sleep(10 * time.Millisecond)
		}
		syscall.Kill(os.Getpid(), syscall.SIGTERM) // Create's handler is on while borg runs
		err := <-done
		if b, _ := os.ReadFile(got); string(b) != "TERM\n" {
			t.Fatalf("exit %d: borg was not passed SIGTERM (%q)", code, b)
		}
		var ig *IgnoredSignalError
		var ee *ExitError
		switch {
		case code == 0 && (!errors.As(err, &ig) || ig.Signal != syscall.SIGTERM || !strings.Contains(err.Error(), "archive is complete")):
			t.Errorf("borg exited 0 after SIGTERM: %v, want an IgnoredSignalError", err)
		case code != 0 && (!errors.As(err, &ee) || ee.Code != code):
			t.Errorf("borg exited %d after SIGTERM: %v", code, err)
		}
	}
}
