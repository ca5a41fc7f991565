package main

import (
	"context"
	"fmt"
	"os"

	"github.com/spf13/pflag"
	"golang.org/x/term"

	"github.com/prezero/prezero/internal/inuse"
	"github.com/prezero/prezero/internal/source"
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
	if !opts.force {
		// A live filesystem's bitmap and data disagree: refuse, as mount does.
		if err := inuse.Check(args[0], inuse.Writable); err != nil {
			return err
		}
	}
	src, err := source.Open(args[0], opts.options())
	if err != nil {
		return err
	}
	defer src.Close()
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
	if _, err := stream.Copy(ctx, os.Stdout, r); err != nil {
		return fmt.Errorf("writing %s of %s: %w", what, args[0], err)
	}
	return nil
}
