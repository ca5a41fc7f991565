package borg

import (
	"context"
	"io"
)

// Archive reads the items of one archive with "borg extract --stdout" and
// remembers borg's warnings. Its Open method is what prezero's restore
// needs to put a --partitions archive back together.
type Archive struct {
	Borg    *Borg
	Ref     Ref
	streams []*Stream
}

// Open starts borg extract --stdout for the item at path. Reads end with
// borg's failure instead of io.EOF; see Stream.
func (a *Archive) Open(ctx context.Context, path string) (io.ReadCloser, error) {
	s, err := a.Borg.Extract(ctx, a.Ref, path)
	if err != nil {
		return nil, err
	}
	a.streams = append(a.streams, s)
	return s, nil
}

// Warning returns the first exit-code-1 warning of the items read so far.
func (a *Archive) Warning() *ExitError {
	for _, s := range a.streams {
		if w := s.Warning(); w != nil {
			return w
		}
	}
	return nil
}
