package main

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/syslog"
	"os"
	"path/filepath"
	"sync/atomic"

	"github.com/spf13/pflag"

	"github.com/prezero/prezero/fusefs"
	"github.com/prezero/prezero/internal/inuse"
)

type mountOptions struct {
	serveOptions
	foreground bool
	logFile    string
	nonempty   bool
}

func (o *mountOptions) AddFlags(f *pflag.FlagSet) {
	f.BoolVarP(&o.foreground, "foreground", "f", false, "stay attached: serve until unmounted or interrupted (SIGINT/SIGTERM unmount)")
	f.BoolVar(&o.allowOther, "allow-other", false, "let other users read the files too (FUSE allow_other; needs user_allow_other in /etc/fuse.conf unless root)")
	f.BoolVar(&o.nonempty, "nonempty", false, "mount on a directory that is not empty, hiding its files until unmounted")
	o.serveOptions.AddFlags(f)
	f.StringVar(&o.logFile, "log-file", "", "in the background, append errors to this file instead of syslog")
	f.BoolVar(&o.debug, "debug", false, "log every FUSE request (with --foreground)")
	f.MarkHidden("debug")
}

func init() {
	var opts mountOptions
	register(&command{
		name:  "mount",
		usage: "SOURCE MOUNTPOINT",
		short: "mount SOURCE's zeroed streams read-only with FUSE",
		long: `Mount SOURCE (an image file or block device, opened read-only) on MOUNTPOINT
as a read-only directory of image files:
  disk.img     the whole source, each recognised partition's free blocks zeroed
  header.img   the bytes before the first partition, unchanged
  partN.img    partition N alone, numbered as 'prezero map' shows
  lv/VG-LV.img an LVM logical volume alone, named as device-mapper names it
Unallocated ranges read as zeros without reading the source, and whole free
windows of --hole-align bytes are holes to lseek(SEEK_HOLE), which
'borg create --sparse' skips. Every file's mtime and ctime is the time of
the mount, so each mount is new to borg's files cache.

The command returns once the mount is ready and serves in the background;
unmount with 'prezero umount MOUNTPOINT' (or fusermount3 -u, or umount as
root). A block device mounted read-write is refused: mount a snapshot.
If SOURCE changes while mounted, reads fail with EIO. MOUNTPOINT must be an
empty directory (see --nonempty) and not already a prezero mount. If the
server is killed, its mount goes away with it.`,
		flags: opts.AddFlags,
		run:   func(ctx context.Context, args []string) error { return runMount(ctx, opts, args) },
	})
}

func runMount(ctx context.Context, opts mountOptions, args []string) error {
	if len(args) != 2 {
		return usagef("expected SOURCE MOUNTPOINT, got %d arguments", len(args))
	}
	src, dir := args[0], args[1]
	if err := checkMountPoint(dir, opts.nonempty); err != nil {
		return err
	}
	ready, inChild := readyPipe()
	if !opts.foreground && !inChild {
		return daemonize(ctx, opts, src, dir)
	}
	// Until the mount is ready, stderr reaches the user (a background
	// server's is relayed by the starting command); after that a
	// background server logs to --log-file or syslog.
	var bg atomic.Pointer[func(string, ...any)]
	logf := func(format string, a ...any) {
		if l := bg.Load(); l != nil {
			(*l)(format, a...)
			return
		}
		fmt.Fprintf(os.Stderr, "prezero mount: "+format+"\n", a...)
	}
	s, err := serve(src, dir, opts.serveOptions, logf)
	if err != nil {
		if inChild {
			return reportNotReady(ready, err)
		}
		return err
	}
	defer s.close()
	if inChild {
		l := backgroundLog(opts.logFile)
		bg.Store(&l)
		reportReady(ready)
		// Keep no directory busy, as daemons do; paths were made absolute.
		os.Chdir("/")
	}
	return serveUntilDone(ctx, s)
}

// checkMountPoint refuses a mount point that is not a directory, one that a
// prezero mount already covers (live or dead), and unless nonempty one that
// is not empty: a mount hides what is below it, which would look lost.
func checkMountPoint(dir string, nonempty bool) error {
	// Resolve symlinks in the parent only: a dead mount cannot be stat'ed.
	abs := absPath(dir)
	if parent, err := filepath.EvalSymlinks(filepath.Dir(abs)); err == nil {
		abs = filepath.Join(parent, filepath.Base(abs))
	}
	fstype, err := inuse.Mounted(abs)
	if err != nil {
		return err
	}
	if fstype == fusefs.FSType {
		return fmt.Errorf("%s is already a prezero mount; unmount it first: prezero umount %s", dir, dir)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("mount point: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("mount point %s is not a directory", dir)
	}
	if nonempty {
		return nil
	}
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("mount point: %w", err)
	}
	defer f.Close()
	if names, err := f.Readdirnames(1); len(names) > 0 {
		return fmt.Errorf("mount point %s is not empty: the mount would hide its files; choose an empty directory, or pass --nonempty", dir)
	} else if err != nil && err != io.EOF {
		return fmt.Errorf("mount point: %w", err)
	}
	return nil
}

// serveUntilDone serves until the mount is unmounted from outside, or
// until ctx is cancelled (SIGINT, SIGTERM), which unmounts it.
func serveUntilDone(ctx context.Context, s *served) error {
	done := make(chan struct{})
	go func() { s.wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	if err := s.unmount(); err != nil {
		return err
	}
	<-done
	return nil
}

// backgroundLog returns a logger for a mount without a terminal: the file
// given by --log-file, else syslog, else nothing.
func backgroundLog(file string) func(string, ...any) {
	if file != "" {
		f, err := os.OpenFile(file, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err == nil {
			l := log.New(f, "prezero mount: ", log.LstdFlags)
			return func(format string, a ...any) { l.Printf(format, a...) }
		}
	}
	if w, err := syslog.New(syslog.LOG_DAEMON|syslog.LOG_ERR, "prezero"); err == nil {
		return func(format string, a ...any) { w.Err(fmt.Sprintf(format, a...)) }
	}
	return func(string, ...any) {}
}
