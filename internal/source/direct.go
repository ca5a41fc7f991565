package source

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync/atomic"

	"github.com/prezero/prezero/internal/nbd"
)

// Reading a qcow2's data in place. Every byte through qemu-nbd crosses a
// socket: qemu copies it from the page cache into its buffer, into the
// socket, and prezero copies it out, which costs about three times what
// qemu-img convert spends reading the same image. But qemu itself says
// where each guest range of a qcow2 lies in the image file (qemu-img map:
// "offset" of an extent whose data is in the top image): those ranges are
// read straight from the image file prezero already holds open, as qemu
// would read them; the rest (compressed clusters, backing files, anything
// qemu gives no offset for) still comes through NBD. prezero does not
// parse qcow2: the mapping is qemu's, taken while prezero's qemu-nbd holds
// the image's lock, so no qemu writer can move a cluster meanwhile.

// maxDirectExtents caps the mapping kept in memory (24 bytes each); past
// it, the remaining ranges are read through NBD.
const maxDirectExtents = 1 << 20

// hostExtent is a guest range [guest, guest+n) stored at host in the
// image file.
type hostExtent struct{ guest, host, n int64 }

// directReader reads the guest ranges of ext from file and the rest from
// nbd. ext is sorted and non-overlapping.
type directReader struct {
	nbd    io.ReaderAt
	file   io.ReaderAt
	size   int64
	ext    []hostExtent
	direct atomic.Int64 // bytes read from file
}

// ReadAt implements io.ReaderAt over the guest disk.
func (d *directReader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("negative offset")
	}
	if off >= d.size {
		return 0, io.EOF
	}
	want := len(p)
	if rem := d.size - off; int64(want) > rem {
		p = p[:rem]
	}
	// The first extent ending after off.
	i := sort.Search(len(d.ext), func(i int) bool { return d.ext[i].guest+d.ext[i].n > off })
	n := 0
	for n < len(p) {
		pos := off + int64(n)
		chunk := p[n:]
		for i < len(d.ext) && d.ext[i].guest+d.ext[i].n <= pos {
			i++
		}
		if i < len(d.ext) && d.ext[i].guest <= pos {
			e := d.ext[i]
			chunk = chunk[:min(int64(len(chunk)), e.guest+e.n-pos)]
			k, err := d.file.ReadAt(chunk, e.host+pos-e.guest)
			d.direct.Add(int64(k))
			n += k
			if k < len(chunk) {
				if err == nil || err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				return n, fmt.Errorf("reading the image file at %d (guest byte %d): %w", e.host+pos-e.guest, pos, err)
			}
			continue
		}
		if i < len(d.ext) {
			chunk = chunk[:min(int64(len(chunk)), d.ext[i].guest-pos)]
		}
		k, err := d.nbd.ReadAt(chunk, pos)
		n += k
		if k < len(chunk) {
			if err == nil || err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return n, err
		}
	}
	if n < want {
		return n, io.EOF
	}
	return n, nil
}

// directReaderFor returns a directReader for the qcow2 image f (at path)
// served by c, or nil where the data cannot be read in place: another
// format, an external data file, --force-share (a running VM may move
// clusters), or qemu-img map failing (then everything comes through NBD).
func directReaderFor(f *os.File, path string, info *imageInfo, c *nbd.Client, opt Options) *directReader {
	if info.Format != "qcow2" || info.Specific.Data.DataFile != "" || opt.ForceShare || opt.noDirect {
		return nil
	}
	fileSize, err := f.Seek(0, io.SeekEnd) // block devices too
	if err != nil {
		return nil
	}
	ext, err := hostMap(path, c.Size(), fileSize)
	if err != nil || len(ext) == 0 {
		return nil
	}
	return &directReader{nbd: c, file: f, size: c.Size(), ext: ext}
}

// mapEntry is one extent of `qemu-img map --output=json`.
type mapEntry struct {
	Start  int64  `json:"start"`
	Length int64  `json:"length"`
	Depth  int    `json:"depth"`
	Zero   bool   `json:"zero"`
	Data   bool   `json:"data"`
	Offset *int64 `json:"offset"`
}

// hostMap asks qemu-img where the data of the qcow2 image path (of guest
// size size, stored in a file or device of fileSize bytes) lies in the
// image file itself. Only extents of the top image (depth 0) whose data
// qemu places at a valid offset are kept; the result is sorted, merged,
// checked against both sizes, and capped.
func hostMap(path string, size, fileSize int64) ([]hostExtent, error) {
	// -U: prezero's own qemu-nbd holds the image's lock, which keeps
	// writers out; this reader needs none of its own.
	cmd := exec.Command("qemu-img", "map", "--output=json", "-U", "-f", "qcow2", "--", nbd.QemuFilename(path))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	ext, perr := parseHostMap(out, size, fileSize)
	io.Copy(io.Discard, out)
	if err := cmd.Wait(); err != nil {
		return nil, fmt.Errorf("qemu-img map: %v: %s", err, strings.TrimSpace(stderr.String()))
	}
	return ext, perr
}

// parseHostMap reads qemu-img map's JSON array from r.
func parseHostMap(r io.Reader, size, fileSize int64) ([]hostExtent, error) {
	dec := json.NewDecoder(r)
	if t, err := dec.Token(); err != nil || t != json.Delim('[') {
		return nil, fmt.Errorf("qemu-img map: not a JSON array (%v)", err)
	}
	var ext []hostExtent
	last := int64(0)
	for dec.More() {
		var e mapEntry
		if err := dec.Decode(&e); err != nil {
			return nil, fmt.Errorf("qemu-img map: %w", err)
		}
		if e.Start < last || e.Length <= 0 || e.Start > size || e.Length > size-e.Start {
			return nil, fmt.Errorf("qemu-img map: extent [%d, +%d) out of order or outside the %d-byte disk", e.Start, e.Length, size)
		}
		last = e.Start + e.Length
		if e.Depth != 0 || !e.Data || e.Zero || e.Offset == nil {
			continue
		}
		h := *e.Offset
		if h%512 != 0 || e.Start%512 != 0 {
			// qcow2 clusters are whole sectors: this is not a mapping
			// to trust, so read it all through NBD.
			return nil, fmt.Errorf("qemu-img map: extent [%d, +%d) at unaligned offset %d", e.Start, e.Length, h)
		}
		if h < 0 || h > fileSize || e.Length > fileSize-h {
			continue // not inside the file: read through NBD
		}
		if k := len(ext); k > 0 && ext[k-1].guest+ext[k-1].n == e.Start && ext[k-1].host+ext[k-1].n == h {
			ext[k-1].n += e.Length
			continue
		}
		if len(ext) == maxDirectExtents {
			break // the rest through NBD
		}
		ext = append(ext, hostExtent{e.Start, h, e.Length})
	}
	return ext, nil
}
