package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/prezero/prezero/borg"
)

// checkBorgRepo refuses a local repository the chosen borg cannot read,
// with the --borg option that can.
func checkBorgRepo(b *borg.Borg, ref borg.Ref) error {
	if err := b.CheckRepo(ref); err != nil {
		return withBorgAdvice(err, b)
	}
	return nil
}

// withBorgAdvice adds the --borg option to use when err says that the
// repository belongs to the other borg version.
func withBorgAdvice(err error, b *borg.Borg) error {
	var be *borg.ExitError
	v2 := errors.Is(err, borg.ErrRepoVersion) && b.Major == 1 ||
		errors.As(err, &be) && strings.Contains(be.Stderr, "repository version 2 is not supported")
	v1 := errors.Is(err, borg.ErrRepoVersion) && b.Major == 2 ||
		errors.As(err, &be) && strings.Contains(be.Stderr, "only accepts version 2 repos")
	switch {
	case errors.Is(err, borg.ErrRepoVersion) && b.Major == 1:
		return fmt.Errorf("%w; pass --borg borg2", err)
	case errors.Is(err, borg.ErrRepoVersion):
		return fmt.Errorf("%w; pass --borg borg", err)
	case v2:
		return fmt.Errorf("%w; it is a borg 2 repository: pass --borg borg2", err)
	case v1:
		return fmt.Errorf("%w; it is a borg 1.x repository: pass --borg borg", err)
	}
	return err
}
