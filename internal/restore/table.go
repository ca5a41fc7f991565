package restore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// ErrFormat reports a partition table in header.img that cannot be used to
// put a --partitions archive back together.
var ErrFormat = errors.New("unusable partition table")

// FormatError describes a problem with the table at a byte offset of
// header.img.
type FormatError struct {
	Off int64
	Msg string
}

func (e *FormatError) Error() string {
	return fmt.Sprintf("header.img, byte %d: %s", e.Off, e.Msg)
}

// Is makes errors.Is(err, ErrFormat) true for a *FormatError.
func (e *FormatError) Is(target error) bool { return target == ErrFormat }

// tablePart is one partition of the restored header's table, in bytes.
type tablePart struct {
	Number int // GPT entry index + 1, or MBR slot 1-4: the N of partN.img
	Start  int64
	Size   int64
}

// table is the partition table of a disk's header.
type table struct {
	scheme     string // "gpt" or "mbr"
	sectorSize int64
	parts      []tablePart
	gpt        *gptTable // for the backup GPT
}

// MBR layout: four 16-byte entries at 446, signature 55 AA at 510.
const (
	mbrEntries   = 446
	mbrEntrySize = 16
	mbrSigOff    = 510
	mbrSector    = 512
)

// readTable reads the partition table at the start of the size-byte header
// r: a GPT with 512- or 4096-byte sectors, else an MBR with primary
// partitions only.
func readTable(r io.ReaderAt, size int64) (*table, error) {
	for _, ss := range []int64{512, 4096} {
		g, err := readGPT(r, size, ss)
		if errors.Is(err, errNoGPT) {
			continue
		}
		if err != nil {
			return nil, err
		}
		parts, err := g.partitions()
		if err != nil {
			return nil, &FormatError{Off: g.sectorSize, Msg: err.Error()}
		}
		return &table{scheme: "gpt", sectorSize: ss, parts: parts, gpt: g}, nil
	}
	return readMBR(r, size)
}

func readMBR(r io.ReaderAt, size int64) (*table, error) {
	if size < mbrSector {
		return nil, &FormatError{Off: 0, Msg: fmt.Sprintf("only %d bytes, no room for a partition table", size)}
	}
	sec := make([]byte, mbrSector)
	if _, err := r.ReadAt(sec, 0); err != nil {
		return nil, fmt.Errorf("reading sector 0 of header.img: %w", err)
	}
	if sec[mbrSigOff] != 0x55 || sec[mbrSigOff+1] != 0xAA {
		return nil, &FormatError{Off: mbrSigOff, Msg: "no GPT and no MBR signature (55 AA)"}
	}
	t := &table{scheme: "mbr", sectorSize: mbrSector}
	for i := range 4 {
		e := sec[mbrEntries+i*mbrEntrySize:]
		typ := e[4]
		start, count := binary.LittleEndian.Uint32(e[8:]), binary.LittleEndian.Uint32(e[12:])
		off := int64(mbrEntries + i*mbrEntrySize)
		switch {
		case typ == 0:
			continue
		case typ == 0xEE:
			return nil, &FormatError{Off: off, Msg: "a protective MBR (type 0xEE) but no valid GPT header at LBA 1 with 512- or 4096-byte sectors"}
		case typ == 0x05 || typ == 0x0F || typ == 0x85:
			return nil, &FormatError{Off: off, Msg: fmt.Sprintf("MBR partition %d is an extended partition (type 0x%02x). "+
				"The boot records (EBRs) that describe its logical partitions live inside it, not in header.img, "+
				"so prezero cannot put the disk back together from header.img and partN.img. "+
				"Restore a disk.img archive instead, or recreate the partitions and restore each partN.img "+
				"to its partition with --path partN.img", i+1, typ)}
		case count == 0:
			return nil, &FormatError{Off: off, Msg: fmt.Sprintf("MBR partition %d has type 0x%02x but no sectors", i+1, typ)}
		}
		t.parts = append(t.parts, tablePart{Number: i + 1, Start: int64(start) * mbrSector, Size: int64(count) * mbrSector})
	}
	if len(t.parts) == 0 {
		return nil, &FormatError{Off: mbrEntries, Msg: "the MBR has no partitions"}
	}
	return t, nil
}
