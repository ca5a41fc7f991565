package source

import (
	"fmt"
	"io"

	"github.com/prezero/prezero/extfsmap"
	"github.com/prezero/prezero/freemap"
	"github.com/prezero/prezero/ntfsmap"
	"github.com/prezero/prezero/xfsmap"
)

// result is what any filesystem parser reports, in the form source needs.
type result struct {
	fs        string
	blockSize int
	free      *freemap.Map
	notes     []string
	detail    string           // shown after "zeroed", e.g. the journal replay
	journal   *extfsmap.Replay // ext only: the in-memory journal replay
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
	{name: "xfs", probe: xfsmap.Probe, read: readXFS},
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
	res := &result{fs: v.Kind, blockSize: v.ClusterSize, free: v.Free, notes: notes, journal: v.Journal}
	if v.Journal != nil {
		res.detail = v.Journal.String()
	}
	return res, nil
}

func readNTFS(r io.ReaderAt, size int64, opt Options) (*result, error) {
	v, err := ntfsmap.Read(r, size, ntfsmap.Options{ForceDirty: opt.ForceDirty, NoCrossCheck: opt.CrossCheck == CrossCheckOff})
	if err != nil {
		return nil, err
	}
	return &result{fs: "ntfs", blockSize: v.ClusterSize, free: v.Free, notes: v.Warnings}, nil
}

func readXFS(r io.ReaderAt, size int64, _ Options) (*result, error) {
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
	return &result{fs: v.FS, blockSize: v.BlockSize, free: v.Free, notes: notes}, nil
}
