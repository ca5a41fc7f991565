package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/pflag"
	"golang.org/x/term"

	"github.com/prezero/prezero/internal/source"
	"github.com/prezero/prezero/internal/srcwatch"
	"github.com/prezero/prezero/stream"
)

type catOptions struct {
	sourceFlags
	force bool
}

func (o *catOptions) AddFlags(f *pflag.FlagSet) {
	f.BoolVar(&o.force, "force", false, "read a block device even if it (or a partition or device on it) is mounted read-write")
	o.sourceFlags.AddFlags(f)
}

func init() {
	var opts catOptions
	register(&command{
		name:  "cat",
		usage: "SOURCE [disk|header|N|partN|VG/LV] > STREAM",
		short: "write a zeroed stream to stdout",
		long: `Write one stream of SOURCE to standard output:
  disk     the whole source, each recognised partition's free blocks zeroed (default)
  header   the bytes before the first partition, unchanged
  N, partN partition N alone, numbered as 'prezero map' shows
If SOURCE changes while it is read, cat stops with an error (exit 2) before
writing anything read after the change: discard the partial stream.
  VG/LV    an LVM logical volume alone (also by its device-mapper name VG-LV),
           its free blocks zeroed; restore it with 'prezero restore' onto
           /dev/VG/LV`,
		flags: opts.AddFlags,
		run:   func(ctx context.Context, args []string) error { return runCat(ctx, opts, args) },
	})
}

func runCat(ctx context.Context, opts catOptions, args []string) error {
	if len(args) < 1 || len(args) > 2 {
		return usagef("expected SOURCE [WHAT], got %d arguments", len(args))
	}
	what := "disk"
	if len(args) == 2 {
		what = args[1]
	}
	if term.IsTerminal(int(os.Stdout.Fd())) {
		return usagef("refusing to write a binary stream to a terminal; redirect stdout to a file or pipe")
	}
	if err := checkSource(args[0]); err != nil {
		return err
	}
	if err := checkShare(opts.forceShare, opts.force); err != nil {
		return err
	}
	if !opts.force {
		// A live filesystem's bitmap and data disagree: refuse, as mount does.
		if err := checkInUse(args[0]); err != nil {
			return err
		}
	}
	// As the mount does: the watch is opened before the maps are read, so
	// that a change while they are read is caught too. An NBD export has
	// no file to watch: its server must export a stable view.
	var w *srcwatch.Watch
	if !source.IsURI(args[0]) {
		var err error
		if w, err = srcwatch.Open(args[0]); err != nil {
			return err
		}
		defer w.Close()
	}
	src, err := source.Open(args[0], opts.options())
	if err != nil {
		return err
	}
	defer src.Close()
	if w != nil {
		if err := w.Same(src.File()); err != nil {
			return err
		}
		if err := w.Check(); err != nil {
			return fmt.Errorf("%w while its maps were read; try again on a quiet source or a snapshot", err)
		}
	}
	r, err := src.Lookup(what)
	if err != nil {
		return err
	}
	for _, p := range append(src.Parts, src.LVs...) {
		for _, n := range p.Notes {
			fmt.Fprintf(os.Stderr, "prezero: part%s: %s\n", p.Label(), n)
		}
	}
	stream.GrowPipe(os.Stdout)
	out := &watchedWriter{w: os.Stdout, watch: w}
	if _, err := stream.Copy(ctx, out, r); err != nil {
		if errors.Is(err, srcwatch.ErrChanged) {
			return fmt.Errorf("%w. The first %d bytes written are consistent but the stream is incomplete: "+
				"discard it, and cat a snapshot or a source nothing writes to", err, out.n)
		}
		return fmt.Errorf("writing %s of %s: %w%s", what, args[0], err, qemuSays(src))
	}
	return nil
}

// watchedWriter checks the source before each chunk is written: the chunk
// was read before the check, so a chunk read after a change is never
// written, and the stream stops short instead of mixing old maps with new
// data.
type watchedWriter struct {
	w     io.Writer
	watch *srcwatch.Watch
	n     int64
}

func (ww *watchedWriter) Write(p []byte) (int, error) {
	if ww.watch != nil {
		if err := ww.watch.Check(); err != nil {
			return 0, err
		}
	}
	n, err := ww.w.Write(p)
	ww.n += int64(n)
	return n, err
}
