package layout

import (
	"encoding/binary"
	"fmt"
	"io"
	"io/fs"
	"strings"
	"time"

	"github.com/diskfs/go-diskfs/partition/gpt"
)

// GPT header fields (UEFI spec 5.3.2), relative to the header's LBA.
const (
	gptSignature   = "EFI PART"
	gptFirstUsable = 40 // FirstUsableLBA
	gptLastUsable  = 48 // LastUsableLBA
	gptEntryLBAOff = 72 // PartitionEntryLBA
	gptEntryNumOff = 80 // NumberOfPartitionEntries
	gptEntrySzOff  = 84 // SizeOfPartitionEntry

	maxGPTEntries   = 16384 // far above the usual 128; caps the array allocation
	maxGPTEntrySize = 4096
)

// readGPT reads a GPT at 512-byte sectors, then, if that fails (a 4Kn disk
// whose protective MBR was seen at 512), at 4096-byte sectors.
func readGPT(r io.ReaderAt, size int64) (*Layout, error) {
	var errs []string
	for _, ss := range []int{512, 4096} {
		l, err := readGPTSectors(r, size, ss)
		if err == nil {
			return l, nil
		}
		errs = append(errs, fmt.Sprintf("%d-byte sectors: %v", ss, err))
	}
	return nil, &FormatError{Off: 512, Msg: "protective MBR found but no readable GPT (" + strings.Join(errs, "; ") + ")"}
}

func readGPTSectors(r io.ReaderAt, size int64, ss int) (l *Layout, err error) {
	// Check the array bounds go-diskfs will allocate from, in both headers,
	// before handing it the source.
	if err := checkGPTHeader(r, size, 1, ss); err != nil {
		return nil, err
	}
	var hdr [56]byte
	if _, err := r.ReadAt(hdr[:], int64(ss)); err != nil {
		return nil, fmt.Errorf("reading GPT header: %w", err)
	}
	if err := checkGPTHeader(r, size, size/int64(ss)-1, ss); err != nil {
		return nil, err
	}
	defer func() {
		if p := recover(); p != nil {
			l, err = nil, fmt.Errorf("GPT parser failed: %v", p)
		}
	}()
	t, err := gpt.Read(&readOnlyFile{io.NewSectionReader(r, 0, size), size}, ss, ss)
	if err != nil {
		return nil, err
	}
	l = &Layout{Scheme: GPT, SectorSize: ss}
	for _, gp := range t.Partitions {
		if gp == nil {
			continue
		}
		p := Partition{
			Number:   gp.Index,
			Type:     string(gp.Type),
			TypeName: gptTypeName(string(gp.Type)),
			Name:     gp.Name,
		}
		if gp.End < gp.Start || gp.End >= uint64(1)<<62/uint64(ss) {
			p.Problem = fmt.Sprintf("invalid sector range %d-%d", gp.Start, gp.End)
		} else {
			p.Start = int64(gp.Start) * int64(ss)
			p.Size = int64(gp.End-gp.Start+1) * int64(ss)
			check(&p, size)
			if p.Problem == "" && string(hdr[:8]) == gptSignature && !usable(hdr[:], gp.Start, gp.End) {
				p.Problem = fmt.Sprintf("sectors %d-%d lie outside the GPT's usable area (over the partition table itself)", gp.Start, gp.End)
			}
		}
		l.Partitions = append(l.Partitions, p)
	}
	if t.RecoveredFromBackup {
		l.Notes = append(l.Notes, "primary GPT is damaged; partitions read from the backup GPT")
	}
	return l, nil
}

// usable reports whether sectors first..last lie inside the usable LBA range
// the primary GPT header hdr states.
func usable(hdr []byte, first, last uint64) bool {
	lo := binary.LittleEndian.Uint64(hdr[gptFirstUsable:])
	hi := binary.LittleEndian.Uint64(hdr[gptLastUsable:])
	return first >= lo && last <= hi
}

// checkGPTHeader validates the partition-array fields of the GPT header at
// lba, if one is there. Absent headers are left to go-diskfs to report.
func checkGPTHeader(r io.ReaderAt, size, lba int64, ss int) error {
	off := lba * int64(ss)
	if lba <= 0 || off+92 > size {
		return nil
	}
	var h [92]byte
	if _, err := r.ReadAt(h[:], off); err != nil {
		return fmt.Errorf("reading GPT header at byte %d: %w", off, err)
	}
	if string(h[:8]) != gptSignature {
		return nil
	}
	n := binary.LittleEndian.Uint32(h[gptEntryNumOff:])
	esz := binary.LittleEndian.Uint32(h[gptEntrySzOff:])
	first := binary.LittleEndian.Uint64(h[gptEntryLBAOff:])
	if n > maxGPTEntries || esz < 128 || esz > maxGPTEntrySize || esz%8 != 0 {
		return &FormatError{Off: off, Msg: fmt.Sprintf("GPT header claims %d entries of %d bytes", n, esz)}
	}
	if first >= uint64(size)/uint64(ss) || int64(first)*int64(ss)+int64(n)*int64(esz) > size {
		return &FormatError{Off: off, Msg: fmt.Sprintf("GPT partition array at LBA %d lies outside the source", first)}
	}
	return nil
}

// readOnlyFile adapts a section of the source to go-diskfs's backend.File.
// It has no write methods, so go-diskfs cannot write through it.
type readOnlyFile struct {
	*io.SectionReader
	size int64
}

func (f *readOnlyFile) Stat() (fs.FileInfo, error) { return fileInfo{f.size}, nil }
func (f *readOnlyFile) Close() error               { return nil }

type fileInfo struct{ size int64 }

func (fi fileInfo) Name() string       { return "source" }
func (fi fileInfo) Size() int64        { return fi.size }
func (fi fileInfo) Mode() fs.FileMode  { return 0o400 }
func (fi fileInfo) ModTime() time.Time { return time.Time{} }
func (fi fileInfo) IsDir() bool        { return false }
func (fi fileInfo) Sys() any           { return nil }

// gptTypeName names common GPT partition type GUIDs.
func gptTypeName(guid string) string {
	switch strings.ToUpper(guid) {
	case string(gpt.LinuxFilesystem):
		return "Linux filesystem"
	case string(gpt.EFISystemPartition):
		return "EFI System"
	case string(gpt.MicrosoftBasicData):
		return "Microsoft basic data"
	case string(gpt.MicrosoftReserved):
		return "Microsoft reserved"
	case string(gpt.MicrosoftWindowsRecovery):
		return "Windows recovery"
	case string(gpt.LinuxSwap):
		return "Linux swap"
	case string(gpt.LinuxLVM):
		return "Linux LVM"
	case string(gpt.LinuxRAID):
		return "Linux RAID"
	case string(gpt.LinuxRootX86_64):
		return "Linux root (x86-64)"
	case string(gpt.LinuxHome):
		return "Linux home"
	case "21686148-6449-6E6F-744E-656564454649":
		return "BIOS boot"
	}
	return ""
}
