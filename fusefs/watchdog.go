package fusefs

import (
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"

	"github.com/prezero/prezero/internal/mounttab"
)

// A watchdog removes the mount of a server that dies without unmounting
// (SIGKILL, the OOM killer, a crash). It is a small shell process started
// before the mount, reading a pipe whose only writer is the server: the
// server tells it the mount's device number once mounted, and "done" once
// the mount is gone. If the pipe ends without "done", the server died; the
// watchdog then aborts the FUSE connection (as root, when fusectl is
// mounted), unmounts lazily, but only if the mount on top of the directory
// is still the server's (same device number), and removes the directory
// if it was a temporary one.
//
// The write end is close-on-exec, as every descriptor of the server is, so
// no child (borg) can keep the watchdog waiting.
type watchdog struct {
	w      *os.File
	once   sync.Once
	exited chan struct{} // closed when the watchdog process has exited
}

// watchdogScript is the watchdog. $DIR is the mount point, $ESCAPED the
// same as /proc/self/mountinfo writes it, $SOURCE the mount's source as
// mountinfo writes it, $FUSERMOUNT the helper to unmount with (empty as
// root: umount), $RMDIR 1 to remove $DIR.
//
// The server writes "mounting" just before mount(2), "dev=MAJ:MIN" just
// after, and "done" once the mount is gone. A server killed between
// mount(2) and "dev=" leaves a mount known by its type and source only.
const watchdogScript = `trap '' HUP INT TERM PIPE
mounting= dev=
while IFS= read -r line; do
	case $line in
	done) exit 0 ;;
	mounting) mounting=1 ;;
	dev=*) dev=${line#dev=} ;;
	esac
done
if [ -n "$mounting" ]; then
	dev=$(DEV=$dev awk '$5 == ENVIRON["ESCAPED"] {
		top = $3
		for (i = 7; i < NF && $i != "-"; i++) ;
		fstype = $(i + 1); source = $(i + 2)
	}
	END {
		if (ENVIRON["DEV"] != "") ours = top == ENVIRON["DEV"]
		else ours = fstype == "fuse.prezero" && source == ENVIRON["SOURCE"]
		if (ours) print top
	}' /proc/self/mountinfo)
	if [ -n "$dev" ]; then
		abort=/sys/fs/fuse/connections/${dev#*:}/abort
		if [ -w "$abort" ]; then echo 1 >"$abort"; fi
		if [ -n "$FUSERMOUNT" ]; then "$FUSERMOUNT" -u -z -- "$DIR"; else umount -l -- "$DIR"; fi
	fi
fi
if [ "$RMDIR" = 1 ]; then rmdir -- "$DIR"; fi
`

// startWatchdog starts the watchdog of a mount on dir, which must be
// absolute, clean and free of symlinks, as mountinfo shows it.
func startWatchdog(dir, source string, rmdir bool) (*watchdog, error) {
	helper := ""
	if os.Geteuid() != 0 {
		var err error
		if helper, err = fusermount(); err != nil {
			return nil, err
		}
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	cmd := exec.Command("/bin/sh", "-c", watchdogScript, "prezero-watchdog")
	cmd.Stdin = r
	cmd.Dir = "/"
	rm := "0"
	if rmdir {
		rm = "1"
	}
	cmd.Env = []string{
		"PATH=/usr/sbin:/usr/bin:/sbin:/bin",
		"DIR=" + dir,
		"ESCAPED=" + mounttab.Escape(dir),
		"SOURCE=" + mounttab.Escape(source),
		"FUSERMOUNT=" + helper,
		"RMDIR=" + rm,
	}
	// Its own process group: a Ctrl-C meant for the server and borg must
	// not end the watchdog too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		w.Close()
		return nil, fmt.Errorf("starting the mount's watchdog: %w", err)
	}
	g := &watchdog{w: w, exited: make(chan struct{})}
	go func() {
		cmd.Wait()
		close(g.exited)
	}()
	return g, nil
}

// mounting tells the watchdog that a mount is about to be made.
func (g *watchdog) mounting() error {
	_, err := g.w.WriteString("mounting\n")
	return err
}

// arm tells the watchdog the mount's device number (MAJ:MIN).
func (g *watchdog) arm(dev string) error {
	_, err := fmt.Fprintf(g.w, "dev=%s\n", dev)
	return err
}

// disarm tells the watchdog that the mount is gone: it exits.
func (g *watchdog) disarm() {
	g.once.Do(func() {
		g.w.WriteString("done\n")
		g.w.Close()
	})
}
