package nbd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"
)

// QemuOptions say how StartQemu opens an image.
type QemuOptions struct {
	Format     string        // qemu's format name: qcow2, vmdk, vhdx, ...
	ForceShare bool          // qemu-nbd --force-share: read an image a VM has open (unsafe)
	Device     bool          // image is a block device (an LV holding a qcow2)
	Timeout    time.Duration // how long qemu-nbd may stay silent (NewClient)
}

// ErrLocked is wrapped by the error of StartQemu when qemu-nbd cannot lock
// the image because another process (a running VM) has it open for writing.
var ErrLocked = errors.New("the image is in use by another process")

// StartTimeout bounds how long qemu-nbd may take to listen.
var StartTimeout = 30 * time.Second

// Qemu is a qemu-nbd serving one image read-only on a private Unix
// socket, and the Client connected to it. Close stops both. If this
// process dies, even by SIGKILL, the kernel sends qemu-nbd SIGTERM
// (PR_SET_PDEATHSIG); qemu-nbd runs in its own process group, so a
// terminal's Ctrl-C reaches prezero, which stops it, and not qemu-nbd.
type Qemu struct {
	*Client
	Path string
	dir  string
	cmd  *exec.Cmd

	exited  chan struct{} // closed when qemu-nbd has exited
	waitErr error
	stderr  *capBuffer
	once    sync.Once
}

// StartQemu starts qemu-nbd on image and connects to it.
func StartQemu(ctx context.Context, image string, o QemuOptions) (*Qemu, error) {
	if _, err := exec.LookPath("qemu-nbd"); err != nil {
		return nil, fmt.Errorf("%s is a %s image, which prezero reads through qemu-nbd: install qemu-utils (%w)", image, o.Format, err)
	}
	dir, err := os.MkdirTemp("", "prezero-nbd-")
	if err != nil {
		return nil, err
	}
	sock := filepath.Join(dir, "nbd.sock")
	file := QemuFilename(image)
	args := []string{"--read-only", "--socket=" + sock, "--shared=1"}
	if o.ForceShare {
		// qemu-nbd has no --force-share: turn the image file's locking off.
		proto := "file"
		if o.Device {
			proto = "host_device"
		}
		opts := "driver=" + o.Format + ",file.driver=" + proto + ",file.locking=off,file.filename=" +
			strings.ReplaceAll(file, ",", ",,")
		args = append(args, "--image-opts", "--", opts)
	} else {
		args = append(args, "--format="+o.Format, "--", file)
	}
	q := &Qemu{Path: image, dir: dir, exited: make(chan struct{}), stderr: &capBuffer{max: 16 << 10}}
	q.cmd = exec.Command("qemu-nbd", args...)
	q.cmd.Stderr = q.stderr
	q.cmd.Stdout = q.stderr
	q.cmd.Env = append(os.Environ(), "LC_ALL=C")
	q.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}

	// PR_SET_PDEATHSIG fires when the thread that started the child ends,
	// not the process: start and wait on one locked thread, which lives
	// exactly as long as qemu-nbd.
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := q.cmd.Start(); err != nil {
			started <- err
			runtime.UnlockOSThread()
			close(q.exited)
			return
		}
		started <- nil
		q.waitErr = q.cmd.Wait()
		close(q.exited)
		// The thread stays locked and ends with this goroutine.
	}()
	if err := <-started; err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("starting qemu-nbd: %w", err)
	}

	conn, err := q.dial(ctx, sock)
	if err != nil {
		q.stop(false)
		return nil, err
	}
	// qemu-nbd serves one client (--shared=1), connected now: remove the
	// socket, so nobody else can connect and nothing is left behind, even
	// if prezero is killed.
	os.RemoveAll(dir)
	q.Client, err = NewClient(conn, "", "qemu-nbd serving "+image, o.Timeout)
	if err != nil {
		conn.Close()
		// qemu-nbd listens before it opens the image: if it failed,
		// its own message says why.
		select {
		case <-q.exited:
			q.stop(false)
			return nil, q.exitError()
		case <-time.After(2 * time.Second):
		}
		q.stop(false)
		return nil, fmt.Errorf("qemu-nbd serving %s: %w", image, err)
	}
	return q, nil
}

