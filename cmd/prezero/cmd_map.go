package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/pflag"

	"github.com/prezero/prezero/extfsmap"
	"github.com/prezero/prezero/internal/bytesize"
	"github.com/prezero/prezero/internal/source"
)

type mapOptions struct {
	json  bool
	force bool
	sourceFlags
}

func (o *mapOptions) AddFlags(f *pflag.FlagSet) {
	f.BoolVar(&o.json, "json", false, "print the map as JSON")
	f.BoolVar(&o.force, "force", false, "with --force-share: map a VM image another process has open for writing")
	o.sourceFlags.AddFlags(f)
}

// sourceFlags are the options every command that opens a SOURCE shares.
type sourceFlags struct {
	forceDirty bool
	zeroSwap   bool
	forceShare bool
}

func (o *sourceFlags) AddFlags(f *pflag.FlagSet) {
	f.BoolVar(&o.forceDirty, "force-dirty", false, "zero NTFS volumes marked dirty (unsafe: their bitmap may be stale)")
	addMemoryFlag(f)
	f.BoolVar(&o.zeroSwap, "zero-swap", false, "zero swap areas after their header page (not if a saved RAM state, e.g. a VM snapshot with memory, will resume from this disk)")
	addShareFlag(f, &o.forceShare)
}

func (o *sourceFlags) options() source.Options {
	return source.Options{ForceDirty: o.forceDirty, ZeroSwap: o.zeroSwap, ForceShare: o.forceShare, CrossCheck: crossCheckOption(), NBDTimeout: nbdTimeout}
}

func init() {
	var opts mapOptions
	register(&command{
		name:  "map",
		usage: "SOURCE [--json]",
		short: "show the partitions of SOURCE and what prezero would zero",
		long: `Print one row per partition: number, start, size, type, filesystem, block
size, used bytes, zeroable bytes and status ("zeroed", or "pass-through:
REASON"), then the expected saving. An LVM physical volume's logical volumes
follow it as rows N/VG/LV (a partition's row counts its LVs' bytes too).
SOURCE is an image file or block device, opened read-only.

Swap areas pass through unless --zero-swap is given; the row says how much
it would save. Leave swap alone if a saved RAM state (a suspended VM, a
snapshot with memory) will resume from this disk.`,
		flags: opts.AddFlags,
		run:   func(ctx context.Context, args []string) error { return runMap(ctx, opts, args) },
	})
}

// mapJSON is the --json form of map's output.
type mapJSON struct {
	Source     string     `json:"source"`
	Format     string     `json:"format,omitempty"`           // qcow2, ... or nbd; absent for raw
	KnownZero  *int64     `json:"known_zero_bytes,omitempty"` // NBD sources with block status
	InPlace    *int64     `json:"in_place_bytes,omitempty"`   // a qcow2's data read from the image file itself
	Size       int64      `json:"size"`
	Scheme     string     `json:"scheme"`
	SectorSize int        `json:"sector_size,omitempty"`
	Notes      []string   `json:"notes,omitempty"`
	Partitions []partJSON `json:"partitions"`
	Used       int64      `json:"used_bytes"`
	Zeroable   int64      `json:"zeroable_bytes"`
}

type partJSON struct {
	Number    int      `json:"number"`
	Start     int64    `json:"start"`
	Size      int64    `json:"size"`
	Type      string   `json:"type"`
	TypeName  string   `json:"type_name,omitempty"`
	Name      string   `json:"name,omitempty"`
	Container bool     `json:"container,omitempty"`
	FS        string   `json:"filesystem,omitempty"`
	BlockSize int      `json:"block_size,omitempty"`
	Used      int64    `json:"used_bytes"`
	Zeroable  int64    `json:"zeroable_bytes"`
	Zeroed    bool     `json:"zeroed"`
	Status    string   `json:"status"`
	Notes     []string `json:"notes,omitempty"`
	// Journal: an ext3/ext4 journal replayed in memory (needs_recovery).
	Journal *extfsmap.Replay `json:"journal,omitempty"`
	// LVM logical volumes whose first extent this partition (a PV) holds.
	Volumes []partJSON `json:"volumes,omitempty"`
	LV      string     `json:"lv,omitempty"`   // "VG/LV" for a logical volume
	File    string     `json:"file,omitempty"` // its file in the mount; prezero cat SOURCE VG/LV
}

func runMap(ctx context.Context, opts mapOptions, args []string) error {
	if len(args) != 1 {
		return usagef("expected one SOURCE, got %d arguments", len(args))
	}
	if err := checkSource(args[0]); err != nil {
		return err
	}
	// map only reads metadata, so a live source is shown, with a warning:
	// cat, mount and backup refuse it.
	if err := checkShare(opts.forceShare, opts.force); err != nil {
		return err
	}
	if err := checkInUse(args[0]); err != nil {
		fmt.Fprintf(os.Stderr, "prezero map: warning: %v\n", err)
	}
	src, err := source.Open(args[0], opts.options())
	if err != nil {
		return err
	}
	defer src.Close()
	m := buildMapJSON(src)
	if opts.json {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(m)
	}
	printMap(os.Stdout, m)
	return nil
}

