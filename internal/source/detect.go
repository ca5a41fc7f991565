package source

import (
	"fmt"
	"io"

	"github.com/prezero/prezero/extfsmap"
	"github.com/prezero/prezero/freemap"
	"github.com/prezero/prezero/ntfsmap"
	"github.com/prezero/prezero/swapmap"
)

// result is what any filesystem parser reports, in the form source needs.
type result struct {
	fs        string
	blockSize int
	free      *freemap.Map
	notes     []string
}

// filesystem is one parser prezero knows.
type filesystem struct {
	name  string
	probe func(r io.ReaderAt, size int64) bool
	read  func(r io.ReaderAt, size int64, opt Options) (*result, error)
}

// filesystems lists the parsers, tried in order. A probe only looks at
// magic numbers; read does the validation and may refuse.
var filesystems = []filesystem{
	{name: "ext", probe: extfsmap.Probe, read: readExt},
	{name: "ntfs", probe: ntfsmap.Probe, read: readNTFS},
	{name: "swap", probe: swapmap.Probe, read: readSwap},
	// Well-known volumes prezero cannot map: named, always passed through.
	{name: "crypto_LUKS", probe: probeLUKS, read: readLUKS},
	{name: "BitLocker", probe: probeBitLocker, read: refuse("BitLocker (encrypted)")},
	{name: "linux_raid_member", probe: probeMD, read: refuse("Linux software RAID member (md)")},
	{name: "btrfs", probe: probeBtrfs, read: refuse("btrfs (not supported yet)")},
	{name: "bcache", probe: probeBcache, read: refuse("bcache backing or cache device")},
}

func detect(r io.ReaderAt, size int64) *filesystem {
	for i := range filesystems {
		if filesystems[i].probe(r, size) {
			return &filesystems[i]
		}
	}
	return nil
}

func readExt(r io.ReaderAt, size int64, opt Options) (*result, error) {
	v, err := extfsmap.ReadWith(r, size, extfsmap.Options{CrossCheck: extfsmap.CrossCheck(opt.CrossCheck)})
	if err != nil {
		return nil, err
	}
	notes := v.Notes
	if v.Fallbacks > 0 {
		notes = append([]string{fmt.Sprintf("%d block groups kept whole (could not be verified)", v.Fallbacks)}, notes...)
	}
	return &result{fs: v.Kind, blockSize: v.ClusterSize, free: v.Free, notes: notes}, nil
}

func readNTFS(r io.ReaderAt, size int64, opt Options) (*result, error) {
	v, err := ntfsmap.Read(r, size, ntfsmap.Options{ForceDirty: opt.ForceDirty, NoCrossCheck: opt.CrossCheck == CrossCheckOff})
	if err != nil {
		return nil, err
	}
	return &result{fs: "ntfs", blockSize: v.ClusterSize, free: v.Free, notes: v.Warnings}, nil
}

// readSwap maps a swap area, and zeroes it only with Options.ZeroSwap.
func readSwap(r io.ReaderAt, size int64, opt Options) (*result, error) {
	a, err := swapmap.Read(r, size)
	if err != nil {
		return nil, err
	}
	res := &result{fs: a.FS, blockSize: a.BlockSize, free: a.Free, notes: a.Notes}
	if !opt.ZeroSwap {
		return res, freemap.Unsupported("swap: kept; --zero-swap would zero %s (opt-in: a VM snapshot that saved its RAM needs the swap to resume)",
			humanBytes(a.Free.FreeBytes()))
	}
	return res, nil
}

// humanBytes formats a byte count with binary units, as map does.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	div, exp := int64(unit), 0
	for v := n / unit; v >= unit; v /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f%ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
