package imgtest

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prezero/prezero/internal/mounttab"
)

// serveFUSE starts cmd, a FUSE server that stays in the foreground, and
// waits until it has mounted mnt. The returned function unmounts mnt,
// waits until the server has exited (so every write has reached the
// image) and then runs after; it also runs at cleanup. If the server
// fails to mount, after runs and the test fails.
func serveFUSE(t testing.TB, cmd *exec.Cmd, mnt string, after func()) (unmount func()) {
	t.Helper()
	name := filepath.Base(cmd.Path)
	var out strings.Builder
	cmd.Stderr = &limitedWriter{&out, 4096}
	if err := cmd.Start(); err != nil {
		after()
		t.Fatalf("%s: %v", name, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	abs, _ := filepath.Abs(mnt)
	deadline := time.Now().Add(20 * time.Second)
	for !isMounted(abs) {
		select {
		case err := <-exited:
			after()
			t.Fatalf("%s exited before mounting %s: %v\n%s", cmd, mnt, err, out.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-exited
			after()
			t.Fatalf("%s: %s not mounted after 20s\n%s", cmd, mnt, out.String())
		}
	}
	done := false
	unmount = func() {
		t.Helper()
		if done {
			return
		}
		done = true
		defer after()
		var err error
		for range 50 {
			if _, err = Output("fusermount", "-u", abs); err == nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			t.Errorf("fusermount -u %s: %v", abs, err)
			_ = cmd.Process.Kill()
		}
		select {
		case <-exited:
		case <-time.After(60 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
			t.Errorf("%s did not exit after unmount\n%s", name, out.String())
		}
		if isMounted(abs) {
			t.Errorf("%s still mounted", abs)
		}
	}
	t.Cleanup(unmount)
	return unmount
}

// isMounted reports whether dir is a mount point in /proc/self/mountinfo.
func isMounted(dir string) bool {
	ms, err := mounttab.Read(mounttab.Path)
	if err != nil {
		return false
	}
	_, ok := mounttab.Top(ms, dir)
	return ok
}

// limitedWriter keeps the first n bytes written to it.
type limitedWriter struct {
	w *strings.Builder
	n int
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	if k := min(len(p), l.n-l.w.Len()); k > 0 {
		l.w.Write(p[:k])
	}
	return len(p), nil
}
