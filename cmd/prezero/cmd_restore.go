package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/term"

	"github.com/prezero/prezero/borg"
	"github.com/prezero/prezero/internal/restore"
	"github.com/prezero/prezero/stream"
)

type restoreOptions struct {
	from         string
	path         string
	input        string
	disk         bool
	blockSize    restoreSize
	expectSize   restoreSize
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
	f.Var(&o.expectSize, "expect-size", "the stream must be exactly `BYTES` long (suffixes K, M, G, T: powers of 1024)")
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
disk.img). --expect-size is checked before writing when the length is known,
and at the end of the stream otherwise: a shorter or longer stream is an error.
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
		run:   func(ctx context.Context, args []string) error { return runRestore(ctx, opts, args) },
	})
}

// restoreSummary is what restore did, printed at the end (--json: as is).
type restoreSummary struct {
	Target       string  `json:"target"`
	Kind         string  `json:"kind"`
	TargetSize   int64   `json:"target_size"`
	StreamBytes  int64   `json:"stream_bytes"`
	Covered      int64   `json:"covered_bytes"`
	Written      int64   `json:"written_bytes"`
	MergedZeros  int64   `json:"merged_zero_bytes"`
	Zeroed       int64   `json:"zeroed_bytes"`
	ZerosWritten int64   `json:"zeros_written_bytes"`
	Holes        int64   `json:"hole_bytes"`
	Skipped      int64   `json:"skipped_bytes"`
	Untouched    int64   `json:"untouched_bytes"`
	Seconds      float64 `json:"seconds"`
}

