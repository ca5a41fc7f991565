package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/pflag"

	"github.com/prezero/prezero/borg"
	"github.com/prezero/prezero/internal/bytesize"
	"github.com/prezero/prezero/internal/imgname"
)

type backupOptions struct {
	serveOptions
	partitions     bool
	borgPath       string
	requireZeroing bool

	flags *pflag.FlagSet // for the position of "--"
}

func (o *backupOptions) AddFlags(f *pflag.FlagSet) {
	f.BoolVar(&o.partitions, "partitions", false, "store header.img and each partN.img instead of disk.img")
	f.StringVar(&o.borgPath, "borg", "", "borg binary to run (default: borg, else borg2 on PATH)")
	f.BoolVar(&o.requireZeroing, "require-zeroing", false, "fail (exit code 2, before borg runs) if nothing of SOURCE would be zeroed, instead of warning")
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
paths in BORG_CREATE_ARGS (--patterns-from ...) are not. If
BORG_CREATE_ARGS give --chunker-params, --sparse or --read-special, prezero
drops its own copy. --chunker-params fixed,SIZE sets --hole-align to SIZE;
buzhash is refused: the mount reports free windows as holes, which only
borg's fixed chunker turns into stable chunk boundaries (for buzhash, pipe
'prezero cat' into 'borg create ... -' instead).

The mount is removed on success, on error and on Ctrl-C, which borg receives
too: borg 1.x answers a first Ctrl-C with a checkpoint and finishes the image
it is reading; a second one stops it at once. Exit codes are borg's: 0
success, 1 warning, 2 error, 128+N signal.`,
		flags:    opts.AddFlags,
		run:      func(ctx context.Context, args []string) error { return runBackup(ctx, opts, args) },
		flagHint: borgFlagHint,
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
	if err := chunkerHoleAlign(&opts, extra); err != nil {
		return err
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
	if s.src.Disk().Free().FreeBytes() == 0 {
		msg := "nothing of " + pos[0] + " would be zeroed, so the archive stores it whole: " + strings.Join(passThroughReasons(s.src), "; ")
		if opts.requireZeroing {
			return fmt.Errorf("%s; refusing (--require-zeroing); nothing was stored", msg)
		}
		logf("warning: %s", msg)
	}
	f := <-finding
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if f.err != nil {
		return f.err
	}
	if err := checkBorgRepo(f.b, ref.Absolute()); err != nil {
		return err
	}
	paths := []string{imgname.Disk}
	if opts.partitions {
		paths = s.partFiles()
	}
	err = f.b.Create(dir, ref, extra, paths)
	var ignored *borg.IgnoredSignalError
	if errors.As(err, &ignored) {
		// Not a failure: say why the stop asked for did not happen, and
		// let the exit code tell the truth about the archive.
		logf("%v", err)
		return nil
	}
	var be *borg.ExitError
	if errors.As(err, &be) {
		if be.Warning() {
			return &exitError{code: 1, err: fmt.Errorf("borg finished with warnings (exit code 1)")}
		}
		return &exitError{code: be.Code, err: err}
	}
	return err
}

// borgFlagHint answers an unknown flag given to backup, most likely one of
// borg create's (--stats, --progress, --json, -v): they go after "--".
func borgFlagHint(err error) string {
	msg := err.Error()
	var flag string
	switch {
	case strings.HasPrefix(msg, "unknown flag: "):
		flag = strings.TrimPrefix(msg, "unknown flag: ")
	case strings.HasPrefix(msg, "unknown shorthand flag: "):
		_, flag, _ = strings.Cut(msg, " in ")
	default:
		return ""
	}
	return "borg's options go after --: prezero backup SOURCE REPO::ARCHIVE -- " + borg.Quote(flag)
}

// chunkerHoleAlign applies a --chunker-params among the borg arguments:
// fixed,SIZE sets the hole window to SIZE (a different --hole-align is
// refused); buzhash, and a fixed chunker with a header chunk, are refused,
// since holes at multiples of the window would not fall on their chunk
// boundaries.
func chunkerHoleAlign(opts *backupOptions, extra []string) error {
	_, ch, err := borg.MergeCreateFlags(extra)
	if err != nil {
		return usagef("%v", err)
	}
	switch {
	case ch == nil:
		return nil
	case !ch.Fixed:
		return usagef("--chunker-params %s chooses borg's buzhash chunker, but a prezero mount reports free space as holes "+
			"(SEEK_HOLE) for borg create --sparse, which suits only the fixed chunker: use --chunker-params fixed,SIZE "+
			"(--hole-align follows SIZE), or for buzhash pipe the stream into borg: prezero cat SOURCE | borg create "+
			"--chunker-params %s REPO::ARCHIVE -", ch.Spec, ch.Spec)
	case ch.Header != 0:
		return usagef("--chunker-params %s puts a %d-byte header chunk first, which shifts every chunk boundary away "+
			"from the holes prezero reports; use fixed,%d", ch.Spec, ch.Header, ch.Size)
	case opts.flags.Changed("hole-align") && int64(opts.holeAlign) != ch.Size:
		return usagef("--hole-align %s does not match --chunker-params %s: give the same size, or leave out --hole-align",
			opts.holeAlign.String(), ch.Spec)
	}
	opts.holeAlign = bytesize.Value(ch.Size)
	return nil
}
