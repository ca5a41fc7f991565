package main

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"

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
	return unmountDir(dir, opts.lazy)
}

// runFusermount runs fusermount3 (or fusermount, from FUSE 2) with args.
func runFusermount(args []string) error {
	var errs []error
	for _, name := range []string{"fusermount3", "fusermount"} {
		path, err := exec.LookPath(name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out, err := exec.Command(path, args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%s %v: %w: %s", name, args, err, out)
		}
		return nil
	}
	return fmt.Errorf("cannot unmount without root: %w (install fuse3)", errors.Join(errs...))
}
