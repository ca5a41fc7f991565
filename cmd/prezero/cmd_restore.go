package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"

	"github.com/spf13/pflag"
	"golang.org/x/term"

	"github.com/prezero/prezero/borg"
	"github.com/prezero/prezero/internal/bytesize"
	"github.com/prezero/prezero/internal/restore"
	"github.com/prezero/prezero/stream"
)

type restoreOptions struct {
	from         string
	path         string
	input        string
	disk         bool
	blockSize    bytesize.Value
	expectSize   bytesize.Value
	assumeZeroed bool
	force        bool
	json         bool
	borgPath     string
}

func (o *restoreOptions) AddFlags(f *pflag.FlagSet) {
	o.blockSize = restore.DefaultBlockSize
	o.expectSize = -1
	f.StringVar(&o.from, "from", "", "run 'borg extract --stdout' on `REPO::ARCHIVE` instead of reading standard input")
	f.StringVar(&o.path, "path", restore.DiskItem, "with --from: the archive `ITEM` to restore")
	f.StringVar(&o.input, "input", "", "read the stream from `FILE` instead of standard input")
	f.BoolVar(&o.disk, "disk", false, "with --from: TARGET is a whole disk; restore header.img and every partN.img of a --partitions archive at their offsets")
	f.Var(&o.blockSize, "block-size", "unit of zero detection (power of two, 512 to 1M)")
	f.Var(&o.expectSize, "expect-size", "the stream must be exactly `BYTES` long (K, M, G, T: powers of 1024). A pipe's real length is known only at its end: "+
		"a longer stream fails after BYTES bytes of TARGET were overwritten. --from checks the size before the first write")
	f.BoolVar(&o.assumeZeroed, "assume-zeroed", false, "TARGET already reads as zeros: skip zero runs instead of zeroing them (see above)")
	f.BoolVar(&o.force, "force", false, "write to a TARGET that is in use (held open exclusively, stacked under a device-mapper or loop device); never a mounted one")
	f.BoolVar(&o.json, "json", false, "print the summary as JSON on standard output")
	f.StringVar(&o.borgPath, "borg", "", "the borg executable to run, a `PATH` (default: borg, else borg2, from $PATH)")
}

func init() {
	var opts restoreOptions
	register(&command{
		name:  "restore",
		usage: "[--from REPO::ARCHIVE [--path ITEM | --disk] | --input FILE] TARGET",
		short: "write a stream back to a file or block device, zero runs sparsely",
		long: `Write a stream (disk.img, partN.img, or any raw image) to TARGET so that the
result is exactly the stream, while runs of zero blocks cost almost nothing.

  borg extract --stdout REPO::ARCHIVE disk.img | prezero restore --expect-size BYTES /dev/sdX
  prezero restore --from REPO::ARCHIVE [--path disk.img] TARGET
  prezero restore --from REPO::ARCHIVE --disk /dev/sdX     (a --partitions archive)
  prezero restore --input stream.img TARGET

TARGET is a block device or a regular file (created if missing, mode 0600).
  File:   only non-zero blocks are written; zero runs become holes (punched
          with fallocate in an existing file, so no old byte survives) and the
          file ends exactly at the stream's length.
  Device: zero runs are zeroed by the kernel (BLKZEROOUT, else fallocate
          ZERO_RANGE, else written as zeros). Every byte up to the stream's
          length equals the stream afterwards; bytes after it are untouched
          and the summary says how many.

Length: a stream longer than a block device is refused before anything is
written. --from takes the length from 'borg list', --input from the file's
size. A pipe's length is unknown, so writing a pipe to a block device needs
--expect-size (the item's size: borg list --format '{size}{NL}' REPO::ARCHIVE
disk.img). --expect-size is checked before writing when the length is known
(--input, --from). A pipe's real length is known only at its end: a shorter
or longer pipe is an error, but only after the first --expect-size bytes of
TARGET were overwritten. --from asks borg for the size and checks it before
the first write.
A pipe cannot tell prezero that the command before it failed: use --from, or
--expect-size (or at least 'set -o pipefail') so a cut-short stream is caught.
An empty pipe is refused.

--disk restores header.img first, then each partN.img at the offset the
header's partition table gives it (GPT with 512- or 4096-byte sectors, or MBR
primary partitions; MBR logical partitions are refused: their boot records are
not in header.img). Gaps between partitions are zeroed: the archive does not
hold them. For GPT the backup table is regenerated from the primary at the
AlternateLBA the primary names, i.e. where the original disk ended; TARGET
must be at least that large. On a larger disk, run 'sgdisk -e' (or accept
fdisk's offer) afterwards to move the backup table to the end. An MBR does
not record the disk's size: the restore ends with the last partition.

--assume-zeroed is safe only if TARGET already reads as zeros everywhere the
stream is zero: a brand-new thin-provisioned volume (LVM thin with zeroing, a
new cloud or VM disk, a new zvol), an existing file just truncated to 0
bytes, or a device discarded with 'blkdiscard' that guarantees zeros after a
discard (not all SSDs do; check with: cmp -n BYTES /dev/zero TARGET). A new
file needs no option: it starts as one hole. Anywhere else old data shows
through the stream's zero runs, and the restored filesystem is wrong wherever
it trusts free blocks or sparse files to read as zeros.

TARGET is refused if it is mounted or active swap (itself, a partition of it,
or for a file: the file a loop device or FUSE mount uses), and if it is in use
(a block device another program holds open exclusively, or with
device-mapper/md/loop devices over it) unless --force. --force never
overrides the mount or the size check.

The summary goes to standard error (standard output with --json); a progress
line is shown while standard error is a terminal. Ctrl-C stops the restore
(exit code 130) and leaves TARGET incomplete. Under --from, a borg failure
is reported with borg's message and exits with borg's exit code; a borg
warning (exit code 1) after a complete restore exits with 1.`,
		flags: opts.AddFlags,
		run: func(ctx context.Context, args []string) error {
			err := runRestore(ctx, opts, args)
			if err != nil && opts.from == "" && opts.input == "" {
				drainPipe(ctx, os.Stdin)
			}
			return err
		},
	})
}

