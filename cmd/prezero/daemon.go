package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/prezero/prezero/internal/source"
)

// readyEnv names the descriptor on which a background mount server reports
// to the command that started it: "ready", or "error CODE" and a message.
const readyEnv = "PREZERO_MOUNT_READY_FD"

// readyPipe returns the readiness pipe if this process is a background
// mount server started by daemonize.
func readyPipe() (*os.File, bool) {
	s := os.Getenv(readyEnv)
	if s == "" {
		return nil, false
	}
	os.Unsetenv(readyEnv) // not for borg or other children
	fd, err := strconv.Atoi(s)
	if err != nil || fd < 3 {
		return nil, false
	}
	// An inherited descriptor is not close-on-exec: without this, a child
	// (the mount's watchdog) would hold the pipe open and the starting
	// command would never see its end.
	syscall.CloseOnExec(fd)
	return os.NewFile(uintptr(fd), "ready"), true
}

// reportReady tells the starting command that the mount is ready, after
// pointing stderr, which that command relays to the user, at /dev/null:
// from now on errors go to the background log.
func reportReady(w *os.File) {
	silenceStderr()
	fmt.Fprintln(w, "ready")
	w.Close()
}

// reportNotReady sends err to the starting command, which prints it, and
// returns it with its exit code; stderr is silenced first so that it is
// not printed twice.
func reportNotReady(w *os.File, err error) error {
	code := 2
	var ee *exitError
	if errors.As(err, &ee) {
		code = ee.code
	}
	silenceStderr()
	fmt.Fprintf(w, "error %d\n%v", code, err)
	w.Close()
	return &exitError{code: code, err: err}
}

func silenceStderr() {
	if null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0); err == nil {
		unix.Dup3(int(null.Fd()), 2, 0)
		null.Close()
	}
}

// daemonize runs this command again as a background mount server in a new
// session, with no terminal and stdio on /dev/null, like mount.fuse,
// sshfs and ntfs-3g do, and returns once the server reports the mount
// ready, or with the server's error. What the server writes to stderr
// until then (fusermount3's complaints, partition notes) is relayed.
func daemonize(ctx context.Context, o mountOptions, src, dir string) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("finding prezero's own binary to start the server: %w", err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	cmd := exec.Command(exe, childArgs(o, src, dir)...)
	cmd.Env = append(os.Environ(), readyEnv+"=3")
	cmd.ExtraFiles = []*os.File{w}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	er, ew, err := os.Pipe()
	if err != nil {
		w.Close()
		return err
	}
	defer er.Close()
	cmd.Stderr = ew
	err = cmd.Start()
	w.Close()
	ew.Close()
	if err != nil {
		return fmt.Errorf("starting the mount server: %w", err)
	}
	relayed := make(chan struct{})
	go func() {
		io.Copy(os.Stderr, er)
		close(relayed)
	}()
	waitRelay := func() {
		select {
		case <-relayed:
		case <-time.After(2 * time.Second):
		}
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	report := make(chan string, 1)
	go func() {
		msg, _ := io.ReadAll(bufio.NewReader(r))
		report <- string(msg)
	}()
	var msg string
	select {
	case msg = <-report:
	case <-ctx.Done():
		// Interrupted while mounting: the server, in its own session,
		// did not see the signal; stop it (it unmounts if it got that far).
		cmd.Process.Signal(syscall.SIGTERM)
		<-exited
		return ctx.Err()
	}
	status, text, _ := strings.Cut(msg, "\n")
	switch {
	case status == "ready":
		waitRelay()
		cmd.Process.Release()
		return nil
	case strings.HasPrefix(status, "error "):
		<-exited
		waitRelay()
		code, _ := strconv.Atoi(strings.TrimPrefix(status, "error "))
		return &exitError{code: max(code, 1), err: errors.New(text)}
	}
	// The server died before reporting.
	err = <-exited
	waitRelay()
	return fmt.Errorf("the mount server exited before the mount was ready: %w", err)
}

// childArgs is the background server's command line: the parsed options
// written back out, and absolute paths, since the server leaves the
// current directory.
func childArgs(o mountOptions, src, dir string) []string {
	args := []string{"mount", "--hole-align", strconv.FormatInt(int64(o.holeAlign), 10)}
	for _, f := range []struct {
		on   bool
		name string
	}{{o.allowOther, "--allow-other"}, {o.force, "--force"}, {o.forceDirty, "--force-dirty"}, {o.forceShare, "--force-share"}, {o.nonempty, "--nonempty"}, {o.zeroSwap, "--zero-swap"}} {
		if f.on {
			args = append(args, f.name)
		}
	}
	if o.logFile != "" {
		args = append(args, "--log-file", absPath(o.logFile))
	}
	// The flags every SOURCE command shares live in package variables.
	if crossCheck {
		args = append(args, "--crosscheck")
	}
	if noCrossCheck {
		args = append(args, "--no-crosscheck")
	}
	if mapMemory != defaultMapMemory {
		args = append(args, "--max-map-memory", mapMemory.String())
	}
	if nbdTimeout != source.DefaultNBDTimeout {
		args = append(args, "--nbd-timeout", nbdTimeout.String())
	}
	return append(args, "--", absPath(src), absPath(dir))
}

func absPath(p string) string {
	if source.IsURI(p) {
		return p
	}
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}
