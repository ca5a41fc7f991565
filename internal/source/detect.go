package source

import (
	"fmt"
	"io"

	"github.com/prezero/prezero/exfatmap"
	"github.com/prezero/prezero/extfsmap"
	"github.com/prezero/prezero/fatmap"
	"github.com/prezero/prezero/freemap"
	"github.com/prezero/prezero/internal/bytesize"
	"github.com/prezero/prezero/lvm"
	"github.com/prezero/prezero/ntfsmap"
	"github.com/prezero/prezero/swapmap"
	"github.com/prezero/prezero/xfsmap"
)

// Adding a filesystem = one <fs>map package + one row in probes.
//
// A row names the filesystem family, gives its package's Probe (magic
// numbers only, cheap), and a read that calls its package's Read and
// returns the fields every <fs>map Volume has: FS, BlockSize, Free, Notes.
// An error from read (freemap.ErrFormat, ErrUnsupported, ErrUnsafe) makes
// the partition pass through whole, with the error as its reason. Rows are
// tried in order; the first probe that says yes owns the partition.
var probes = []probe{
	{"ext", extfsmap.Probe, func(r io.ReaderAt, size int64, opt Options) (*volume, error) {
		v, err := extfsmap.ReadWith(r, size, extfsmap.Options{CrossCheck: extfsmap.CrossCheck(opt.CrossCheck)})
		if err != nil {
			return nil, err
		}
		notes := v.Notes
		if v.Fallbacks > 0 {
			notes = append([]string{fmt.Sprintf("%d block groups kept whole (could not be verified)", v.Fallbacks)}, notes...)
		}
		vol := &volume{FS: v.FS, BlockSize: v.ClusterSize, Free: v.Free, Notes: notes} // the cluster is ext's allocation unit
		if v.Journal != nil {                                                          // needs_recovery: replayed in memory
			vol.Detail, vol.Journal = v.Journal.String(), v.Journal
		}
		return vol, nil
	}},
	{"ntfs", ntfsmap.Probe, func(r io.ReaderAt, size int64, opt Options) (*volume, error) {
		v, err := ntfsmap.Read(r, size, ntfsmap.Options{ForceDirty: opt.ForceDirty, NoCrossCheck: opt.CrossCheck == CrossCheckOff})
		if err != nil {
			return nil, err
		}
		return &volume{FS: v.FS, BlockSize: v.BlockSize, Free: v.Free, Notes: v.Notes}, nil
	}},
	{"xfs", xfsmap.Probe, func(r io.ReaderAt, size int64, _ Options) (*volume, error) {
		v, err := xfsmap.Read(r, size)
		if err != nil {
			return nil, err
		}
		notes := v.Notes
		if v.Fallbacks > 0 {
			notes = append([]string{fmt.Sprintf("%d allocation groups kept whole (could not be verified)", v.Fallbacks)}, notes...)
		}
		if v.Log == "covered" {
			notes = append(notes, "log covered (a frozen or snapshot copy): only superblock updates to replay")
		}
		return &volume{FS: v.FS, BlockSize: v.BlockSize, Free: v.Free, Notes: notes}, nil
	}},
	{"exfat", exfatmap.Probe, func(r io.ReaderAt, size int64, _ Options) (*volume, error) {
		v, err := exfatmap.Read(r, size)
		if err != nil {
			return nil, err
		}
		return &volume{FS: v.FS, BlockSize: v.BlockSize, Free: v.Free, Notes: v.Notes}, nil
	}},
	// After ntfs and exfat, whose boot sectors also have a jump and 0x55AA.
	{"vfat", fatmap.Probe, func(r io.ReaderAt, size int64, _ Options) (*volume, error) {
		v, err := fatmap.Read(r, size)
		if err != nil {
			return nil, err
		}
		return &volume{FS: v.FS, BlockSize: v.BlockSize, Free: v.Free, Notes: v.Notes}, nil
	}},
	// Swap is zeroed only with Options.ZeroSwap; map says what it would save.
	{"swap", swapmap.Probe, func(r io.ReaderAt, size int64, opt Options) (*volume, error) {
		a, err := swapmap.Read(r, size)
		if err != nil {
			return nil, err
		}
		v := &volume{FS: a.FS, BlockSize: a.BlockSize, Free: a.Free, Notes: a.Notes}
		if !opt.ZeroSwap {
			return v, freemap.Unsupported("swap: kept; --zero-swap would zero %s (opt-in: a VM snapshot that saved its RAM needs the swap to resume)",
				bytesize.Human(a.Free.FreeBytes()))
		}
		return v, nil
	}},
	// Well-known volumes prezero cannot map (signatures.go): named, and
	// always passed through.
	{"crypto_LUKS", probeLUKS, readLUKS},
	{"BitLocker", probeBitLocker, refuse("BitLocker (encrypted)")},
	{"linux_raid_member", probeMD, refuse("Linux software RAID member (md)")},
	{"btrfs", probeBtrfs, refuse("btrfs (not supported yet)")},
	{"bcache", probeBcache, refuse("bcache backing or cache device")},
}

// probe is one row of the table.
type probe struct {
	name  string                                                        // filesystem family, for messages
	probe func(r io.ReaderAt, size int64) bool                          // the package's Probe
	read  func(r io.ReaderAt, size int64, opt Options) (*volume, error) // the package's Read, adapted
}

// volume is what every <fs>map reports, in the form source needs.
type volume struct {
	FS        string       // as blkid names it: "ext4", "ntfs", ...
	BlockSize int          // allocation unit, bytes
	Free      *freemap.Map // proven-free ranges; Free.Size() == the partition's size
	Notes     []string     // fallbacks and warnings
	Detail    string       // how it was mapped, shown after "zeroed" (a journal replay)
	Journal   *extfsmap.Replay
}

// detect returns the row whose probe recognises r, or nil.
func detect(r io.ReaderAt, size int64) *probe {
	for i := range probes {
		if probes[i].probe(r, size) {
			return &probes[i]
		}
	}
	return nil
}

// recognise reports whether any row (or an LVM PV label) recognises r:
// layout uses it to guess an image's MBR sector size.
func recognise(r io.ReaderAt, size int64) bool { return detect(r, size) != nil || lvm.Probe(r, size) }