func runRestore(ctx context.Context, opts restoreOptions, args []string) error {
	if len(args) != 1 {
		return usagef("expected one TARGET, got %d arguments", len(args))
	}
	targetPath := args[0]
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
	size := src.size
	if opts.expectSize >= 0 {
		if size >= 0 && size != int64(opts.expectSize) {
			return fmt.Errorf("%s is %d bytes, but --expect-size is %d; nothing was written", src.name, size, opts.expectSize)
		}
		size = int64(opts.expectSize)
	}

	t, err := restore.Open(targetPath, restore.OpenOptions{Force: opts.force})
	if err != nil {
		return err
	}
	defer t.Close()
	if src.file != nil {
		if fi, err := src.file.Stat(); err == nil && t.SameFile(fi) {
			return fmt.Errorf("%s is both the stream and the target", targetPath)
		}
	}
	if t.InUse != "" {
		fmt.Fprintf(os.Stderr, "prezero restore: warning: %s %s; writing anyway (--force)\n", targetPath, t.InUse)
	}
	if src.plan != nil {
		size = src.plan.End
		if t.IsPartition() {
			return fmt.Errorf("--disk needs a whole disk, but %s is a partition; give the disk it belongs to", targetPath)
		}
	}
	limit := int64(-1)
	if t.Kind == restore.Device {
		limit = t.Size
		switch {
		case size < 0:
			return fmt.Errorf("the length of standard input is unknown (a pipe), and %s is a block device: prezero must know the length "+
				"first so that a stream longer than the device is refused before anything is written. Pass --expect-size BYTES "+
				"(borg list --format '{size}{NL}' REPO::ARCHIVE disk.img prints it), or let prezero run borg: --from REPO::ARCHIVE; "+
				"nothing was written", targetPath)
		case size > t.Size:
			return fmt.Errorf("%w: %s needs %d bytes (%s), %s holds %d (%s); nothing was written",
				restore.ErrTooLong, src.name, size, human(size), targetPath, t.Size, human(t.Size))
		}
	}

	w, err := restore.NewWriter(t, restore.Options{BlockSize: int(opts.blockSize), AssumeZeroed: opts.assumeZeroed, Limit: limit})
	if err != nil {
		return err
	}
	start := time.Now()
	stopProgress := startRestoreProgress(w, size)
	if src.plan != nil {
		err = src.plan.Restore(ctx, w, src.archive)
	} else {
		_, err = w.ReadFrom(ctx, src.r, size)
		if err == nil && size < 0 && w.In() == 0 {
			stopProgress()
			// Most likely the command before the pipe failed.
			if t.Created {
				os.Remove(targetPath)
			}
			return fmt.Errorf("%s is empty (did the command before the pipe fail?); nothing was written to %s", src.name, targetPath)
		}
	}
	if err == nil {
		err = w.Finish(ctx)
	}
	stopProgress()
	if err != nil {
		return restoreFailed(ctx, err, targetPath, w.Pos())
	}
	if t.Kind == restore.Device && (src.plan != nil || opts.path == restore.DiskItem) {
		if err := t.RereadPartitions(); err != nil {
			fmt.Fprintf(os.Stderr, "prezero restore: note: %v\n", err)
		}
	}

	st := w.Stats()
	sum := restoreSummary{
		Target: targetPath, Kind: t.Kind.String(), TargetSize: t.Size,
		StreamBytes: st.In, Covered: w.Pos(), Written: st.Written, MergedZeros: st.MergedZeros,
		Zeroed: st.Zeroed, ZerosWritten: st.ZerosWritten, Holes: st.Holes, Skipped: st.Skipped,
		Seconds: time.Since(start).Seconds(),
	}
	if t.Kind == restore.Device {
		sum.Untouched = t.Size - w.Pos()
	} else {
		sum.TargetSize = w.Pos()
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
	if warn := src.warning(); warn != nil {
		return &exitError{code: 1, err: fmt.Errorf("the restore is complete, but borg warned: %w", warn)}
	}
	return nil
}

// restoreFailed explains a failed restore: interrupted (main maps it to
// 130), a borg failure (borg's exit code), or anything else.
func restoreFailed(ctx context.Context, err error, target string, pos int64) error {
	incomplete := fmt.Sprintf("%s is incomplete (the first %d bytes were restored); run the restore again", target, pos)
	if pos == 0 {
		incomplete = "nothing was written to " + target
	}
	if ctx.Err() != nil {
		return fmt.Errorf("%s", incomplete)
	}
	var be *borg.ExitError
	if errors.As(err, &be) {
		return &exitError{code: be.Code, err: fmt.Errorf("%w; %s", err, incomplete)}
	}
	return fmt.Errorf("%w; %s", err, incomplete)
}

func printRestoreSummary(w io.Writer, s restoreSummary) {
	rate := ""
	if s.Seconds > 0 {
		rate = fmt.Sprintf(" (%s/s)", human(int64(float64(s.Covered)/s.Seconds)))
	}
	fmt.Fprintf(w, "restored %s to %s (%s) in %.1fs%s\n", human(s.Covered), s.Target, s.Kind, s.Seconds, rate)
	fmt.Fprintf(w, "  bytes in:          %d (%s)\n", s.StreamBytes, human(s.StreamBytes))
	fmt.Fprintf(w, "  bytes written:     %d (%s", s.Written, human(s.Written))
	if s.MergedZeros > 0 {
		fmt.Fprintf(w, ", of which %s short zero runs written with their neighbours", human(s.MergedZeros))
	}
	fmt.Fprintln(w, ")")
	fmt.Fprintf(w, "  zeroed by ioctl:   %d (%s, BLKZEROOUT or fallocate ZERO_RANGE)\n", s.Zeroed, human(s.Zeroed))
	if s.ZerosWritten > 0 {
		fmt.Fprintf(w, "  zeros written:     %d (%s)\n", s.ZerosWritten, human(s.ZerosWritten))
	}
	fmt.Fprintf(w, "  holes:             %d (%s)\n", s.Holes, human(s.Holes))
	if s.Skipped > 0 {
		fmt.Fprintf(w, "  skipped:           %d (%s, --assume-zeroed)\n", s.Skipped, human(s.Skipped))
	}
	if s.Untouched > 0 {
		fmt.Fprintf(w, "  left untouched:    %d (%s) after the stream's end; the device is larger than the stream\n", s.Untouched, human(s.Untouched))
	}
}

// restoreSource is where the stream comes from.
type restoreSource struct {
	name    string    // for messages
	r       io.Reader // the stream (nil with plan)
	size    int64     // its length, -1 if unknown
	file    *os.File  // --input or standard input, to refuse it as TARGET
	plan    *restore.DiskPlan
	archive *borgArchive
	closers []io.Closer
}

func (s *restoreSource) close() {
	for _, c := range s.closers {
		c.Close()
	}
	if s.plan != nil {
		s.plan.Close()
	}
}

func (s *restoreSource) warning() error {
	if s.archive == nil {
		return nil
	}
	return s.archive.warning()
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
		return &restoreSource{name: opts.input, r: f, size: size, file: f, closers: []io.Closer{f}}, nil
	}
	if term.IsTerminal(int(os.Stdin.Fd())) {
		return nil, usagef("standard input is a terminal; pipe a stream in (borg extract --stdout ... |), or give --from or --input")
	}
	s := &restoreSource{name: "standard input", r: os.Stdin, size: -1, file: os.Stdin}
	stream.GrowPipe(os.Stdin)
	if fi, err := os.Stdin.Stat(); err == nil && fi.Mode().IsRegular() {
		if pos, err := os.Stdin.Seek(0, io.SeekCurrent); err == nil {
			s.size = fi.Size() - pos
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
	items, err := b.List(ctx, ref)
	if err != nil {
		var be *borg.ExitError
		if errors.As(err, &be) {
			return nil, &exitError{code: be.Code, err: fmt.Errorf("cannot list %s: %w; nothing was written", ref, err)}
		}
		return nil, err
	}
	a := &borgArchive{b: b, ref: ref}
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
			return a.source(ctx, it)
		}
		var ritems []restore.Item
		for _, it := range items {
			ritems = append(ritems, restore.Item{Path: it.Path, Size: it.Size})
		}
		plan, err := restore.PlanDisk(ctx, ritems, a)
		if err != nil {
			if be := (*borg.ExitError)(nil); errors.As(err, &be) {
				return nil, restoreFailed(ctx, err, "the target", 0)
			}
			return nil, fmt.Errorf("%s: %w; nothing was written", ref, err)
		}
		return &restoreSource{name: ref.String(), size: plan.End, plan: plan, archive: a}, nil
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
	return a.source(ctx, it)
}

// borgArchive opens items with borg extract --stdout and remembers borg's
// warnings.
type borgArchive struct {
	b       *borg.Borg
	ref     borg.Ref
	streams []*borg.Stream
}

var _ restore.Archive = (*borgArchive)(nil)

func (a *borgArchive) Open(ctx context.Context, p string) (io.ReadCloser, error) {
	s, err := a.b.Extract(ctx, a.ref, p)
	if err != nil {
		return nil, err
	}
	if f, ok := s.Stdout().(*os.File); ok {
		stream.GrowPipe(f)
	}
	a.streams = append(a.streams, s)
	return s, nil
}

func (a *borgArchive) source(ctx context.Context, it borg.Item) (*restoreSource, error) {
	s, err := a.Open(ctx, it.Path)
	if err != nil {
		return nil, err
	}
	return &restoreSource{name: a.ref.String() + " " + it.Path, r: s, size: it.Size, archive: a, closers: []io.Closer{s}}, nil
}

func (a *borgArchive) warning() error {
	for _, s := range a.streams {
		if w := s.Warning(); w != nil {
			return w
		}
	}
	return nil
}

// restoreSize is a byte count flag with optional binary suffixes.
type restoreSize int64

func (s *restoreSize) String() string {
	if *s < 0 {
		return ""
	}
	return strconv.FormatInt(int64(*s), 10)
}

func (s *restoreSize) Type() string { return "BYTES" }

func (s *restoreSize) Set(v string) error {
	n, err := parseRestoreSize(v)
	if err != nil {
		return err
	}
	*s = restoreSize(n)
	return nil
}

// parseRestoreSize parses "4096", "4K", "4KiB", "1G": suffixes are powers
// of 1024.
func parseRestoreSize(v string) (int64, error) {
	s := strings.TrimSuffix(strings.TrimSuffix(strings.ToUpper(strings.TrimSpace(v)), "B"), "I")
	mult := int64(1)
	if s != "" {
		if i := strings.IndexByte("KMGTP", s[len(s)-1]); i >= 0 {
			mult = int64(1) << (10 * (i + 1))
			s = s[:len(s)-1]
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || (n > 0 && mult > (1<<63-1)/n) {
		return 0, fmt.Errorf("%q is not a byte count (e.g. 4096, 4K, 1G)", v)
	}
	return n * mult, nil
}
