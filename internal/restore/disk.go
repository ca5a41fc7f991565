package restore

import (
	"context"
	"fmt"
	"io"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Item is one file of a backup archive.
type Item struct {
	Path string
	Size int64
}

// Archive opens the items of a backup archive (borg extract --stdout).
// Read must report the extractor's failure instead of io.EOF.
type Archive interface {
	Open(ctx context.Context, path string) (io.ReadCloser, error)
}

// Names of the items of a --partitions archive.
const (
	HeaderItem = "header.img"
	DiskItem   = "disk.img"
)

var partItemRE = regexp.MustCompile(`^part([1-9][0-9]{0,3})\.img$`)

// maxPrefix caps how much of header.img is held in memory to read its
// table; prefixStep is how much is read at first (a typical header is 1 MiB).
const (
	maxPrefix  = 128 << 20
	prefixStep = 1 << 20
)

// DiskPlan is how a --partitions archive (header.img + partN.img) goes back
// onto a whole disk: the header at 0, each partition at the offset the
// header's table gives it, zeros in every gap, and for GPT the backup table
// regenerated at the AlternateLBA the primary names. Bytes the archive does
// not hold (gaps between partitions, the space before the backup GPT) are
// zeroed: they cannot be restored, and must not keep stale data.
type DiskPlan struct {
	Scheme     string // "gpt", "mbr" or "none" (a bare filesystem, part1.img at 0)
	SectorSize int64
	Header     Item
	Parts      []PlanPart // by offset
	End        int64      // bytes of the target the restore covers
	BackupGPT  int64      // offset of the regenerated backup GPT, or 0

	headerStream io.ReadCloser
	prefix       *prefixReader
	backup       []byte
}

// PlanPart is one partition to restore.
type PlanPart struct {
	Number int
	Start  int64 // byte offset on the disk
	Size   int64 // as the table states it
	Item   Item  // partN.img, at most Size bytes
}

// PlanDisk finds header.img and partN.img among items, reads the start of
// header.img from a to parse its partition table, and checks that every
// partition of the table has its item and fits. Nothing is written. The plan
// holds header.img open: call Restore or Close.
func PlanDisk(ctx context.Context, items []Item, a Archive) (*DiskPlan, error) {
	p := &DiskPlan{}
	byNum := map[int]Item{}
	var found bool
	for _, it := range items {
		base := path.Base(it.Path)
		if base == HeaderItem {
			p.Header, found = it, true
		} else if m := partItemRE.FindStringSubmatch(base); m != nil {
			n, _ := strconv.Atoi(m[1])
			byNum[n] = it
		}
	}
	if !found {
		return nil, fmt.Errorf("the archive has no %s; --disk needs an archive made by 'prezero backup --partitions' (header.img and partN.img)", HeaderItem)
	}
	if p.Header.Size == 0 {
		// No table: a bare filesystem served whole as part1.img.
		it, ok := byNum[1]
		if !ok || len(byNum) != 1 {
			return nil, fmt.Errorf("header.img is empty (a disk without a partition table), so the archive should hold exactly part1.img; it holds %s", partNames(byNum))
		}
		p.Scheme, p.End = "none", it.Size
		p.Parts = []PlanPart{{Number: 1, Start: 0, Size: it.Size, Item: it}}
		return p, nil
	}

	rc, err := a.Open(ctx, p.Header.Path)
	if err != nil {
		return nil, err
	}
	p.headerStream = rc
	p.prefix = &prefixReader{r: rc, size: p.Header.Size}
	if err := p.plan(byNum); err != nil {
		rc.Close()
		return nil, err
	}
	return p, nil
}

func (p *DiskPlan) plan(byNum map[int]Item) error {
	t, err := readTable(p.prefix, p.Header.Size)
	if err != nil {
		return err
	}
	p.Scheme, p.SectorSize = t.scheme, t.sectorSize
	sort.Slice(t.parts, func(i, j int) bool { return t.parts[i].Start < t.parts[j].Start })
	end := p.Header.Size
	for _, tp := range t.parts {
		it, ok := byNum[tp.Number]
		if !ok {
			return fmt.Errorf("header.img's %s table has partition %d at byte %d, but the archive has no part%d.img (it holds %s)",
				t.scheme, tp.Number, tp.Start, tp.Number, partNames(byNum))
		}
		delete(byNum, tp.Number)
		if tp.Start < end {
			return fmt.Errorf("partition %d starts at byte %d, inside the header or the previous partition (which ends at %d)", tp.Number, tp.Start, end)
		}
		if it.Size > tp.Size {
			return fmt.Errorf("%s holds %d bytes but partition %d is only %d bytes", it.Path, it.Size, tp.Number, tp.Size)
		}
		p.Parts = append(p.Parts, PlanPart{Number: tp.Number, Start: tp.Start, Size: tp.Size, Item: it})
		end = tp.Start + it.Size
	}
	if len(byNum) > 0 {
		return fmt.Errorf("the archive holds %s, which header.img's %s table does not list", partNames(byNum), t.scheme)
	}
	p.End = end
	if t.gpt != nil {
		off, data := t.gpt.Backup()
		if off < end {
			return fmt.Errorf("the backup GPT (at byte %d) would overlap partition data ending at %d", off, end)
		}
		p.BackupGPT, p.backup, p.End = off, data, t.gpt.End()
	}
	return nil
}

func partNames(m map[int]Item) string {
	if len(m) == 0 {
		return "no partN.img"
	}
	var ns []int
	for n := range m {
		ns = append(ns, n)
	}
	sort.Ints(ns)
	var s []string
	for _, n := range ns {
		s = append(s, m[n].Path)
	}
	return strings.Join(s, ", ")
}

// Close releases header.img if Restore was not called.
func (p *DiskPlan) Close() error {
	if p.headerStream == nil {
		return nil
	}
	err := p.headerStream.Close()
	p.headerStream = nil
	return err
}

// Restore writes the plan through w, which must be at offset 0: header.img,
// then each partition at its offset with zeros in between, then the backup
// GPT. It does not call w.Finish.
func (p *DiskPlan) Restore(ctx context.Context, w *Writer, a Archive) error {
	defer p.Close()
	if p.prefix != nil {
		if err := w.Write(ctx, p.prefix.buf); err != nil {
			return err
		}
		rest := p.Header.Size - int64(len(p.prefix.buf))
		if _, err := w.ReadFrom(ctx, p.headerStream, rest); err != nil {
			return fmt.Errorf("%s: %w", p.Header.Path, err)
		}
		if err := p.Close(); err != nil {
			return fmt.Errorf("%s: %w", p.Header.Path, err)
		}
	}
	for _, pp := range p.Parts {
		if err := w.Zeros(ctx, pp.Start-w.Pos()); err != nil {
			return err
		}
		rc, err := a.Open(ctx, pp.Item.Path)
		if err != nil {
			return err
		}
		_, err = w.ReadFrom(ctx, rc, pp.Item.Size)
		if cerr := rc.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("%s: %w", pp.Item.Path, err)
		}
	}
	if p.backup != nil {
		if err := w.Zeros(ctx, p.BackupGPT-w.Pos()); err != nil {
			return err
		}
		if err := w.Write(ctx, p.backup); err != nil {
			return fmt.Errorf("writing the backup GPT: %w", err)
		}
	}
	return nil
}

// prefixReader is an io.ReaderAt over the first bytes of a stream, reading
// and keeping more of it as ReadAt asks, up to maxPrefix.
type prefixReader struct {
	r    io.Reader
	size int64 // the stream's length
	buf  []byte
}

func (p *prefixReader) ReadAt(b []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("negative offset %d", off)
	}
	if off >= p.size {
		return 0, io.EOF
	}
	need := min(off+int64(len(b)), p.size)
	if need > maxPrefix {
		return 0, fmt.Errorf("the partition table reaches byte %d of header.img; prezero reads at most %d", need, maxPrefix)
	}
	if have := int64(len(p.buf)); need > have {
		need = max(need, min(p.size, prefixStep, maxPrefix)) // few reads for a small table
		grow := make([]byte, need-have)
		if _, err := io.ReadFull(p.r, grow); err != nil {
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				err = fmt.Errorf("%w: header.img ended early", ErrShort)
			}
			return 0, err
		}
		p.buf = append(p.buf, grow...)
	}
	n := copy(b, p.buf[off:need])
	if n < len(b) {
		return n, io.EOF
	}
	return n, nil
}