func buildMapJSON(src *source.Source) mapJSON {
	m := mapJSON{
		Source: src.Path, Size: src.Size, Scheme: string(src.Layout.Scheme),
		SectorSize: src.Layout.SectorSize, Notes: src.Layout.Notes,
		Partitions: []partJSON{}, Format: src.Format,
	}
	if src.KnownZero != nil {
		n := src.KnownZero.FreeBytes()
		m.KnownZero = &n
	}
	if _, placed := src.ReadInPlace(); placed > 0 {
		m.InPlace = &placed
	}
	for _, p := range src.Parts {
		pj := partToJSON(p)
		for _, lv := range p.Volumes {
			lj := partToJSON(lv)
			lj.LV = lv.LV
			if lv.Stream != nil {
				lj.File = source.LVFileName(lv)
			}
			pj.Volumes = append(pj.Volumes, lj)
		}
		m.Partitions = append(m.Partitions, pj)
	}
	m.Zeroable = src.Zeroable()
	m.Used = src.Size - m.Zeroable
	return m
}

func partToJSON(p *source.Part) partJSON {
	return partJSON{
		Number: p.Number, Start: p.Start, Size: p.Size, Type: p.Type, TypeName: p.TypeName,
		Name: p.Name, Container: p.Container, FS: p.FS, BlockSize: p.BlockSize,
		Used: p.Used(), Zeroable: p.Free.FreeBytes(), Zeroed: p.Zeroed, Status: p.Status(), Notes: p.Notes,
		Journal: p.Journal,
	}
}

func printMap(w io.Writer, m mapJSON) {
	fmt.Fprintf(w, "%s: %s, partition table: %s", m.Source, bytesize.Human(m.Size), m.Scheme)
	if m.SectorSize > 0 {
		fmt.Fprintf(w, " (%d-byte sectors)", m.SectorSize)
	}
	fmt.Fprintln(w)
	if m.Format != "" {
		known := "the server gives no allocation information"
		if m.KnownZero != nil {
			known = fmt.Sprintf("%s reported as zeros (unallocated), not read", bytesize.Human(*m.KnownZero))
		}
		via := "a " + m.Format + " image read through qemu-nbd"
		if m.InPlace != nil {
			via += fmt.Sprintf(" (%s of its data read in place from the image file)", bytesize.Human(*m.InPlace))
		}
		if m.Format == "nbd" {
			via = "an NBD export"
		}
		fmt.Fprintf(w, "source: %s; %s\n", via, known)
	}
	for _, n := range m.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PART\tSTART\tSIZE\tTYPE\tFS\tBLOCK\tUSED\tZEROABLE\tSTATUS")
	row := func(label string, p partJSON) {
		typ := p.Type
		if p.TypeName != "" {
			typ = p.TypeName
		}
		fs, bs := p.FS, "-"
		if fs == "" {
			fs = "-"
		}
		if p.BlockSize > 0 {
			bs = fmt.Sprint(p.BlockSize)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", label, p.Start, bytesize.Human(p.Size), typ, fs, bs,
			bytesize.Human(p.Used), bytesize.Human(p.Zeroable), p.Status)
	}
	for _, p := range m.Partitions {
		row(fmt.Sprint(p.Number), p)
		for _, lv := range p.Volumes {
			row(fmt.Sprintf("%d/%s", p.Number, lv.LV), lv)
		}
	}
	tw.Flush()
	for _, p := range m.Partitions {
		for _, n := range p.Notes {
			fmt.Fprintf(w, "part%d: %s\n", p.Number, n)
		}
		for _, lv := range p.Volumes {
			for _, n := range lv.Notes {
				fmt.Fprintf(w, "%s: %s\n", lv.LV, n)
			}
		}
	}
	pct := 0.0
	if m.Size > 0 {
		pct = 100 * float64(m.Zeroable) / float64(m.Size)
	}
	fmt.Fprintf(w, "total: %s, served from source %s, zeroed %s (%.1f%% saving before compression)\n",
		bytesize.Human(m.Size), bytesize.Human(m.Used), bytesize.Human(m.Zeroable), pct)
	var passed []string
	files := 0
	for _, p := range m.Partitions {
		if p.Container {
			continue
		}
		files++
		if !p.Zeroed {
			passed = append(passed, fmt.Sprintf("part%d", p.Number))
		}
	}
	if len(passed) > 0 {
		fmt.Fprintf(w, "warning: %d of %d partitions pass through unchanged (%s): see STATUS; nothing is zeroed there\n",
			len(passed), files, strings.Join(passed, ", "))
	}
}

// passThroughReasons lists why each partition of src passes through,
// or why there is no partition to zero at all.
func passThroughReasons(src *source.Source) []string {
	var rs []string
	for _, p := range src.Files() {
		if !p.Zeroed {
			rs = append(rs, fmt.Sprintf("part%d: %s", p.Number, p.Reason))
		}
	}
	if len(rs) == 0 {
		rs = append(rs, "its partitions have no free blocks")
	}
	return rs
}
