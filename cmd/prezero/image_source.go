package main

import (
	"github.com/spf13/pflag"

	"github.com/prezero/prezero/internal/inuse"
	"github.com/prezero/prezero/internal/source"
)

// nbdTimeout is --nbd-timeout.
var nbdTimeout = source.DefaultNBDTimeout

// addShareFlag adds --force-share, for VM images read through qemu-nbd,
// and --nbd-timeout.
func addShareFlag(f *pflag.FlagSet, forceShare *bool) {
	f.BoolVar(forceShare, "force-share", false, "with --force: read a VM image (qcow2, ...) that another process, such as a running VM, has open for writing (unsafe: the copy may be inconsistent)")
	f.DurationVar(&nbdTimeout, "nbd-timeout", source.DefaultNBDTimeout, "give up on an NBD server (qemu-nbd serving a VM image, or an NBD URI's) that sends nothing for this long while prezero waits for it")
}

// checkShare refuses --force-share without --force, and a --nbd-timeout
// that is not positive.
func checkShare(forceShare, force bool) error {
	if forceShare && !force {
		return usagef("--force-share is unsafe and works only together with --force")
	}
	if nbdTimeout <= 0 {
		return usagef("--nbd-timeout must be positive, such as 60s or 5m (got %v)", nbdTimeout)
	}
	return nil
}

// checkInUse refuses a source the system may be writing (inuse.Check),
// for files and block devices; an NBD URI names no local file.
func checkInUse(path string) error {
	if source.IsURI(path) {
		return nil
	}
	return inuse.Check(path, inuse.Writable)
}

// qemuSays returns what the qemu-nbd serving src wrote to stderr, or "".
func qemuSays(src *source.Source) string { return source.QemuSays(src.Server()) }