func runRestore(ctx context.Context, opts restoreOptions, args []string) error {
	if len(args) != 1 {
		return usagef("expected one TARGET, got %d arguments", len(args))
	}
	target := args[0]
	switch {
	case opts.from != "" && opts.input != "":
		return usagef("--from and --input both name a stream; give one")
	case opts.disk && opts.from == "":
		return usagef("--disk restores the items of a borg archive; give --from REPO::ARCHIVE")
	case opts.disk && opts.path != restore.DiskItem:
		return usagef("--disk restores header.img and every partN.img; it takes no --path")
	case opts.path != restore.DiskItem && opts.from == "":
		return usagef("--path chooses an item of a borg archive; give --from REPO::ARCHIVE")
	}
	if err := restore.CheckBlockSize(int(opts.blockSize)); err != nil {
		return usagef("--block-size: %v", err)
	}
	// Find the stream and, if possible, its length, before opening TARGET.
	src, err := openRestoreSource(ctx, opts)
	if err != nil {
		return err
	}
	defer src.close()
	sum, err := restore.Run(ctx, src.Source, target, restore.RunOptions{
		BlockSize:    int(opts.blockSize),
		AssumeZeroed: opts.assumeZeroed,
		Force:        opts.force,
		ExpectSize:   int64(opts.expectSize),
		Warnf:        func(format string, a ...any) { fmt.Fprintf(os.Stderr, "prezero restore: "+format+"\n", a...) },
		Progress:     startRestoreProgress,
	})
	if err != nil {
		return restoreFailed(ctx, err, opts)
	}
	if opts.json {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(sum); err != nil {
			return err
		}
	} else {
		printRestoreSummary(os.Stderr, sum)
	}
	if src.archive != nil {
		if warn := src.archive.Warning(); warn != nil {
			return &exitError{code: 1, err: fmt.Errorf("the restore is complete, but borg warned: %w", warn)}
		}
	}
	return nil
}

// restoreFailed adds the CLI's advice to a failed restore: interrupted
// (main maps it to 130), a borg failure (borg's exit code), or anything
// else.
func restoreFailed(ctx context.Context, err error, opts restoreOptions) error {
	if errors.Is(err, restore.ErrUnknownLength) {
		return fmt.Errorf("%w. Pass --expect-size BYTES (borg list --format '{size}{NL}' REPO::ARCHIVE disk.img prints it), "+
			"or let prezero run borg: --from REPO::ARCHIVE", err)
	}
	var ie *restore.IncompleteError
	if !errors.As(err, &ie) {
		return err
	}
	if errors.Is(err, restore.ErrLong) && opts.expectSize >= 0 {
		return fmt.Errorf("the stream is longer than --expect-size %d: the first %d bytes of %s were overwritten with the start of the stream, "+
			"and the rest of the stream was not written. Restore again with the right --expect-size "+
			"(borg list --format '{size}{NL}' REPO::ARCHIVE disk.img prints it), or use --from REPO::ARCHIVE, which checks the size before the first write",
			int64(opts.expectSize), ie.Pos, ie.Target)
	}
	if ctx.Err() != nil {
		return errors.New(ie.State())
	}
	var be *borg.ExitError
	if errors.As(err, &be) {
		return &exitError{code: be.Code, err: err}
	}
	return err
}

