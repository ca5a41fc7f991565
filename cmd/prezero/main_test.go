package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
)

var (
	binOnce sync.Once
	binDir  string
	binPath string
	binErr  error
)

// prezeroBin builds the prezero binary once per test run and returns its
// path: the CLI tests run the real command, as users do.
func prezeroBin(t testing.TB) string {
	t.Helper()
	binOnce.Do(func() {
		binDir, binErr = os.MkdirTemp("", "prezero-bin-")
		if binErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "prezero")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			binErr = &buildError{err, out}
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

type buildError struct {
	err error
	out []byte
}

func (e *buildError) Error() string { return "go build: " + e.err.Error() + "\n" + string(e.out) }

// runPrezero runs the binary and returns stdout, stderr and the exit code.
func runPrezero(t testing.TB, args ...string) (stdout, stderr []byte, code int) {
	t.Helper()
	return runPrezeroEnv(t, nil, args...)
}

// runPrezeroEnv is runPrezero with extra environment variables.
func runPrezeroEnv(t testing.TB, env []string, args ...string) (stdout, stderr []byte, code int) {
	t.Helper()
	cmd := exec.Command(prezeroBin(t), args...)
	cmd.Env = append(os.Environ(), env...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return o.Bytes(), e.Bytes(), ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return o.Bytes(), e.Bytes(), 0
}

// TestMain runs the suite with TMPDIR in a directory of its own, so that
// every file the tests and the prezero they run make is under it; after
// the suite, no qemu-nbd may still serve any of them (issue 13: "no stray
// process after the suite").
func TestMain(m *testing.M) {
	suite, err := os.MkdirTemp("", "prezero-suite-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// Tests that run prezero as another user (publicDir) need to pass
	// through it; each test's own t.TempDir stays 0700.
	os.Chmod(suite, 0o755)
	os.Setenv("TMPDIR", suite)
	code := m.Run()
	if pids := strayQemuNbd(suite); len(pids) > 0 {
		fmt.Fprintf(os.Stderr, "FAIL: qemu-nbd processes left after the suite: %v (killed now)\n", pids)
		for _, pid := range pids {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		code = 1
	}
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.RemoveAll(suite)
	os.Exit(code)
}

// strayQemuNbd returns the qemu-nbd processes with an argument under dir.
func strayQemuNbd(dir string) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		comm, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "comm"))
		if strings.TrimSpace(string(comm)) != "qemu-nbd" {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if bytes.Contains(cmdline, []byte(dir+"/")) {
			pids = append(pids, pid)
		}
	}
	return pids
}
