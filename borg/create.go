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
// r (made Absolute), with CreateFlags (less those extra gives itself; see
// MergeCreateFlags) and then extra. borg inherits stdin, stdout, stderr
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
// If borg exits 0 although Create passed it a signal, Create returns an
// *IgnoredSignalError: the archive is complete, and the caller says why
// the stop it asked for did not happen. (borg's handlers raise an
// exception; when the signal lands while Python runs a __del__ method,
// Python prints "Exception ignored in" and borg carries on.)
func (b *Borg) Create(dir string, r Ref, extra, paths []string) error {
	flags, _, err := MergeCreateFlags(extra)
	if err != nil {
		return err
	}
	args := b.CreateArgs(r.Absolute(), flags, extra, paths)
	cmd := exec.Command(b.Path, args...)
	cmd.Dir = dir
	cmd.Env = b.environ()
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", b.Path, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	var passed os.Signal
	for {
		select {
		case sig := <-sigs:
			if sig == syscall.SIGTERM || !fromTerminal() {
				cmd.Process.Signal(sig)
				passed = sig
			}
		case err := <-exited:
			if err == nil {
				if passed != nil {
					return &IgnoredSignalError{Signal: passed}
				}
				return nil
			}
			return exitError(b.Path, args, err, &tailBuffer{})
		}
	}
}

// IgnoredSignalError says that borg create finished its archive and
// exited 0 although it was passed Signal.
type IgnoredSignalError struct {
	Signal os.Signal
}

func (e *IgnoredSignalError) Error() string {
	return fmt.Sprintf("borg was sent %v but finished the archive anyway (exit code 0): the archive is complete", e.Signal)
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

// Chunker is the chunker a --chunker-params value chooses.
type Chunker struct {
	Fixed  bool   // borg's fixed-size chunker; false: buzhash
	Size   int64  // Fixed: the block size
	Header int64  // Fixed: the size of the header chunk before the blocks
	Spec   string // the value as given
}

// ParseChunkerParams reads a --chunker-params value: "fixed,SIZE[,HEADER]",
// "buzhash,MIN,MAX,MASK,WINDOW", "MIN,MAX,MASK,WINDOW" (buzhash, as borg 1
// reads it) or "default" (buzhash).
func ParseChunkerParams(spec string) (Chunker, error) {
	c := Chunker{Spec: spec}
	f := strings.Split(spec, ",")
	switch {
	case f[0] == "fixed" && (len(f) == 2 || len(f) == 3):
		c.Fixed = true
		n, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil || n <= 0 {
			return c, fmt.Errorf("--chunker-params %s: %q is not a block size", spec, f[1])
		}
		c.Size = n
		if len(f) == 3 {
			h, err := strconv.ParseInt(f[2], 10, 64)
			if err != nil || h < 0 {
				return c, fmt.Errorf("--chunker-params %s: %q is not a header size", spec, f[2])
			}
			c.Header = h
		}
		return c, nil
	case spec == "default", f[0] == "buzhash", len(f) == 4:
		return c, nil
	}
	return c, fmt.Errorf("--chunker-params %s: not fixed,SIZE[,HEADER], buzhash,MIN,MAX,MASK,WINDOW or default", spec)
}

// MergeCreateFlags returns CreateFlags without the ones extra (the user's
// borg create arguments) gives itself, since borg refuses an option given
// twice, and the chunker extra chooses (nil if it chooses none).
func MergeCreateFlags(extra []string) (flags []string, chunker *Chunker, err error) {
	has := map[string]bool{}
	for i := 0; i < len(extra); i++ {
		a := extra[i]
		name, val, eq := strings.Cut(a, "=")
		switch name {
		case "--sparse", "--read-special":
			has[name] = true
		case "--chunker-params":
			has[name] = true
			if !eq {
				if i+1 >= len(extra) {
					return nil, nil, fmt.Errorf("--chunker-params needs a value")
				}
				i++
				val = extra[i]
			}
			c, err := ParseChunkerParams(val)
			if err != nil {
				return nil, nil, err
			}
			chunker = &c
		}
	}
	for i := 0; i < len(CreateFlags); i++ {
		f := CreateFlags[i]
		if has[f] {
			if f == "--chunker-params" {
				i++ // and its value
			}
			continue
		}
		flags = append(flags, f)
	}
	return flags, chunker, nil
}
