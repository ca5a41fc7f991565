package fusefs

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// This file does what mount.fuse and libfuse do: it mounts a FUSE
// filesystem and holds the /dev/fuse descriptor that serves it, and it
// unmounts. go-fuse can do both, but it opens /dev/fuse without
// close-on-exec as root, and it waits for fusermount3 to exit, which
// rules out none of that: every child (borg) would inherit the descriptor
// and keep a dead server's mount hanging instead of failing.

// FusermountError is a failure of fusermount3 (or fusermount), the
// set-user-ID helper through which users who are not root mount and
// unmount.
type FusermountError struct {
	Prog   string // the helper that ran, as found on PATH
	Code   int    // its exit code; -1 if it did not exit normally
	Stderr string // what it said, on one line
}

func (e *FusermountError) Error() string {
	msg := fmt.Sprintf("%s exited with code %d", filepath.Base(e.Prog), e.Code)
	if e.Stderr != "" {
		msg += " (" + e.Stderr + ")"
	}
	return msg
}

// Is lets errors.Is(err, syscall.EBUSY) match a helper that failed
// because the mount is busy.
func (e *FusermountError) Is(target error) bool {
	return target == syscall.EBUSY && strings.Contains(e.Stderr, "busy")
}

// fusermount returns the helper's path: fusermount3, or fusermount from
// FUSE 2.
func fusermount() (string, error) {
	var errs []error
	for _, name := range []string{"fusermount3", "fusermount"} {
		path, err := exec.LookPath(name)
		if err == nil {
			return path, nil
		}
		errs = append(errs, err)
	}
	return "", fmt.Errorf("mounting without root needs fusermount3 (install fuse3): %w", errors.Join(errs...))
}

// runFusermount runs the helper with args and extra descriptors from 3 on;
// a failure is a *FusermountError.
func runFusermount(args []string, env []string, files []*os.File) error {
	bin, err := fusermount()
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.Env = append(os.Environ(), env...)
	cmd.ExtraFiles = files
	cmd.Dir = "/"
	err = cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return &FusermountError{Prog: bin, Code: ee.ExitCode(), Stderr: oneLine(stderr.String())}
	}
	if err != nil {
		return fmt.Errorf("running %s: %w", bin, err)
	}
	if s := oneLine(stderr.String()); s != "" {
		fmt.Fprintln(os.Stderr, s) // a warning from a helper that succeeded
	}
	return nil
}

// oneLine joins the lines of a helper's message.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// mountParams are what the kernel is told at mount time.
type mountParams struct {
	fsName     string // the mount's source, verbatim
	subtype    string // the type is fuse.SUBTYPE
	maxRead    int
	allowOther bool
}

// kernelMount mounts a read-only FUSE filesystem on dir and returns the
// /dev/fuse descriptor that serves it, close-on-exec from the first
// instant. Root mounts with mount(2); everyone else, or root where
// mount(2) is not allowed, through fusermount3.
func kernelMount(dir string, p mountParams) (int, error) {
	if os.Geteuid() == 0 {
		fd, err := directMount(dir, p)
		if err == nil {
			return fd, nil
		}
		if _, ferr := fusermount(); !errors.Is(err, unix.EPERM) || ferr != nil {
			return -1, err
		}
	}
	return fusermountMount(dir, p)
}

func directMount(dir string, p mountParams) (int, error) {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return -1, &os.PathError{Op: "stat", Path: dir, Err: err}
	}
	fd, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, &os.PathError{Op: "open", Path: "/dev/fuse", Err: err}
	}
	opts := []string{
		fmt.Sprintf("fd=%d", fd),
		fmt.Sprintf("rootmode=%o", st.Mode&unix.S_IFMT),
		fmt.Sprintf("user_id=%d", os.Geteuid()),
		fmt.Sprintf("group_id=%d", os.Getegid()),
		fmt.Sprintf("max_read=%d", p.maxRead),
		"default_permissions",
	}
	if p.allowOther {
		opts = append(opts, "allow_other")
	}
	flags := uintptr(unix.MS_NOSUID | unix.MS_NODEV | unix.MS_RDONLY)
	if err := unix.Mount(p.fsName, dir, "fuse."+p.subtype, flags, strings.Join(opts, ",")); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("mount(2) of a FUSE filesystem on %s: %w", dir, err)
	}
	return fd, nil
}

