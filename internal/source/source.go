// Package source opens what the user wants backed up (an image file or a
// block device, always O_RDONLY; a VM image such as qcow2, vmdk or vhdx
// through a private read-only qemu-nbd; or an NBD export named by an
// nbd:// or nbd+unix:// URI), finds its partitions with layout, maps each
// one with the filesystem parser that recognises it (extfsmap, ntfsmap), and
// assembles the streams every consumer reads: the whole disk, the header
// before the first partition, and each partition, all through stream.Reader.
//
// Rules: a partition that no parser claims, that a parser refuses, or that
// overlaps another passes through whole; bytes outside every partition (boot
// code, gaps, the backup GPT) pass through; the partition table's own
// sectors (layout.Layout.Meta) pass through wherever they lie, even inside a
// partition's free space; only proven-free ranges are zero. The header is
// the bytes before the first table entry's start, even an entry cut off by
// the end of the source.
//
// Filesystems are found through the probe table in detect.go: adding one is
// one <fs>map package and one row there.
//
// Ranges an NBD server reports as reading as zeros (block status
// NBD_STATE_ZERO) are added to every stream's free map, whatever the
// partition: stream then neither reads them nor reports them as data. A
// qcow2's data that qemu-img map places in the image file itself is read
// from there, in place, rather than through the socket (direct.go).
package source

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/prezero/prezero/extfsmap"
	"github.com/prezero/prezero/freemap"
	"github.com/prezero/prezero/internal/layout"
	"github.com/prezero/prezero/internal/nbd"
	"github.com/prezero/prezero/lvm"
	"github.com/prezero/prezero/stream"
)

// Options change how partitions are mapped.
type Options struct {
	ForceDirty bool       // zero dirty NTFS volumes too (never hibernated ones)
	CrossCheck CrossCheck // check bitmaps against the files that use them
	ForceShare bool       // open a VM image even if another process (a VM) has it open for writing
	ZeroSwap   bool       // zero swap areas after their header page (never hibernation images)
	// NBDTimeout is how long an NBD server (qemu-nbd serving a VM image,
	// or an NBD URI's) may stay silent while prezero waits for it before
	// reads fail; 0 means nbd.DefaultTimeout.
	NBDTimeout time.Duration

	noDirect bool // tests: read a qcow2 wholly through NBD
}

// DefaultNBDTimeout is the NBDTimeout of a zero Options.
const DefaultNBDTimeout = nbd.DefaultTimeout

func (o Options) nbdTimeout() time.Duration {
	if o.NBDTimeout <= 0 {
		return nbd.DefaultTimeout
	}
	return o.NBDTimeout
}

// CrossCheck chooses whether parsers check their allocation bitmaps against
// the blocks their files reference (ext inodes, NTFS MFT records), keeping
// used whatever a file references.
type CrossCheck int

const (
	// CrossCheckAuto: where the bitmap has no checksum of its own (ext2,
	// ext3, ext4 without metadata_csum; every NTFS).
	CrossCheckAuto CrossCheck = iota
	CrossCheckOn
	CrossCheckOff
)

// Source is an opened, mapped source.
type Source struct {
	Path   string
	Size   int64
	Layout *layout.Layout
	Parts  []*Part // in table order; containers included, see Part.Container
	LVs    []*Part // LVM logical volumes found on the PVs among Parts

	// Format is "" for a raw file or block device, qemu's format name
	// (qcow2, vmdk, ...) for a VM image read through qemu-nbd, and "nbd"
	// for an NBD URI.
	Format string
	// KnownZero holds the ranges the NBD server reported as reading as
	// zeros; nil for raw sources. They are free in every stream.
	KnownZero *freemap.Map

	f        *os.File
	nbd      *nbd.Client
	direct   *directReader // a qcow2's data read in place, or nil
	qemu     *nbd.Qemu
	zeroable int64 // bytes the parsers proved free
	disk     *stream.Reader
	header   *stream.Reader
}

// Part is one partition (or the bare filesystem) with its map, or an LVM
// logical volume (LV != "").
type Part struct {
	layout.Partition
	// LV is "VG/LV" for a logical volume; its Number is then the number
	// of the partition holding its first extent, Start the disk offset of
	// that extent, and Name its device-mapper name.
	LV        string
	Volumes   []*Part  // on an LVM PV: the LVs whose first extent it holds
	FS        string   // "ext4", "ntfs", ... or "" if not recognised
	BlockSize int      // allocation unit of FS, bytes
	Zeroed    bool     // false: the partition passes through unchanged
	Reason    string   // why it passes through, if it does
	Notes     []string // fallbacks and warnings from the parser
	Detail    string   // how it was mapped, shown after "zeroed" (a journal replay)
	Journal   *extfsmap.Replay
	Free      *freemap.Map
	Stream    *stream.Reader // nil for an LV that is not wholly in the source
}

