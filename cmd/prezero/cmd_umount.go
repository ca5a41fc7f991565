package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"syscall"

	"github.com/spf13/pflag"

	"github.com/prezero/prezero/fusefs"
	"github.com/prezero/prezero/internal/inuse"
)

type umountOptions struct {
	lazy bool
}

func (o *umountOptions) AddFlags(f *pflag.FlagSet) {
	f.BoolVarP(&o.lazy, "lazy", "z", false, "detach now even if files are open; the server exits when they are closed")
}

func init() {
	var opts umountOptions
	register(&command{
		name:  "umount",
		usage: "MOUNTPOINT",
		short: "unmount a 'prezero mount'; its background server exits",
		long: `Unmount a prezero FUSE mount. As root this is umount2(2); otherwise it runs
fusermount3 -u. The background server exits once the mount is gone.
Only prezero mounts are unmounted: anything else is refused.`,
		flags: opts.AddFlags,
		run:   func(ctx context.Context, args []string) error { return runUmount(ctx, opts, args) },
	})
}

func runUmount(ctx context.Context, opts umountOptions, args []string) error {
	if len(args) != 1 {
		return usagef("expected one MOUNTPOINT, got %d arguments", len(args))
	}
	dir, err := filepath.Abs(args[0])
	if err != nil {
		return err
	}
	// Resolve symlinks in the parent only: the mount itself may be dead.
	if parent, err := filepath.EvalSymlinks(filepath.Dir(dir)); err == nil {
		dir = filepath.Join(parent, filepath.Base(dir))
	}
	fstype, err := inuse.Mounted(dir)
	switch {
	case err != nil:
		return err
	case fstype == "":
		return fmt.Errorf("%s is not mounted", dir)
	case fstype != fusefs.FSType:
		return fmt.Errorf("%s is a %s mount, not prezero's; use umount", dir, fstype)
	}
	err = fusefs.Unmount(dir, opts.lazy)
	if errors.Is(err, syscall.EBUSY) && !opts.lazy {
		return fmt.Errorf("%w; or detach it now with --lazy", err)
	}
	return err
}
