package restore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/prezero/prezero/internal/bytesize"
)

// Source is where a restore's stream comes from.
type Source struct {
	Name string    // for messages: "standard input", a file, "REPO::ARCHIVE disk.img"
	R    io.Reader // the stream (unused with Plan)
	Size int64     // its length; negative if unknown (a pipe)
	// File is the open file behind R, if any (--input, standard input):
	// it may not be the target too.
	File *os.File
	// WholeDisk says the stream is a whole disk (disk.img), so that a
	// block-device target's partition table is re-read afterwards.
	WholeDisk bool
	// Plan and Archive put a --partitions archive back on a whole disk
	// instead of reading R.
	Plan    *DiskPlan
	Archive Archive
}

// RunOptions control Run.
type RunOptions struct {
	BlockSize    int  // unit of zero detection; 0 means DefaultBlockSize
	AssumeZeroed bool // see Options.AssumeZeroed
	Force        bool // see OpenOptions.Force
	// ExpectSize is the stream's exact length, if given (else negative).
	// It is checked before the first write when the length is known, at
	// the end of the stream otherwise.
	ExpectSize int64
	// Warnf receives warnings and notes (a target in use written with
	// Force, a partition table the kernel did not re-read). nil drops them.
	Warnf func(format string, args ...any)
	// Progress, if set, is started once writing begins and stopped when it
	// ends (before any message about the outcome is returned).
	Progress func(w *Writer, total int64) (stop func())
}

// Summary is what Run did.
type Summary struct {
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

// ErrUnknownLength refuses a stream of unknown length onto a block device.
var ErrUnknownLength = errors.New("the stream's length is unknown")

// IncompleteError is a restore that failed or was interrupted after it
// began writing: the first Pos bytes of Target hold the stream, the rest
// does not. Err is why (a borg failure, ctx.Err(), ErrLong, ...).
type IncompleteError struct {
	Target string
	Pos    int64
	Err    error
}

func (e *IncompleteError) Error() string {
	return fmt.Sprintf("%v; %s", e.Err, e.State())
}

// State says what is on the target, for messages.
func (e *IncompleteError) State() string {
	if e.Pos == 0 {
		return "nothing was written to " + e.Target
	}
	return fmt.Sprintf("%s is incomplete (the first %d bytes were restored); run the restore again", e.Target, e.Pos)
}

func (e *IncompleteError) Unwrap() error { return e.Err }

// Run restores src to the file or block device at target. Before the
// first write it checks everything that can be checked: the target is not
// mounted (nor in use, unless Force), is not the stream itself, and can
// hold the stream; so a block device needs the stream's length (Size,
// ExpectSize or Plan). An empty pipe is refused and a target file it
// created is removed. After a complete restore of a whole disk onto a
// block device, the kernel is asked to re-read its partition table.
//
// Failures before writing say "nothing was written"; later ones are an
// *IncompleteError.
func Run(ctx context.Context, src Source, target string, opts RunOptions) (Summary, error) {
	warnf := opts.Warnf
	if warnf == nil {
		warnf = func(string, ...any) {}
	}
	size := src.Size
	if src.Plan != nil {
		size = src.Plan.End
	}
	if opts.ExpectSize >= 0 {
		if size >= 0 && size != opts.ExpectSize {
			return Summary{}, fmt.Errorf("%s is %d bytes, but --expect-size is %d; nothing was written", src.Name, size, opts.ExpectSize)
		}
		size = opts.ExpectSize
	}

	t, err := Open(target, OpenOptions{Force: opts.Force})
	if err != nil {
		return Summary{}, err
	}
	defer t.Close()
	if src.File != nil {
		if fi, err := src.File.Stat(); err == nil && t.SameFile(fi) {
			return Summary{}, fmt.Errorf("%s is both the stream and the target", target)
		}
	}
	if t.InUse != "" {
		warnf("warning: %s %s; writing anyway (--force)", target, t.InUse)
	}
	if src.Plan != nil && t.IsPartition() {
		return Summary{}, fmt.Errorf("--disk needs a whole disk, but %s is a partition; give the disk it belongs to", target)
	}
	limit := int64(-1)
	if t.Kind == Device {
		limit = t.Size
		switch {
		case size < 0:
			return Summary{}, fmt.Errorf("%w: %s is a pipe, and %s is a block device: the length must be known first "+
				"so that a stream longer than the device is refused before anything is written; nothing was written",
				ErrUnknownLength, src.Name, target)
		case size > t.Size:
			return Summary{}, fmt.Errorf("%w: %s needs %d bytes (%s), %s holds %d (%s); nothing was written",
				ErrTooLong, src.Name, size, bytesize.Human(size), target, t.Size, bytesize.Human(t.Size))
		}
	}

	w, err := NewWriter(t, Options{BlockSize: opts.BlockSize, AssumeZeroed: opts.AssumeZeroed, Limit: limit})
	if err != nil {
		return Summary{}, err
	}
	start := time.Now()
	stop := func() {}
	if opts.Progress != nil {
		stop = opts.Progress(w, size)
	}
	if src.Plan != nil {
		err = src.Plan.Restore(ctx, w, src.Archive)
	} else {
		_, err = w.ReadFrom(ctx, src.R, size)
		if err == nil && size < 0 && w.In() == 0 {
			stop()
			// Most likely the command before the pipe failed.
			if t.Created {
				os.Remove(target)
			}
			return Summary{}, fmt.Errorf("%s is empty (did the command before the pipe fail?); nothing was written to %s", src.Name, target)
		}
	}
	if err == nil {
		err = w.Finish(ctx)
	} else if errors.Is(err, ErrLong) {
		// The promised length was written: make it exactly the stream's
		// first bytes, as the error will say.
		w.Finish(ctx)
	}
	stop()
	if err != nil {
		return Summary{}, &IncompleteError{Target: target, Pos: w.Pos(), Err: err}
	}
	if t.Kind == Device && (src.Plan != nil || src.WholeDisk) {
		if err := t.RereadPartitions(); err != nil {
			warnf("note: %v", err)
		}
	}

	st := w.Stats()
	sum := Summary{
		Target: target, Kind: t.Kind.String(), TargetSize: t.Size,
		StreamBytes: st.In, Covered: w.Pos(), Written: st.Written, MergedZeros: st.MergedZeros,
		Zeroed: st.Zeroed, ZerosWritten: st.ZerosWritten, Holes: st.Holes, Skipped: st.Skipped,
		Seconds: time.Since(start).Seconds(),
	}
	if t.Kind == Device {
		sum.Untouched = t.Size - w.Pos()
	} else {
		sum.TargetSize = w.Pos()
	}
	return sum, nil
}
