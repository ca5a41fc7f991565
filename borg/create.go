package borg

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// ChunkSize is the fixed chunk size prezero asks borg for, 4 MiB: the
// default window of the holes a prezero mount reports (fusefs), so that
// chunk boundaries line up with holes and stay put when data moves.
const ChunkSize = 4 << 20

// CreateFlags are prezero's flags for "borg create" of image files: read
// their contents (--read-special), skip the holes lseek(SEEK_HOLE) reports
// without reading them (--sparse), and cut fixed ChunkSize chunks.
var CreateFlags = []string{"--read-special", "--sparse", "--chunker-params", "fixed," + strconv.Itoa(ChunkSize)}

// Create runs "borg create" in dir, storing paths (relative to dir) into
// r (made Absolute), with CreateFlags and then extra. borg inherits stdin, stdout, stderr
// and the environment, so its passphrase prompt, progress, stats and
// BORG_* settings work as usual.
//
// While borg runs, SIGINT, SIGTERM and SIGHUP sent to this process are
// passed on to borg, which stops cleanly, and Create returns when it has
// exited. A SIGINT or SIGHUP that a terminal sent to its whole foreground
// process group has reached borg already and is not sent twice.
//
// Create returns nil on success and an *ExitError with borg's exit code
// otherwise: 1 (warnings only), 2 (error), 128+N (killed by signal N).
func (b *Borg) Create(dir string, r Ref, extra, paths []string) error {
	args := b.CreateArgs(r.Absolute(), CreateFlags, extra, paths)
	cmd := exec.Command(b.Path, args...)
	cmd.Dir = dir
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", b.Path, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	for {
		select {
		case sig := <-sigs:
			if sig == syscall.SIGTERM || !fromTerminal() {
				cmd.Process.Signal(sig)
			}
		case err := <-exited:
			if err == nil {
				return nil
			}
			return exitError(b.Path, args, err, &tailBuffer{})
		}
	}
}

// fromTerminal reports whether this process is in the foreground process
// group of its controlling terminal: then a SIGINT or SIGHUP most likely
// came from the terminal, which signals the whole group, borg included.
func fromTerminal() bool {
	tty, err := os.Open("/dev/tty")
	if err != nil {
		return false
	}
	defer tty.Close()
	pgrp, err := unix.IoctlGetInt(int(tty.Fd()), unix.TIOCGPGRP)
	return err == nil && pgrp == unix.Getpgrp()
}

// Absolute returns r with a relative local repository path made absolute
// (an empty Repo stands for $BORG_REPO): Create runs borg in another
// directory. URLs (ssh://, file://) and host:path repositories are kept.
func (r Ref) Absolute() Ref {
	repo := r.Repo
	if repo == "" {
		repo = os.Getenv("BORG_REPO")
	}
	if repo == "" || filepath.IsAbs(repo) || strings.Contains(repo, "://") {
		return r
	}
	if i := strings.IndexByte(repo, ':'); i >= 0 && !strings.Contains(repo[:i], "/") {
		return r // host:path
	}
	abs, err := filepath.Abs(repo)
	if err != nil {
		return r
	}
	return Ref{Repo: abs, Archive: r.Archive}
}
