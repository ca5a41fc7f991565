// Package layout is prezero's one partition-table package: it decodes an
// MBR with its chain of extended boot records, and a GPT (both headers and
// both entry arrays, CRCs checked, entries of any 128 * 2^n bytes), and
// writes the backup GPT that restore regenerates from a primary. A source
// with no table is one bare filesystem, partition 1.
//
// It is the first step of prezero's pipeline after the source is opened:
// each partition found here gets its own allocation map. Layout only
// decodes; each caller keeps its own policy. Read (used by map, cat, mount
// and backup) is lenient: an entry it cannot trust yields a partition
// marked with Problem, which then passes through, never a crash. restore
// uses DecodeMBR and ReadGPT directly and is strict, since it must rebuild
// a disk from header.img.
//
// Every sector that holds table metadata (the MBR, every EBR, both GPT
// headers and both entry arrays) is listed in Layout.Meta, wherever it lies,
// so that the caller serves those bytes from the source even when a hostile
// or odd table puts them inside a partition's free space.
//
// Sector size: GPT is tried with the device's logical sector size first,
// then 512 and 4096 bytes. An MBR states no sector size: a block device's
// (Options.SectorSize, from BLKSSZGET) is used; for an image file 512, unless
// no entry starts with a recognised filesystem at 512, while at 4096 every
// entry fits in the source and one starts with a filesystem.
//
// The GPT decoder is written here rather than driven through go-diskfs:
// go-diskfs refuses valid entry sizes other than 128 bytes, allocates what
// an unchecked header asks for, and panics on some inputs, so using it
// needed a recover() and a read-only file shim; a decoder that checks every
// field before it becomes an offset or a size is shorter than those guards.
package layout

import (
	"fmt"
	"io"

	"github.com/prezero/prezero/freemap"
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

// Extent is a byte range of the source that holds partition-table metadata.
type Extent struct {
	Start, Size int64
	What        string // "MBR", "EBR", "primary GPT header", ...
}

// Layout is the partitioning of a source.
type Layout struct {
	Scheme     Scheme
	SectorSize int // logical sector size of the table (0 for Bare)
	Partitions []Partition
	Meta       []Extent // table sectors: always served from the source
	Notes      []string // anything odd about the table that the user should see
}

// Options tell Read what it cannot find out from the bytes alone.
type Options struct {
	// SectorSize is a block device's logical sector size (BLKSSZGET), or 0
	// for an image file.
	SectorSize int
	// Recognise reports whether a filesystem prezero can map starts at the
	// beginning of r (size bytes). It only guesses an image file's MBR
	// sector size; nil means 512.
	Recognise func(r io.ReaderAt, size int64) bool
}

// Read finds the partitions of the size-byte image r with default Options.
func Read(r io.ReaderAt, size int64) (*Layout, error) { return ReadOptions(r, size, Options{}) }

// ReadOptions finds the partitions of the size-byte source r. An error
// (errors.Is freemap.ErrFormat, or an I/O error) means the table could not
// be read at all.
func ReadOptions(r io.ReaderAt, size int64, opt Options) (*Layout, error) {
	var sec [mbrSize]byte
	if size < int64(len(sec)) {
		return bare(size), nil
	}
	if _, err := r.ReadAt(sec[:], 0); err != nil {
		return nil, fmt.Errorf("reading sector 0: %w", err)
	}
	entries, ok := parseMBR(sec[:])
	if !ok {
		return bare(size), nil
	}
	sizes := []int{512, 4096}
	if ss := opt.SectorSize; ss != 0 {
		if ss < mbrSize || ss > 1<<16 || ss&(ss-1) != 0 {
			return nil, freemap.Formatf(0, "partition table: logical sector size %d is not a power of two in 512..65536", ss)
		}
		sizes = []int{ss}
		for _, s := range []int{512, 4096} {
			if s != ss {
				sizes = append(sizes, s)
			}
		}
	}
	for _, e := range entries {
		if e.Type == 0xEE {
			l, err := readGPTLayout(r, size, sizes)
			if err != nil {
				return nil, err
			}
			clipMeta(l, size)
			return l, nil
		}
	}
	if opt.SectorSize != 0 {
		return readMBR(r, size, entries, opt.SectorSize), nil
	}
	l := readMBR(r, size, entries, 512)
	if opt.Recognise != nil && !recognised(r, size, l, opt.Recognise) {
		if l4k := readMBR(r, size, entries, 4096); sound(l4k) && recognised(r, size, l4k, opt.Recognise) {
			l4k.Notes = append(l4k.Notes, "MBR read with 4096-byte sectors: filesystems start at those offsets, none at 512-byte ones")
			return l4k, nil
		}
	}
	return l, nil
}

// clipMeta keeps the metadata extents inside the source.
func clipMeta(l *Layout, size int64) {
	out := l.Meta[:0]
	for _, m := range l.Meta {
		p := Partition{Start: m.Start, Size: m.Size}
		if m.Start >= 0 && m.Size > 0 {
			m.Start, m.Size = p.Clip(size)
			if m.Size > 0 {
				out = append(out, m)
			}
		}
	}
	l.Meta = out
}

// sound reports whether every entry of l lies inside the source: a 512-byte
// table misread at 4096 bytes would reach eight times as far.
func sound(l *Layout) bool {
	for _, p := range l.Partitions {
		if p.Problem != "" {
			return false
		}
	}
	return true
}

// recognised reports whether any usable partition of l starts with a
// filesystem that rec recognises.
func recognised(r io.ReaderAt, size int64, l *Layout, rec func(io.ReaderAt, int64) bool) bool {
	for _, p := range l.Partitions {
		if p.Container || p.Problem != "" {
			continue
		}
		if rec(io.NewSectionReader(r, p.Start, p.Size), p.Size) {
			return true
		}
	}
	return false
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