// QemuFilename returns path as qemu must be given it to open that very
// file: qemu takes "PROTOCOL:..." (a colon before any slash) as a protocol
// such as nbd: or http:, so a relative path is made absolute.
func QemuFilename(path string) string {
	if filepath.IsAbs(path) {
		return path
	}
	if abs, err := filepath.Abs(path); err == nil {
		return abs
	}
	return "./" + path
}

// dial connects to the socket once qemu-nbd listens on it, or returns
// qemu-nbd's own error if it exits first.
func (q *Qemu) dial(ctx context.Context, sock string) (net.Conn, error) {
	deadline := time.Now().Add(StartTimeout)
	for wait := time.Millisecond; ; wait = min(2*wait, 50*time.Millisecond) {
		if _, err := os.Stat(sock); err == nil {
			if conn, err := net.Dial("unix", sock); err == nil {
				return conn, nil
			}
		}
		select {
		case <-q.exited:
			return nil, q.exitError()
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("qemu-nbd did not listen on its socket within %v: %s", StartTimeout, q.message())
		}
	}
}

// exitError explains why qemu-nbd exited before serving.
func (q *Qemu) exitError() error {
	msg := q.message()
	if msg == "" {
		msg = fmt.Sprint(q.waitErr)
	}
	if strings.Contains(msg, "lock") {
		return fmt.Errorf("%w: qemu-nbd could not lock %s: %s\n"+
			"A running VM's disk changes under a backup: back up a snapshot instead "+
			"(virsh snapshot-create-as DOMAIN --disk-only, then back up the now read-only base, "+
			"or a libvirt pull-mode backup over nbd://). --force --force-share reads it anyway (unsafe)",
			ErrLocked, q.Path, msg)
	}
	return fmt.Errorf("qemu-nbd could not open %s: %s", q.Path, msg)
}

// message is qemu-nbd's stderr, trimmed.
func (q *Qemu) message() string {
	return strings.ReplaceAll(strings.TrimSpace(q.stderr.String()), "\n", "; ")
}

// Stderr returns what qemu-nbd has written so far (at most 16 KiB).
func (q *Qemu) Stderr() string { return q.stderr.String() }

// Pid returns qemu-nbd's process id.
func (q *Qemu) Pid() int { return q.cmd.Process.Pid }

// Close disconnects and stops qemu-nbd: it exits by itself after its only
// client leaves; if not within a few seconds it is killed.
func (q *Qemu) Close() error {
	var err error
	graceful := true
	if q.Client != nil {
		// A server the client gave up on gets no grace.
		graceful = !errors.Is(q.Client.failure(), ErrStalled)
		err = q.Client.Close()
	}
	q.stop(graceful)
	return err
}

// stop ends qemu-nbd: after a clean disconnect it is given a few seconds
// to exit by itself, otherwise it is sent SIGTERM at once, then SIGKILL.
func (q *Qemu) stop(graceful bool) {
	q.once.Do(func() {
		grace := 3 * time.Second
		if !graceful {
			grace = 0
		}
		select {
		case <-q.exited:
		case <-time.After(grace):
			q.cmd.Process.Signal(syscall.SIGTERM)
			q.cmd.Process.Signal(syscall.SIGCONT) // a stopped one, too
			select {
			case <-q.exited:
			case <-time.After(3 * time.Second):
				q.cmd.Process.Kill()
				<-q.exited
			}
		}
		os.RemoveAll(q.dir)
	})
}

// capBuffer keeps the first max bytes written to it.
type capBuffer struct {
	mu  sync.Mutex
	max int
	b   bytes.Buffer
}

func (c *capBuffer) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if room := c.max - c.b.Len(); room > 0 {
		c.b.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (c *capBuffer) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.b.String()
}
