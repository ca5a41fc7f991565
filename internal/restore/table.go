package restore

import (
	"errors"
	"fmt"
	"io"

	"github.com/prezero/prezero/freemap"
	"github.com/prezero/prezero/internal/layout"
)

// tablePart is one partition of the restored header's table, in bytes.
type tablePart struct {
	Number int // GPT entry index, or MBR slot 1-4: the N of partN.img
	Start  int64
	Size   int64
}

// table is the partition table of a disk's header.
type table struct {
	scheme     string // "gpt" or "mbr"
	sectorSize int64
	parts      []tablePart
	gpt        *layout.GPTTable // the primary, for the backup GPT
}

// readTable reads the partition table at the start of the size-byte header
// r with layout's decoders, and applies restore's policy, which is stricter
// than map's: header.img must hold a sound primary GPT (512- or 4096-byte
// sectors) whose every entry lies in the usable LBAs, with room for the
// backup, or an MBR with primary partitions only. Errors match
// freemap.ErrFormat.
func readTable(r io.ReaderAt, size int64) (*table, error) {
	for _, ss := range []int{512, 4096} {
		g, err := layout.ReadGPT(r, size, ss, 1)
		if errors.Is(err, layout.ErrNoGPT) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("header.img: %w (a damaged primary GPT cannot be restored from header.img)", err)
		}
		h := g.Header
		if !g.BackupFits() {
			return nil, freemap.Formatf(int64(ss), "header.img: GPT usable LBAs %d-%d and AlternateLBA %d leave no room for the backup entry array (%d sectors)",
				h.FirstUsableLBA, h.LastUsableLBA, h.AlternateLBA, g.ArraySectors())
		}
		t := &table{scheme: "gpt", sectorSize: int64(ss), gpt: g}
		for _, e := range g.Entries {
			if !g.Usable(e.StartingLBA, e.EndingLBA) {
				return nil, freemap.Formatf(int64(ss), "header.img: GPT entry %d spans LBAs %d-%d, outside the usable LBAs %d-%d",
					e.Index, e.StartingLBA, e.EndingLBA, h.FirstUsableLBA, h.LastUsableLBA)
			}
			t.parts = append(t.parts, tablePart{
				Number: e.Index,
				Start:  int64(e.StartingLBA) * int64(ss),
				Size:   int64(e.EndingLBA-e.StartingLBA+1) * int64(ss),
			})
		}
		return t, nil
	}
	return readMBR(r, size)
}

// ErrExtended is matched (errors.Is) by the refusal of an MBR header.img
// with an extended partition; the error also matches freemap.ErrFormat.
var ErrExtended = errors.New("extended partition in header.img")

type extendedError struct{ error }

func (e extendedError) Is(target error) bool { return target == ErrExtended }
func (e extendedError) Unwrap() error        { return e.error }

// mbrSector is the sector size of the MBRs restore rebuilds from.
const mbrSector = 512

func readMBR(r io.ReaderAt, size int64) (*table, error) {
	if size < mbrSector {
		return nil, freemap.Formatf(0, "header.img: only %d bytes, no room for a partition table", size)
	}
	sec := make([]byte, mbrSector)
	if _, err := r.ReadAt(sec, 0); err != nil {
		return nil, fmt.Errorf("reading sector 0 of header.img: %w", err)
	}
	entries, ok := layout.DecodeMBR(sec)
	if !ok {
		return nil, freemap.Formatf(510, "header.img: no GPT and no valid MBR (signature 55 AA and status bytes)")
	}
	t := &table{scheme: "mbr", sectorSize: mbrSector}
	for i, e := range entries {
		off := int64(446 + 16*i)
		switch {
		case e.Type == 0:
			continue
		case e.Type == 0xEE:
			return nil, freemap.Formatf(off, "header.img: a protective MBR (type 0xEE) but no valid GPT header at LBA 1 with 512- or 4096-byte sectors")
		case layout.IsExtended(e.Type):
			return nil, extendedError{freemap.Formatf(off, "header.img: MBR partition %d is an extended partition (type 0x%02x). "+
				"The boot records (EBRs) that describe its logical partitions live inside it, not in header.img, "+
				"so prezero cannot put the disk back together from header.img and partN.img. "+
				"Restore a disk.img archive instead, or recreate the partitions and restore each partN.img "+
				"to its partition", i+1, e.Type)}
		case e.Sectors == 0:
			return nil, freemap.Formatf(off, "header.img: MBR partition %d has type 0x%02x but no sectors", i+1, e.Type)
		}
		t.parts = append(t.parts, tablePart{Number: i + 1, Start: int64(e.Start) * mbrSector, Size: int64(e.Sectors) * mbrSector})
	}
	if len(t.parts) == 0 {
		return nil, freemap.Formatf(446, "header.img: the MBR has no partitions")
	}
	return t, nil
}
