package source

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"

	"github.com/prezero/prezero/freemap"
	"github.com/prezero/prezero/internal/nbd"
)

// imageMagic recognises the VM image formats qemu probes by their first
// bytes (qemu's block/*.c probe functions); anything else is raw. A raw
// disk begins with boot code or a filesystem, never with these.
func imageMagic(b []byte) bool {
	has := func(off int, s string) bool { return len(b) >= off+len(s) && string(b[off:off+len(s)]) == s }
	switch {
	case has(0, "QFI\xfb"), // qcow, qcow2
		has(0, "QED\x00"),              // qed
		has(0, "KDMV"), has(0, "COWD"), // vmdk sparse extents
		has(0, "# Disk DescriptorFile"),   // vmdk descriptor
		has(0, "vhdxfile"),                // vhdx
		has(0, "conectix"),                // vpc (dynamic VHD)
		has(0, "WithoutFreeSpace"),        // parallels
		has(0, "WithouFreSpacExt"),        // parallels
		has(0, "Bochs Virtual HD Image"),  // bochs
		has(0, "#!/bin/sh\n#V2.0 Format"): // cloop
		return true
	}
	return len(b) >= 0x44 && binary.LittleEndian.Uint32(b[0x40:]) == 0xbeda107f // vdi
}

// imageInfo is what prezero uses of `qemu-img info --output=json`.
type imageInfo struct {
	Format      string `json:"format"`
	VirtualSize int64  `json:"virtual-size"`
	Encrypted   bool   `json:"encrypted"`
	Backing     string `json:"full-backing-filename"`
	Specific    struct {
		Data struct {
			DataFile string `json:"data-file"`
		} `json:"data"`
	} `json:"format-specific"`

	device bool // the image is on a block device
}

// probeImage returns what qemu says of the regular file or block device f
// if it holds a VM image rather than a raw disk, or nil. A block device
// can hold one: an LV of a block storage domain (oVirt) holds a qcow2;
// qemu reads its format as from a file, and so does prezero.
func probeImage(f *os.File, path string) (*imageInfo, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	device := fi.Mode()&os.ModeDevice != 0 && fi.Mode()&os.ModeCharDevice == 0
	if !fi.Mode().IsRegular() && !device {
		return nil, nil
	}
	b := make([]byte, 512)
	n, err := f.ReadAt(b, 0)
	if err != nil && err != io.EOF {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if !imageMagic(b[:n]) {
		return nil, nil
	}
	if _, err := exec.LookPath("qemu-img"); err != nil {
		return nil, fmt.Errorf("%s looks like a VM image (qcow2, vmdk, vhdx, ...), which prezero reads through qemu-nbd: install qemu-utils", path)
	}
	// -U: reading the header is harmless even while a VM runs; qemu-nbd
	// takes the lock that matters.
	cmd := exec.Command("qemu-img", "info", "--output=json", "-U", "--", nbd.QemuFilename(path))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s: qemu-img info: %s", path, strings.TrimSpace(stderr.String()))
	}
	var info imageInfo
	if err := json.Unmarshal(stdout.Bytes(), &info); err != nil {
		return nil, fmt.Errorf("%s: qemu-img info: %w", path, err)
	}
	switch info.Format {
	case "raw", "luks", "":
		return nil, nil // a raw disk (a bare LUKS container is served as it is)
	}
	if info.Encrypted {
		return nil, fmt.Errorf("%s: an encrypted %s image is not supported", path, info.Format)
	}
	info.device = device
	return &info, nil
}

// openNBD maps the export c serves, read through r (c itself, or a
// directReader over it).
func openNBD(c *nbd.Client, r io.ReaderAt, path string, opt Options) (*Source, error) {
	if c.Size() == 0 {
		return nil, fmt.Errorf("%s is empty", path)
	}
	var kz *freemap.Map
	if c.HasZeroInfo() {
		var err error
		if kz, err = zeroMap(c); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	}
	s, err := build(r, path, c.Size(), 0, kz, opt)
	if err != nil {
		return nil, err
	}
	s.nbd = c
	return s, nil
}

// zeroMap asks the server which ranges read as zeros. The Builder keeps
// memory bounded: past freemap's limit it drops the smallest extents,
// which is safe (a dropped range is read, and reads as zeros).
func zeroMap(c *nbd.Client) (*freemap.Map, error) {
	b := freemap.NewBuilder(c.Size())
	if err := c.ZeroExtents(context.Background(), b.Add); err != nil {
		return nil, err
	}
	return b.Map(), nil
}

// withKnownZero returns the union of free (a map of the n bytes at start)
// and the known-zero extents of kz inside them.
func withKnownZero(free *freemap.Map, kz *freemap.Map, start, n int64) *freemap.Map {
	if kz.FreeBytes() == 0 {
		return free
	}
	b := freemap.NewBuilder(n)
	b.AddMap(free, 0)
	for e, ok := kz.Next(start); ok && e.Off < start+n; e, ok = kz.Next(e.End()) {
		b.Add(e.Off-start, e.Len)
	}
	return b.Map()
}