func printRestoreSummary(w io.Writer, s restore.Summary) {
	rate := ""
	if s.Seconds > 0 {
		rate = fmt.Sprintf(" (%s/s)", bytesize.Human(int64(float64(s.Covered)/s.Seconds)))
	}
	fmt.Fprintf(w, "restored %s to %s (%s) in %.1fs%s\n", bytesize.Human(s.Covered), s.Target, s.Kind, s.Seconds, rate)
	fmt.Fprintf(w, "  bytes in:          %d (%s)\n", s.StreamBytes, bytesize.Human(s.StreamBytes))
	fmt.Fprintf(w, "  bytes written:     %d (%s", s.Written, bytesize.Human(s.Written))
	if s.MergedZeros > 0 {
		fmt.Fprintf(w, ", of which %s short zero runs written with their neighbours", bytesize.Human(s.MergedZeros))
	}
	fmt.Fprintln(w, ")")
	fmt.Fprintf(w, "  zeroed by ioctl:   %d (%s, BLKZEROOUT or fallocate ZERO_RANGE)\n", s.Zeroed, bytesize.Human(s.Zeroed))
	if s.ZerosWritten > 0 {
		fmt.Fprintf(w, "  zeros written:     %d (%s)\n", s.ZerosWritten, bytesize.Human(s.ZerosWritten))
	}
	fmt.Fprintf(w, "  holes:             %d (%s)\n", s.Holes, bytesize.Human(s.Holes))
	if s.Skipped > 0 {
		fmt.Fprintf(w, "  skipped:           %d (%s, --assume-zeroed)\n", s.Skipped, bytesize.Human(s.Skipped))
	}
	if s.Untouched > 0 {
		fmt.Fprintf(w, "  left untouched:    %d (%s) after the stream's end; the device is larger than the stream\n", s.Untouched, bytesize.Human(s.Untouched))
	}
}

// restoreSource is the stream and what must be released after it.
type restoreSource struct {
	restore.Source
	archive *borg.Archive // with --from
	closers []io.Closer
}

func (s *restoreSource) close() {
	for _, c := range s.closers {
		c.Close()
	}
	if s.Plan != nil {
		s.Plan.Close()
	}
}

func openRestoreSource(ctx context.Context, opts restoreOptions) (*restoreSource, error) {
	switch {
	case opts.from != "":
		return openBorgSource(ctx, opts)
	case opts.input != "":
		f, err := os.Open(opts.input)
		if err != nil {
			return nil, err
		}
		fi, err := f.Stat()
		if err == nil && fi.IsDir() {
			err = fmt.Errorf("%s is a directory, not a stream", opts.input)
		}
		size := int64(-1) // a FIFO or character device: unknown
		if err == nil && (fi.Mode().IsRegular() || fi.Mode()&os.ModeDevice != 0 && fi.Mode()&os.ModeCharDevice == 0) {
			size, err = f.Seek(0, io.SeekEnd) // block devices too
			if err == nil {
				_, err = f.Seek(0, io.SeekStart)
			}
		}
		if err != nil {
			f.Close()
			return nil, err
		}
		return &restoreSource{Source: restore.Source{Name: opts.input, R: f, Size: size, File: f, WholeDisk: true}, closers: []io.Closer{f}}, nil
	}
	if term.IsTerminal(int(os.Stdin.Fd())) {
		return nil, usagef("standard input is a terminal; pipe a stream in (borg extract --stdout ... |), or give --from or --input")
	}
	s := &restoreSource{Source: restore.Source{Name: "standard input", R: os.Stdin, Size: -1, File: os.Stdin, WholeDisk: true}}
	stream.GrowPipe(os.Stdin)
	if fi, err := os.Stdin.Stat(); err == nil && fi.Mode().IsRegular() {
		if pos, err := os.Stdin.Seek(0, io.SeekCurrent); err == nil {
			s.Size = fi.Size() - pos
		}
	}
	return s, nil
}

