// Package swapmap reads a Linux swap area's header page and reports the
// rest of the area as free: swap holds no data that outlives the running
// system, unless a memory state (a hibernation image, or a hypervisor's
// saved RAM) will be resumed from it.
//
// In the pipeline it is one row of the probe table, like extfsmap: Probe
// looks for the signature, Read returns a freemap.Map of the volume. The
// caller decides whether to use the map (prezero zeroes swap only when the
// user opts in).
//
// Rules: the first page (header, UUID, label, bad-page list) is never
// free; neither is anything past the area's last page. The signature is at
// page size minus 10 for the writer's page size (4, 8, 16 or 64 KiB). A
// hibernation image (S1SUSPEND, S2SUSPEND, ULSUSPEND, LINHIB0001,
// TuxOnIce) or the old SWAP-SPACE format is refused, as is any header
// field out of range. Imports only freemap and the standard library.
package swapmap

import (
	"encoding/binary"
	"io"

	"github.com/prezero/prezero/freemap"
)

// PageSizes are the page sizes whose signature position is checked, in
// order (util-linux checks the same ones).
var PageSizes = []int{4096, 8192, 16384, 65536}

const (
	magicV1 = "SWAPSPACE2"
	magicV0 = "SWAP-SPACE"
	// tuxOnIce is TuxOnIce's hibernation header magic, at byte 0.
	tuxOnIce = "\xed\xc3\x02\xe9\x98\x56\xe5\x0c"
)

// hibernation are the signatures a hibernation image writes where
// SWAPSPACE2 was (kernel swsusp, uswsusp, and others libblkid knows).
var hibernation = []string{"S1SUSPEND", "S2SUSPEND", "ULSUSPEND", "LINHIB0001"}

// Area is a mapped swap area.
type Area struct {
	FS       string // "swap"
	PageSize int    // the page size of the system that wrote the header
	Version  uint32
	LastPage uint32 // the last usable page
	BadPages uint32 // entries in the bad-page list
	UUID     [16]byte
	Label    string
	// BlockSize is the allocation unit reported to callers: the page.
	BlockSize int
	Free      *freemap.Map // everything after the header page, up to the last page
	Notes     []string
}

// signature returns the page size and the 10 bytes at its signature
// position for the first page size whose bytes there name a swap or
// hibernation signature, or 0.
func signature(r io.ReaderAt, size int64) (int, string) {
	var b [10]byte
	if size >= 8 {
		var t [8]byte
		if n, _ := r.ReadAt(t[:], 0); n == 8 && string(t[:]) == tuxOnIce {
			return PageSizes[0], tuxOnIce
		}
	}
	for _, ps := range PageSizes {
		if int64(ps) > size {
			break
		}
		if n, _ := r.ReadAt(b[:], int64(ps-10)); n != 10 {
			continue
		}
		s := string(b[:])
		if s == magicV1 || s == magicV0 {
			return ps, s
		}
		for _, h := range hibernation {
			if s[:len(h)] == h {
				return ps, h
			}
		}
	}
	return 0, ""
}

// Probe reports whether r starts with a swap header or a hibernation
// image in place of one.
func Probe(r io.ReaderAt, size int64) bool {
	ps, _ := signature(r, size)
	return ps > 0
}

// Read reads the header page and returns the area with everything after
// it, up to the last page, free. A hibernation image is refused with
// freemap.ErrUnsafe, the old v0 format with ErrUnsupported.
func Read(r io.ReaderAt, size int64) (*Area, error) {
	ps, sig := signature(r, size)
	switch {
	case ps == 0:
		return nil, freemap.Formatf(4086, "swap: no SWAPSPACE2 signature at page size minus 10 for pages of 4, 8, 16 or 64 KiB")
	case sig == magicV0:
		return nil, freemap.Unsupported("swap: old-style (v0) SWAP-SPACE area")
	case sig == tuxOnIce:
		return nil, freemap.Unsafe("swap: holds a TuxOnIce hibernation image: the suspended system resumes from it")
	case sig != magicV1:
		return nil, freemap.Unsafe("swap: holds a hibernation image (%s): the suspended system resumes from it", sig)
	}
	var h [1024 + 16 + 16 + 16 + 16]byte // bootbits, version .. volume name
	if _, err := r.ReadAt(h[:], 0); err != nil {
		return nil, freemap.Formatf(0, "swap: reading the header: %v", err)
	}
	// The header is in the writer's byte order: version 1 tells which.
	var bo binary.ByteOrder = binary.LittleEndian
	if v := bo.Uint32(h[1024:]); v != 1 {
		if binary.BigEndian.Uint32(h[1024:]) != 1 {
			return nil, freemap.Unsupported("swap: header version %d (only 1 is known)", v)
		}
		bo = binary.BigEndian
	}
	a := &Area{FS: "swap", PageSize: ps, BlockSize: ps, Version: 1}
	a.LastPage = bo.Uint32(h[1028:])
	a.BadPages = bo.Uint32(h[1032:])
	copy(a.UUID[:], h[1036:1052])
	label := h[1052:1068]
	for i, c := range label {
		if c == 0 {
			label = label[:i]
			break
		}
	}
	a.Label = string(label)
	// The bad-page list (u32 entries from byte 1024+512... up to the
	// page's end, minus the signature) must fit in the header page.
	if maxBad := uint32((ps - 1536 - 10) / 4); a.BadPages > maxBad {
		return nil, freemap.Formatf(1032, "swap: %d bad pages listed, the header page holds at most %d", a.BadPages, maxBad)
	}
	if a.LastPage == 0 {
		return nil, freemap.Formatf(1028, "swap: last page is 0")
	}
	end := (int64(a.LastPage) + 1) * int64(ps)
	if end > size {
		a.Notes = append(a.Notes, "swap area is larger than its volume: zeroed only up to the volume's end")
		end = size
	}
	b := freemap.NewBuilder(size)
	b.Add(int64(ps), end-int64(ps))
	a.Free = b.Map()
	return a, nil
}
