package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/pflag"

	"github.com/prezero/prezero/borg"
)

type backupOptions struct {
	serveOptions
	partitions bool
	borgPath   string

	flags *pflag.FlagSet // for the position of "--"
}

func (o *backupOptions) AddFlags(f *pflag.FlagSet) {
	f.BoolVar(&o.partitions, "partitions", false, "store header.img and each partN.img instead of disk.img")
	f.StringVar(&o.borgPath, "borg", "", "borg binary to run (default: borg, else borg2 on PATH)")
	o.serveOptions.AddFlags(f)
	o.flags = f
}

func init() {
	var opts backupOptions
	register(&command{
		name:  "backup",
		usage: "SOURCE REPO::ARCHIVE [-- BORG_CREATE_ARGS...]",
		short: "back SOURCE up with borg create through a private mount",
		long: `Mount SOURCE on a private temporary directory and run borg create there,
storing disk.img (or, with --partitions, header.img and each partN.img).
borg runs with ` + strings.Join(borg.CreateFlags, " ") + `
and then BORG_CREATE_ARGS; its prompts, progress and statistics are shown as
usual and BORG_* variables are passed through. Borg 1.x is called with
REPO::ARCHIVE, borg 2 with -r REPO create ARCHIVE; an empty REPO (::ARCHIVE)
leaves the repository to BORG_REPO.

borg runs inside the mount: a relative REPO is made absolute, but relative
paths in BORG_CREATE_ARGS (--patterns-from ...) are not. If you change the
chunk size with --chunker-params, give the same size to --hole-align.

The mount is removed on success, on error and on Ctrl-C, which borg receives
too: borg 1.x answers a first Ctrl-C with a checkpoint and finishes the image
it is reading; a second one stops it at once. Exit codes are borg's: 0
success, 1 warning, 2 error, 128+N signal.`,
		flags: opts.AddFlags,
		run:   func(ctx context.Context, args []string) error { return runBackup(ctx, opts, args) },
	})
}

func runBackup(ctx context.Context, opts backupOptions, args []string) (err error) {
	pos, extra := args, []string(nil)
	if dash := opts.flags.ArgsLenAtDash(); dash >= 0 {
		pos, extra = args[:dash], args[dash:]
	}
	if len(pos) != 2 {
		return usagef("expected SOURCE REPO::ARCHIVE [-- BORG_CREATE_ARGS...], got %d arguments before --", len(pos))
	}
	ref, err := borg.ParseRef(pos[1])
	if err != nil {
		return usagef("%v", err)
	}
	// Asking borg its version costs a Python start-up (~0.3 s): do it
	// while the source is mapped and mounted.
	type found struct {
		b   *borg.Borg
		err error
	}
	finding := make(chan found, 1)
	go func() {
		b, err := borg.Find(ctx, opts.borgPath)
		finding <- found{b, err}
	}()
	dir, err := os.MkdirTemp("", "prezero-backup-")
	if err != nil {
		return err
	}
	defer func() {
		if rerr := os.Remove(dir); rerr != nil && err == nil {
			err = fmt.Errorf("removing the mount point: %w", rerr)
		}
	}()
	logf := func(format string, a ...any) { fmt.Fprintf(os.Stderr, "prezero backup: "+format+"\n", a...) }
	opts.tempDir = true // if prezero is killed, its mount's watchdog removes dir
	s, err := serve(pos[0], dir, opts.serveOptions, logf)
	if err != nil {
		return err
	}
	defer s.close()
	defer func() {
		if uerr := s.unmount(); uerr != nil && err == nil {
			err = uerr
		}
		s.wait()
	}()
	f := <-finding
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if f.err != nil {
		return f.err
	}
	paths := []string{"disk.img"}
	if opts.partitions {
		paths = s.partFiles()
	}
	err = f.b.Create(dir, ref, extra, paths)
	var be *borg.ExitError
	if errors.As(err, &be) {
		if be.Warning() {
			return &exitError{code: 1, err: fmt.Errorf("borg finished with warnings (exit code 1)")}
		}
		return &exitError{code: be.Code, err: err}
	}
	return err
}
