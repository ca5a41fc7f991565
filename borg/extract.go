package borg

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// stderrTail is how much of borg's stderr an ExitError keeps.
const stderrTail = 4096

// Item is one entry of an archive as "borg list" shows it.
type Item struct {
	Path string
	Size int64
}

// List runs "borg list" on the archive r and returns its items with their
// sizes. A failure (no such repository or archive) is an *ExitError with
// borg's message.
func (b *Borg) List(ctx context.Context, r Ref) ([]Item, error) {
	args := b.ListArgs(r)
	cmd := exec.CommandContext(ctx, b.Path, args...)
	cmd.Env = b.environ()
	var stdout bytes.Buffer
	tail := &tailBuffer{max: stderrTail}
	cmd.Stdout, cmd.Stderr = &stdout, tail
	if err := cmd.Run(); err != nil {
		return nil, exitError(b.Path, args, err, tail)
	}
	var items []Item
	sc := bufio.NewScanner(&stdout)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		sizeS, path, ok := strings.Cut(sc.Text(), " ")
		size, err := strconv.ParseInt(sizeS, 10, 64)
		if !ok || err != nil || size < 0 {
			return nil, fmt.Errorf("borg %s printed %q, not \"SIZE PATH\"", strings.Join(args, " "), sc.Text())
		}
		items = append(items, Item{Path: path, Size: size})
	}
	return items, sc.Err()
}

// Extract starts "borg extract --stdout" for path in the archive r and
// returns its standard output. Reads return borg's failure (an *ExitError
// with the tail of its stderr) in place of io.EOF; Close stops borg if it
// is still running.
func (b *Borg) Extract(ctx context.Context, r Ref, path string) (*Stream, error) {
	args := b.ExtractStdoutArgs(r, path)
	cmd := exec.CommandContext(ctx, b.Path, args...)
	cmd.Env = b.environ()
	s := &Stream{cmd: cmd, args: args, tail: &tailBuffer{max: stderrTail}}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", b.Path, err)
	}
	s.stdout = stdout
	if f, ok := stdout.(*os.File); ok {
		// A 1 MiB pipe instead of 64 KiB: the pipe, not borg, would set
		// the pace.
		_, _ = unix.FcntlInt(f.Fd(), unix.F_SETPIPE_SZ, 1<<20)
	}
	s.drained = make(chan struct{})
	go func() {
		defer close(s.drained)
		io.Copy(s.tail, stderr)
	}()
	return s, nil
}

// Stream is the standard output of a running borg extract --stdout.
type Stream struct {
	cmd     *exec.Cmd
	args    []string
	stdout  io.ReadCloser
	tail    *tailBuffer
	drained chan struct{} // closed when stderr is fully read

	waited  bool
	waitErr error // borg's failure, reported by Read and Close
	warning *ExitError
}

// Read implements io.Reader. At the end of borg's output it waits for borg
// and returns its failure, if any, instead of io.EOF. A warning (exit code
// 1) still ends in io.EOF; Warning reports it.
func (s *Stream) Read(p []byte) (int, error) {
	if s.waited {
		if s.waitErr != nil {
			return 0, s.waitErr
		}
		return 0, io.EOF
	}
	n, err := s.stdout.Read(p)
	if err == io.EOF {
		if werr := s.wait(); werr != nil {
			return n, werr
		}
	}
	return n, err
}

func (s *Stream) wait() error {
	if s.waited {
		return s.waitErr
	}
	s.waited = true
	<-s.drained // Wait closes the pipes: read stderr to the end first
	err := s.cmd.Wait()
	if err != nil {
		ee := exitError(s.cmd.Path, s.args, err, s.tail)
		var be *ExitError
		if errors.As(ee, &be) && be.Warning() {
			s.warning = be
			return nil
		}
		s.waitErr = ee
	}
	return s.waitErr
}

// Close stops borg if it has not finished and waits for it. It returns
// borg's failure if borg had finished on its own.
func (s *Stream) Close() error {
	if s.waited {
		return s.waitErr
	}
	if s.cmd.ProcessState == nil && s.cmd.Process != nil {
		// Unread output remains: borg is not done and no one wants the rest.
		s.stdout.Close()
		s.cmd.Process.Signal(os.Interrupt)
	}
	s.wait()
	return nil
}

// Stdout returns the read end of borg's standard output (an *os.File pipe),
// for tuning; read the Stream itself.
func (s *Stream) Stdout() io.Reader { return s.stdout }

// Warning returns borg's exit-code-1 warning, if it ended with one.
func (s *Stream) Warning() *ExitError { return s.warning }

// exitError turns a failed run into an *ExitError with borg's exit code
// and the tail of its stderr; other failures (not started) pass through.
func exitError(path string, args []string, err error, tail *tailBuffer) error {
	var xe *exec.ExitError
	if !errors.As(err, &xe) {
		return err
	}
	code := xe.ExitCode()
	if ws, ok := xe.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		code = 128 + int(ws.Signal()) // as a shell reports it
	}
	return &ExitError{Path: path, Args: args, Code: code, Stderr: tail.String()}
}

// tailBuffer keeps the last max bytes written to it, trimmed to whole lines.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > 2*t.max {
		t.b = append(t.b[:0], t.b[len(t.b)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	b := t.b
	if len(b) > t.max {
		b = b[len(b)-t.max:]
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return strings.TrimSpace(string(b))
}
