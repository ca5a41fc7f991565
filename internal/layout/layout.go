// Package layout finds the partitions of a source: a GPT (read through
// go-diskfs, 512-byte or 4096-byte sectors), an MBR with its chain of
// extended boot records (walked here, since go-diskfs reads only the four
// primary slots), or no table at all, in which case the whole source is one
// bare filesystem, partition 1.
//
// It is the first step of prezero's pipeline: each partition found here gets
// its own allocation map. Layout only reads; a table that points past the end
// of the source yields a partition marked with Problem, never a crash, and
// everything between partitions is left for the caller to pass through.
package layout

import (
	"errors"
	"fmt"
	"io"
)

// Scheme names the partitioning scheme of a source.
type Scheme string

// The schemes Read recognises.
const (
	GPT  Scheme = "gpt"
	MBR  Scheme = "mbr"
	Bare Scheme = "none" // no partition table: one filesystem spans the source
)

// Partition is one entry of a partition table, in bytes.
type Partition struct {
	Number    int    // as Linux numbers it: GPT entry index, MBR 1-4, logical 5...
	Start     int64  // byte offset in the source
	Size      int64  // length in bytes as the table states it
	Type      string // "0x83" for MBR, the type GUID for GPT
	TypeName  string // a friendly name for Type, if known
	Name      string // GPT partition name
	Container bool   // an MBR extended partition: holds EBRs and logicals, not a filesystem
	Problem   string // non-empty if the entry cannot be trusted; the partition passes through
}

// End returns the first byte after the partition.
func (p Partition) End() int64 { return p.Start + p.Size }

// Layout is the partitioning of a source.
type Layout struct {
	Scheme     Scheme
	SectorSize int // logical sector size of the table (0 for Bare)
	Partitions []Partition
	Notes      []string // anything odd about the table that the user should see
}

// ErrFormat reports a partition table that cannot be read at all.
var ErrFormat = errors.New("layout: malformed partition table")

// FormatError describes a malformed table at a byte offset.
type FormatError struct {
	Off int64
	Msg string
}

func (e *FormatError) Error() string {
	return fmt.Sprintf("partition table at byte %d: %s", e.Off, e.Msg)
}

// Is makes errors.Is(err, ErrFormat) true for a *FormatError.
func (e *FormatError) Is(target error) bool { return target == ErrFormat }

// Read finds the partitions of the size-byte source r.
func Read(r io.ReaderAt, size int64) (*Layout, error) {
	var mbr [512]byte
	if size < int64(len(mbr)) {
		return bare(size), nil
	}
	if _, err := r.ReadAt(mbr[:], 0); err != nil {
		return nil, fmt.Errorf("reading sector 0: %w", err)
	}
	entries, ok := parseMBR(mbr[:])
	if !ok {
		return bare(size), nil
	}
	for _, e := range entries {
		if e.typ == 0xEE {
			return readGPT(r, size)
		}
	}
	return readMBR(r, size, entries)
}

// bare is the layout of a source with no partition table.
func bare(size int64) *Layout {
	p := Partition{Number: 1, Start: 0, Size: size, Type: "none", TypeName: "whole source"}
	check(&p, size)
	return &Layout{Scheme: Bare, Partitions: []Partition{p}}
}

// check marks a partition whose bytes lie outside the source.
func check(p *Partition, size int64) {
	switch {
	case p.Size <= 0:
		p.Problem = "empty partition"
	case p.Start >= size:
		p.Problem = fmt.Sprintf("starts at byte %d, past the end of the source (%d bytes)", p.Start, size)
	case p.End() > size:
		p.Problem = fmt.Sprintf("ends at byte %d, past the end of the source (%d bytes)", p.End(), size)
	}
}

// Clip returns the part of p that lies inside a source of size bytes.
func (p Partition) Clip(size int64) (start, n int64) {
	start = min(p.Start, size)
	end := min(p.End(), size)
	return start, max(end-start, 0)
}
