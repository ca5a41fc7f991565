package main

import (
	"github.com/spf13/pflag"

	"github.com/prezero/prezero/internal/inuse"
	"github.com/prezero/prezero/internal/source"
)

// addShareFlag adds --force-share, for VM images read through qemu-nbd.
func addShareFlag(f *pflag.FlagSet, forceShare *bool) {
	f.BoolVar(forceShare, "force-share", false, "with --force: read a VM image (qcow2, ...) that another process, such as a running VM, has open for writing (unsafe: the copy may be inconsistent)")
}

// checkShare refuses --force-share without --force.
func checkShare(forceShare, force bool) error {
	if forceShare && !force {
		return usagef("--force-share is unsafe and works only together with --force")
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