func openBorgSource(ctx context.Context, opts restoreOptions) (*restoreSource, error) {
	ref, err := borg.ParseRef(opts.from)
	if err != nil {
		return nil, usagef("--from: %v", err)
	}
	b, err := borg.Find(ctx, opts.borgPath)
	if err != nil {
		return nil, err
	}
	if err := checkBorgRepo(b, ref); err != nil {
		return nil, fmt.Errorf("%w; nothing was written", err)
	}
	items, err := listAskingOnce(ctx, b, ref)
	if err != nil {
		var be *borg.ExitError
		if errors.As(err, &be) {
			return nil, &exitError{code: be.Code, err: withBorgAdvice(fmt.Errorf("cannot list %s: %w; nothing was written", ref, err), b)}
		}
		return nil, err
	}
	a := &borg.Archive{Borg: b, Ref: ref}
	find := func(p string) (borg.Item, bool) {
		for _, it := range items {
			if it.Path == p {
				return it, true
			}
		}
		return borg.Item{}, false
	}
	names := func() string {
		var s []string
		for _, it := range items {
			if it.Size > 0 || strings.HasSuffix(it.Path, ".img") {
				s = append(s, it.Path)
			}
		}
		if len(s) > 12 {
			s = append(s[:12], "...")
		}
		return strings.Join(s, ", ")
	}
	if opts.disk {
		if it, ok := find(restore.DiskItem); ok {
			// A whole-disk archive: its stream holds the partition table.
			return borgItemSource(ctx, a, it)
		}
		var ritems []restore.Item
		for _, it := range items {
			ritems = append(ritems, restore.Item{Path: it.Path, Size: it.Size})
		}
		plan, err := restore.PlanDisk(ctx, ritems, a)
		if err != nil {
			if be := (*borg.ExitError)(nil); errors.As(err, &be) {
				return nil, &exitError{code: be.Code, err: fmt.Errorf("%w; nothing was written to the target", err)}
			}
			return nil, fmt.Errorf("%s: %w; nothing was written", ref, err)
		}
		return &restoreSource{Source: restore.Source{Name: ref.String(), Size: plan.End, Plan: plan, Archive: a}, archive: a}, nil
	}
	it, ok := find(opts.path)
	if !ok {
		hint := ""
		if _, hasHeader := find(restore.HeaderItem); hasHeader && opts.path == restore.DiskItem {
			hint = "; it is a --partitions archive: restore a whole disk with --disk, or one partition with --path partN.img"
		}
		return nil, fmt.Errorf("archive %s has no item %q (it holds: %s)%s; nothing was written", ref, opts.path, names(), hint)
	}
	if path.Base(it.Path) == restore.HeaderItem {
		fmt.Fprintf(os.Stderr, "prezero restore: note: header.img alone holds no partition; --disk restores the whole disk\n")
	}
	return borgItemSource(ctx, a, it)
}

// borgItemSource starts borg extract --stdout for one item.
func borgItemSource(ctx context.Context, a *borg.Archive, it borg.Item) (*restoreSource, error) {
	s, err := a.Open(ctx, it.Path)
	if err != nil {
		return nil, err
	}
	return &restoreSource{
		Source:  restore.Source{Name: a.Ref.String() + " " + it.Path, R: s, Size: it.Size, WholeDisk: path.Base(it.Path) == restore.DiskItem},
		archive: a,
		closers: []io.Closer{s},
	}, nil
}

// drainPipe reads a refused pipe to its end, so that the command writing
// it (borg extract --stdout) ends normally instead of printing a
// BrokenPipeError traceback over prezero's message, which main prints
// last. Ctrl-C stops it.
func drainPipe(ctx context.Context, f *os.File) {
	fi, err := f.Stat()
	if err != nil || fi.Mode()&os.ModeNamedPipe == 0 || ctx.Err() != nil {
		return
	}
	if term.IsTerminal(int(os.Stderr.Fd())) {
		fmt.Fprintln(os.Stderr, "prezero restore: refused; reading the rest of standard input so that the command before the pipe ends normally (Ctrl-C stops this)")
	}
	done := make(chan struct{})
	go func() {
		io.Copy(io.Discard, f)
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
	}
}
