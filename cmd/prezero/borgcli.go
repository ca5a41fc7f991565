package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/term"

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

// listAskingOnce lists the archive. restore --from runs borg several times
// (list, then extract for each item), and borg would ask an encrypted
// repository's passphrase each time, under the progress line. So when the
// user has not given one (BORG_PASSPHRASE, BORG_PASSCOMMAND,
// BORG_PASSPHRASE_FD) and a terminal can ask, the first borg runs with an
// empty BORG_PASSPHRASE: an encrypted repository refuses it at once, and
// prezero asks once on the terminal and gives the answer to every later
// borg through BORG_PASSPHRASE in that borg's environment only.
func listAskingOnce(ctx context.Context, b *borg.Borg, ref borg.Ref) ([]borg.Item, error) {
	if borg.PassphraseSet() {
		return b.List(ctx, ref)
	}
	tty, err := os.OpenFile("/dev/tty", os.O_RDWR, 0)
	if err != nil {
		return b.List(ctx, ref) // borg cannot ask either
	}
	defer tty.Close()
	env := b.Env
	b.Env = append(env, "BORG_PASSPHRASE=")
	items, err := b.List(ctx, ref)
	for tries := 0; borg.WrongPassphrase(err) && tries < 3; tries++ {
		if tries > 0 {
			fmt.Fprintln(tty, "The passphrase is incorrect.")
		}
		fmt.Fprintf(tty, "Enter passphrase for %s: ", ref.Absolute().Repo)
		pass, rerr := term.ReadPassword(int(tty.Fd()))
		fmt.Fprintln(tty)
		if rerr != nil {
			return nil, fmt.Errorf("reading the passphrase: %w", rerr)
		}
		b.Env = append(env, "BORG_PASSPHRASE="+string(pass))
		items, err = b.List(ctx, ref)
	}
	return items, err
}