// Status is "zeroed", "zeroed (DETAIL)" or "pass-through: REASON".
func (p *Part) Status() string {
	if p.Zeroed && p.Detail != "" {
		return "zeroed (" + p.Detail + ")"
	}
	if p.Zeroed {
		return "zeroed"
	}
	return "pass-through: " + p.Reason
}

// Used returns the bytes of the partition that are served from the source.
func (p *Part) Used() int64 { return p.Free.Size() - p.Free.FreeBytes() }

// Label is how map names the volume: "3", or "3/vg/lv" for an LV.
func (p *Part) Label() string {
	if p.LV != "" {
		return strconv.Itoa(p.Number) + "/" + p.LV
	}
	return strconv.Itoa(p.Number)
}

// IsURI reports whether a SOURCE argument is an NBD URI, not a path.
func IsURI(path string) bool { return nbd.IsURI(path) }

// Open opens path read-only and maps it: an NBD URI, a VM image through
// qemu-nbd, or a raw image file or block device as it is.
func Open(path string, opt Options) (*Source, error) {
	if nbd.IsURI(path) {
		a, err := nbd.ParseURI(path)
		if err != nil {
			return nil, err
		}
		c, err := nbd.Dial(context.Background(), a, opt.nbdTimeout())
		if err != nil {
			return nil, err
		}
		s, err := openNBD(c, c, path, opt)
		if err != nil {
			c.Close()
			return nil, err
		}
		s.Format = "nbd"
		return s, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	info, err := probeImage(f, path)
	if err != nil {
		f.Close()
		return nil, err
	}
	if info != nil {
		q, err := nbd.StartQemu(context.Background(), path, nbd.QemuOptions{
			Format: info.Format, ForceShare: opt.ForceShare, Device: info.device, Timeout: opt.nbdTimeout()})
		if err != nil {
			f.Close()
			return nil, err
		}
		var r io.ReaderAt = q.Client
		dr := directReaderFor(f, path, info, q.Client, opt)
		if dr != nil {
			r = dr
		}
		s, err := openNBD(q.Client, r, path, opt)
		if err != nil {
			q.Close()
			f.Close()
			return nil, fmt.Errorf("%w%s", err, QemuSays(q))
		}
		s.Format, s.qemu, s.f, s.direct = info.Format, q, f, dr
		return s, nil
	}
	s, err := New(f, path, opt)
	if err != nil {
		f.Close()
		return nil, err
	}
	s.f = f
	return s, nil
}

// New maps an already opened source.
func New(f *os.File, path string, opt Options) (*Source, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if fi.IsDir() {
		return nil, fmt.Errorf("%s is a directory; give an image file or a block device", path)
	}
	if fi.Mode()&os.ModeCharDevice != 0 {
		return nil, fmt.Errorf("%s is a character device, not a disk or image", path)
	}
	size, err := f.Seek(0, io.SeekEnd) // works for block devices too
	if err != nil {
		return nil, fmt.Errorf("%s: finding its size: %w", path, err)
	}
	if size == 0 {
		return nil, fmt.Errorf("%s is empty", path)
	}
	ss := 0 // an image file: layout guesses an MBR's sector size
	if fi.Mode()&os.ModeDevice != 0 {
		n, err := unix.IoctlGetInt(int(f.Fd()), unix.BLKSSZGET)
		if err != nil {
			return nil, fmt.Errorf("%s: reading its logical sector size (BLKSSZGET): %w", path, err)
		}
		ss = n
	}
	return build(f, path, size, ss, nil, opt)
}

// build is New over any io.ReaderAt; ss is a block device's logical sector
// size, or 0. kz, if not nil, holds the ranges known to read as zeros:
// they are never read, by the parsers either.
func build(r io.ReaderAt, path string, size int64, ss int, kz *freemap.Map, opt Options) (*Source, error) {
	if kz != nil {
		r = stream.New(r, size, kz)
	}
	l, err := layout.ReadOptions(r, size, layout.Options{SectorSize: ss, Recognise: recognise})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	s := &Source{Path: path, Size: size, Layout: l, KnownZero: kz}
	markOverlaps(l.Partitions)
	for _, lp := range l.Partitions {
		p := mapPart(r, size, lp, l.Meta, opt)
		if kz != nil {
			start, n := lp.Clip(size)
			p.Stream = stream.New(io.NewSectionReader(r, start, n), n, withKnownZero(p.Free, kz, start, n))
		}
		s.Parts = append(s.Parts, p)
	}
	s.LVs = mapLVM(r, size, s.Parts, l.Meta, opt)

	disk := freemap.NewBuilder(size)
	first := size
	for _, p := range s.Parts {
		if p.Zeroed {
			disk.AddMap(p.Free, p.Start)
		}
		// The header ends where the first entry starts, even an entry
		// cut off by the end of the source.
		if !p.Container && p.Size > 0 && p.Start > 0 {
			first = min(first, p.Start)
		}
	}
	if l.Scheme == layout.Bare {
		first = 0
	}
	free := disk.Map()
	s.zeroable = free.FreeBytes()
	s.disk = stream.New(r, size, withKnownZero(free, kz, 0, size))
	s.header = stream.New(r, first, withKnownZero(freemap.NewBuilder(first).Map(), kz, 0, first))
	return s, nil
}

// Zeroable returns the bytes the filesystem parsers proved free: what
// prezero saves over reading the source as it is. Known zeros are not
// counted (they are zeros in the source too).
func (s *Source) Zeroable() int64 { return s.zeroable }

// Transferred returns, for an NBD source, the bytes asked of the server
// and the data bytes it sent so far.
func (s *Source) Transferred() (requested, received int64) {
	if s.nbd == nil {
		return 0, 0
	}
	return s.nbd.Requested(), s.nbd.Received()
}

// ReadInPlace returns, for a qcow2, the bytes read straight from the image
// file where qemu said its data lies (see direct.go), and the bytes of the
// disk that are so placed.
func (s *Source) ReadInPlace() (read, placed int64) {
	if s.direct == nil {
		return 0, 0
	}
	for _, e := range s.direct.ext {
		placed += e.n
	}
	return s.direct.direct.Load(), placed
}

// Server returns the qemu-nbd process serving a VM image, or nil.
func (s *Source) Server() *nbd.Qemu { return s.qemu }

// QemuSays returns what qemu-nbd wrote to stderr, one "qemu-nbd says:" line
// each, to add to an error; "" if q is nil or said nothing.
func QemuSays(q *nbd.Qemu) string {
	if q == nil {
		return ""
	}
	msg := strings.TrimSpace(q.Stderr())
	if msg == "" {
		return ""
	}
	return "\nqemu-nbd says: " + strings.ReplaceAll(msg, "\n", "\nqemu-nbd says: ")
}

// mapPart detects and maps one partition; the table sectors meta are kept.
func mapPart(r io.ReaderAt, size int64, lp layout.Partition, meta []layout.Extent, opt Options) *Part {
	start, n := lp.Clip(size)
	sec := io.NewSectionReader(r, start, n)
	p := &Part{Partition: lp}
	passThrough := func(reason string) *Part {
		p.Zeroed, p.Reason = false, reason
		p.Free = freemap.NewBuilder(n).Map()
		p.Stream = stream.New(sec, n, p.Free)
		return p
	}
	switch {
	case lp.Container && lp.Problem != "":
		return passThrough("extended partition (holds the logical partitions' boot records); " + lp.Problem)
	case lp.Container:
		return passThrough("extended partition (holds the logical partitions' boot records)")
	case lp.Problem != "":
		return passThrough(lp.Problem)
	}
	if lvm.Probe(sec, n) {
		// An LVM PV: mapLVM maps it once every PV of the source is known.
		p.FS = pvFS
		return passThrough("LVM2 PV not mapped")
	}
	mapVolume(p, sec, n, opt)
	if p.Zeroed {
		p.Free = keepMeta(p.Free, start, meta)
		p.Stream = stream.New(sec, n, p.Free)
	}
	return p
}

// mapVolume detects and maps the filesystem of a partition or LV of n
// bytes read through sec, and sets p's FS, map and stream: the one path
// every volume takes through the probe table.
func mapVolume(p *Part, sec io.ReaderAt, n int64, opt Options) {
	passThrough := func(reason string) {
		p.Zeroed, p.Reason = false, reason
		p.Free = freemap.NewBuilder(n).Map()
		p.Stream = stream.New(sec, n, p.Free)
	}
	d := detect(sec, n)
	if d == nil {
		if t := strings.ToLower(p.Type); t == "0x82" || t == "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f" {
			passThrough("a Linux swap partition without a swap signature (a hibernation image or an unknown format)")
			return
		}
		passThrough("no supported filesystem")
		return
	}
	p.FS = d.name
	res, err := d.read(sec, n, opt)
	if res != nil && res.FS != "" {
		p.FS = res.FS
	}
	if err != nil {
		passThrough(err.Error())
		return
	}
	if res.Free.Size() != n {
		passThrough(fmt.Sprintf("internal error: %s map covers %d bytes, volume has %d", d.name, res.Free.Size(), n))
		return
	}
	p.FS, p.BlockSize, p.Notes = res.FS, res.BlockSize, res.Notes
	p.Detail, p.Journal = res.Detail, res.Journal
	if c := res.Free.Coarsened(); c.Bytes > 0 {
		p.Notes = append(p.Notes, fmt.Sprintf("coarsened: %v served from source to stay within the memory limit", c))
	}
	p.Zeroed, p.Free = true, res.Free
	p.Stream = stream.New(sec, n, p.Free)
}

// keepMeta returns free (a partition's map, which starts at byte start of
// the source) without the partition-table sectors meta: whatever free space
// a table puts its MBR, EBRs or GPT arrays in, they are served from the
// source, in the disk stream and in the partition's own.
func keepMeta(free *freemap.Map, start int64, meta []layout.Extent) *freemap.Map {
	cut := freemap.NewBuilder(free.Size())
	n := 0
	for _, m := range meta {
		off, end := max(m.Start-start, 0), min(m.Start+m.Size-start, free.Size())
		if end > off {
			cut.Add(off, end-off)
			n++
		}
	}
	cm := cut.Map()
	defer cm.Release()
	if n == 0 {
		return free
	}
	out := free.Without(cm)
	free.Release() // nothing reads through it: its memory goes back to the limit
	return out
}

// markOverlaps marks every partition that shares bytes with another: one
// table entry's free space may be another's data, so both pass through.
// Extended containers are meant to hold their logicals and are skipped.
func markOverlaps(ps []layout.Partition) {
	for i := range ps {
		for j := range ps {
			a, b := &ps[i], &ps[j]
			if i == j || a.Container || b.Container || a.Size <= 0 || b.Size <= 0 {
				continue
			}
			if a.Start < b.End() && b.Start < a.End() && a.Problem == "" {
				a.Problem = fmt.Sprintf("overlaps partition %d", b.Number)
			}
		}
	}
}

// Close closes what Open opened: the source file, the NBD connection, and
// stops the qemu-nbd it started.
func (s *Source) Close() error {
	var err error
	switch {
	case s.qemu != nil:
		err = s.qemu.Close()
	case s.nbd != nil:
		err = s.nbd.Close()
	}
	if s.f != nil {
		if ferr := s.f.Close(); err == nil {
			err = ferr
		}
	}
	return err
}

// File returns the opened source file (for a VM image, the image file),
// or nil for an NBD URI.
func (s *Source) File() *os.File { return s.f }

// Disk returns the whole source with every zeroed partition's free space zero.
func (s *Source) Disk() *stream.Reader { return s.disk }

// Header returns the bytes before the first partition, unchanged.
func (s *Source) Header() *stream.Reader { return s.header }

// Files returns the partitions served as files (partN): not containers.
func (s *Source) Files() []*Part {
	var out []*Part
	for _, p := range s.Parts {
		if !p.Container {
			out = append(out, p)
		}
	}
	return out
}

// ErrNoSuchPart is returned by Lookup for an unknown name.
var ErrNoSuchPart = errors.New("no such stream")

// Lookup returns the stream WHAT names: "disk", "header", "N", "partN",
// or an LV as "VG/LV" or by its device-mapper name "VG-LV".
func (s *Source) Lookup(what string) (*stream.Reader, error) {
	switch what {
	case "", "disk":
		return s.disk, nil
	case "header":
		return s.header, nil
	}
	for _, lv := range s.LVs {
		if what == lv.LV || what == lv.Name || what == LVFileName(lv) {
			if lv.Stream == nil {
				return nil, fmt.Errorf("LV %s of %s cannot be read: %s", lv.LV, s.Path, lv.Reason)
			}
			return lv.Stream, nil
		}
	}
	n, err := strconv.Atoi(strings.TrimPrefix(what, "part"))
	if err == nil {
		for _, p := range s.Files() {
			if p.Number == n {
				return p.Stream, nil
			}
		}
	}
	var names []string
	for _, p := range s.Files() {
		names = append(names, "part"+strconv.Itoa(p.Number))
	}
	for _, lv := range s.LVs {
		if lv.Stream != nil {
			names = append(names, lv.LV)
		}
	}
	return nil, fmt.Errorf("%w %q in %s: choose disk, header or one of %s", ErrNoSuchPart, what, s.Path, strings.Join(names, ", "))
}
