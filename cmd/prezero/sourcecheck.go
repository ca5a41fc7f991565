package main

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/prezero/prezero/internal/source"
)

// checkSource says in one line why SOURCE cannot be read, before any other
// check (mounted read-write, in use) can confuse the matter: it is missing,
// it is a character device, or this user may not read it.
func checkSource(path string) error {
	if source.IsURI(path) {
		return nil // an NBD export: its client says what is wrong
	}
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("%s does not exist; give an image file or a block device", path)
	case err != nil:
		return err
	case fi.Mode()&os.ModeCharDevice != 0:
		return fmt.Errorf("%s is a character device, not a disk or image", path)
	}
	if err := unix.Access(path, unix.R_OK); errors.Is(err, unix.EACCES) {
		if fi.Mode()&os.ModeDevice == 0 {
			return fmt.Errorf("%s: permission denied; you cannot read it", path)
		}
		group := "disk"
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			if g, err := user.LookupGroupId(strconv.Itoa(int(st.Gid))); err == nil {
				group = g.Name
			}
		}
		advice := fmt.Sprintf("run prezero as root, or join the %q group that owns it (usermod -aG %s USER, then log in again)", group, group)
		if group == "root" || fi.Mode().Perm()&0o040 == 0 {
			advice = "run prezero as root (only root may read it), or let the \"disk\" group read it (chgrp disk, chmod g+r) as udev does and join that group"
		}
		return fmt.Errorf("%s: permission denied: reading a block device needs root or its group; %s", path, advice)
	}
	return nil
}