// fusermountMount has fusermount3 mount dir and pass back the descriptor
// over a socket (libfuse's protocol: the socket is the helper's descriptor
// 3, named by _FUSE_COMMFD). The descriptor arrives close-on-exec.
func fusermountMount(dir string, p mountParams) (int, error) {
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, os.NewSyscallError("socketpair", err)
	}
	local := pair[0]
	defer unix.Close(local)
	remote := os.NewFile(uintptr(pair[1]), "fusermount socket")
	opts := []string{"default_permissions", "ro", "subtype=" + p.subtype, "fsname=" + optEscaper.Replace(p.fsName), fmt.Sprintf("max_read=%d", p.maxRead)}
	if p.allowOther {
		opts = append(opts, "allow_other")
	}
	err = runFusermount([]string{"-o", strings.Join(opts, ","), "--", dir}, []string{"_FUSE_COMMFD=3"}, []*os.File{remote})
	remote.Close()
	if err != nil {
		return -1, err
	}
	buf := make([]byte, 8)
	oob := make([]byte, unix.CmsgSpace(4))
	_, oobn, _, _, err := unix.Recvmsg(local, buf, oob, unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		Unmount(dir, true)
		return -1, fmt.Errorf("receiving the FUSE descriptor from fusermount3: %w", err)
	}
	fd := -1
	if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil && len(msgs) == 1 {
		if fds, err := unix.ParseUnixRights(&msgs[0]); err == nil && len(fds) == 1 {
			fd = fds[0]
		}
	}
	if fd < 0 {
		Unmount(dir, true)
		return -1, errors.New("fusermount3 mounted but passed back no FUSE descriptor")
	}
	return fd, nil
}

// optEscaper escapes a value for fusermount3's -o list, which splits at
// commas and takes a backslash to escape the next character.
var optEscaper = strings.NewReplacer(`\`, `\\`, ",", `\,`)

// Unmount unmounts the FUSE filesystem mounted on dir: with umount2(2) as
// root, otherwise with fusermount3 -u. lazy detaches it even while files
// are open on it (MNT_DETACH, fusermount3 -z); its server then ends when
// the last one is closed. A busy mount's error matches syscall.EBUSY; a
// helper's failure is a *FusermountError.
func Unmount(dir string, lazy bool) error {
	if os.Geteuid() == 0 {
		flags := 0
		if lazy {
			flags = unix.MNT_DETACH
		}
		err := unix.Unmount(dir, flags)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, unix.EBUSY):
			return fmt.Errorf("%s is busy: close the files open on it (fuser -vm %s): %w", dir, dir, err)
		case !errors.Is(err, unix.EPERM):
			return fmt.Errorf("unmounting %s: %w", dir, err)
		}
		// Root without CAP_SYS_ADMIN (a container): try the helper.
	}
	args := []string{"-u"}
	if lazy {
		args = append(args, "-z")
	}
	err := runFusermount(append(args, "--", dir), nil, nil)
	if errors.Is(err, syscall.EBUSY) {
		return fmt.Errorf("%s is busy: close the files open on it (fuser -vm %s): %w", dir, dir, err)
	}
	return err
}

// pollHack makes the kernel learn at once that the server does not
// implement poll, as go-fuse's own mount does (which a descriptor handed
// to it skips): otherwise the Go runtime's epoll registration of a file
// that this very process opens on the mount sends a POLL request while
// holding the runtime's last processor, and with GOMAXPROCS=1 nothing is
// left to answer it.
//
// go-fuse opens a file on the mount from the serving process itself; a
// SIGKILL that lands while that request is in flight leaves the process
// unable to exit (the requesting thread waits uninterruptibly for an answer
// its own dead threads will never send, and keeps the /dev/fuse descriptor
// open). So the request is made by a child: bash's "read -t 0" polls its
// input with select(2). The kernel then remembers for the connection that
// poll is not implemented. It is best effort: without bash, or if the
// mount is already gone (unmounted from outside at once), nothing is done.
func pollHack(dir string) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		return
	}
	cmd := exec.Command(bash, "-c", `read -t 0 <"$1"`, "prezero-poll-hack", dir+"/.go-fuse-epoll-hack")
	cmd.Dir = "/"
	cmd.Run() // exit 1: "no input available", as expected
}
