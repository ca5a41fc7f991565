package imgtest

import (
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// TestBuildsOnce: concurrent Gets of a name build it once and share it;
// each name gets its own path in one directory; RemoveAll removes it.
func TestBuildsOnce(t *testing.T) {
	var b Builds[string]
	b.Prefix = "imgtest-builds-"
	var calls atomic.Int32
	mk := func(t *testing.T, path string) string {
		calls.Add(1)
		if err := os.WriteFile(path+".img", nil, 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	var wg sync.WaitGroup
	got := make([]string, 8)
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i] = b.Get(t, "a", mk)
		}()
	}
	wg.Wait()
	if calls.Load() != 1 {
		t.Fatalf("%d builds of one name", calls.Load())
	}
	for _, p := range got {
		if p != got[0] || !strings.HasSuffix(p, "/a") {
			t.Fatalf("paths %q", got)
		}
	}
	if p := b.Get(t, "b", mk); p == got[0] || calls.Load() != 2 {
		t.Fatalf("second name: %q after %d builds", p, calls.Load())
	}
	b.RemoveAll()
	if _, err := os.Stat(got[0] + ".img"); !os.IsNotExist(err) {
		t.Fatalf("RemoveAll left %s: %v", got[0], err)
	}
}

// TestBuildsFailedOnce: a build that fails the test that ran it fails
// every later Get of the name, without building again. The failing tests
// run in a child process (this test binary), since they must fail.
func TestBuildsFailedOnce(t *testing.T) {
	if os.Getenv("IMGTEST_BUILDS_CHILD") != "" {
		failTwice(t)
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestBuildsFailedOnce$", "-test.v")
	cmd.Env = append(os.Environ(), "IMGTEST_BUILDS_CHILD=1")
	out, _ := cmd.CombinedOutput()
	s := string(out)
	for _, want := range []string{
		"build 1 failing",
		"building x failed: see the first test that needed it",
		"--- FAIL: TestBuildsFailedOnce/first",
		"--- FAIL: TestBuildsFailedOnce/second",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("child output lacks %q:\n%s", want, s)
		}
	}
	if strings.Contains(s, "build 2") {
		t.Errorf("the failed build ran again:\n%s", s)
	}
}

// failTwice is the child's part: two subtests Get a build that fails.
func failTwice(t *testing.T) {
	var b Builds[int]
	defer b.RemoveAll()
	n := 0
	mk := func(t *testing.T, path string) int {
		n++
		t.Fatalf("build %d failing", n)
		return n
	}
	t.Run("first", func(t *testing.T) { b.Get(t, "x", mk) })
	t.Run("second", func(t *testing.T) { b.Get(t, "x", mk) })
}
