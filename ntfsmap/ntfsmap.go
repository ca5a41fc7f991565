// Package ntfsmap reads the allocation bitmap of an NTFS volume and returns
// the byte ranges it proves unallocated, as a freemap.Map.
//
// Place in the pipeline: layout hands each partition to a map builder as an
// io.ReaderAt and a size; ntfsmap is the builder for NTFS (extfsmap is its
// peer). The resulting map goes to the stream package, the one place that
// turns free ranges into zeros. ntfsmap only reads; it never writes the source.
//
// Safety rules. Unknown means allocated: a range is free only if the $Bitmap
// proves it free. In particular:
//   - Bytes outside the clusters the bitmap covers always pass through: the
//     backup boot sector in the last sector, any tail past the last whole
//     cluster, and clusters whose bits lie past the bitmap's data or
//     initialized size.
//   - Any inconsistency in the boot sector, an MFT record (magic, update
//     sequence array, record number, attribute bounds, system file name), a
//     runlist or the $Bitmap attribute is an error, and an error means the
//     caller passes the whole volume through. So is a $MFTMirr that does
//     not match $MFT (ntfs-3g refuses to mount such a volume too), and a
//     bitmap that marks metadata clusters (the boot sector, $MFT, $MFTMirr,
//     $LogFile, $Bitmap itself) free.
//   - Unsafe states are errors too (errors.Is(err, freemap.ErrUnsafe)): the dirty flag in $Volume (unless
//     Options.ForceDirty), a hibernated or fast-started Windows (hiberfil.sys
//     in the root directory starting with a hibernation signature), and a
//     journal ($LogFile) that was not shut down cleanly, because in all three
//     the on-disk bitmap may not describe what is really in use.
//
// Limitations, each of which is an error (pass-through), never a guess: this
// package does not follow $ATTRIBUTE_LIST. Only the first extent of $MFT's
// $DATA (the one in record 0) is used, so a record that a badly fragmented
// $MFT keeps in a later extent cannot be read; in practice that can only be
// hiberfil.sys's record, since the system records 0-15 always lie in the
// first extent. A $Bitmap, $LogFile or hiberfil.sys whose $DATA is not in
// its base record, and compressed, encrypted or sparse $Bitmap data, are
// errors as well.
//
// The bitmap is streamed in 1 MiB chunks, so memory grows with the number of
// free extents, not with the size of the volume.
package ntfsmap

import (
	"fmt"
	"io"

	"github.com/prezero/prezero/freemap"
)

// formatErr returns a *freemap.FormatError at byte off of the volume.
func formatErr(off int64, format string, args ...any) error {
	return freemap.Formatf(off, "ntfs: "+format, args...)
}

// Options control Read.
type Options struct {
	// ForceDirty maps a volume whose dirty flag is set, with a loud
	// warning in Volume.Notes. A hibernated Windows or an unclean
	// journal is never forced.
	ForceDirty bool
	// NoCrossCheck skips walking the MFT to check $Bitmap against the
	// clusters that records reference.
	NoCrossCheck bool
}

// Volume is a mapped NTFS volume.
type Volume struct {
	FS           string // "ntfs", as blkid names it
	BlockSize    int    // the cluster size: the allocation unit, bytes
	SectorSize   int
	Clusters     int64        // total clusters (total sectors / sectors per cluster)
	UsedClusters int64        // clusters not proven free (set bits, plus any the bitmap does not cover)
	Free         *freemap.Map // proven-free byte ranges relative to volume start; Free.Size() == size
	Notes        []string     // things the user should know, e.g. a forced dirty volume
	CrossCheck   CrossCheckResult
}

// Probe reports whether r looks like NTFS: the OEM id "NTFS    " at byte 3.
// It is cheap and proves nothing; Read validates.
func Probe(r io.ReaderAt, size int64) bool {
	if size < bootSize {
		return false
	}
	var b [8]byte
	if _, err := r.ReadAt(b[:], 3); err != nil {
		return false
	}
	return string(b[:]) == oemID
}

// Read maps the NTFS volume of size bytes in r. An error means the caller
// must pass the whole volume through; its message is the reason shown to
// the user.
func Read(r io.ReaderAt, size int64, opt Options) (*Volume, error) {
	if size < 0 {
		return nil, formatErr(0, "negative volume size %d", size)
	}
	bs, err := readBoot(r, size)
	if err != nil {
		return nil, err
	}
	v := &volume{r: r, size: size, boot: bs}
	if err := v.loadMFT(); err != nil {
		return nil, err
	}
	out := &Volume{
		FS:         "ntfs",
		BlockSize:  bs.clusterSize,
		SectorSize: bs.sectorSize,
		Clusters:   bs.clusters,
	}
	dirty, err := v.checkVolumeInfo()
	if err != nil {
		return nil, err
	}
	if dirty {
		if !opt.ForceDirty {
			return nil, freemap.Unsafe("ntfs: volume is dirty (run chkdsk /f in Windows, or ntfsfix): its bitmap may be wrong, so it is passed through unzeroed")
		}
		out.Notes = append(out.Notes, "WARNING: NTFS volume is dirty; zeroing its free clusters anyway, as forced. If its bitmap is wrong, file data will be lost in the copy.")
	}
	if err := v.checkLogFile(); err != nil {
		return nil, err
	}
	if err := v.checkHiberfil(); err != nil {
		return nil, err
	}
	free, used, warn, err := v.mapBitmap()
	if err != nil {
		return nil, err
	}
	out.Notes = append(out.Notes, warn...)
	if !opt.NoCrossCheck {
		checked, res := v.crossCheck(free)
		if checked != free {
			free.Release()
			free = checked
			used += res.Conflicts
		}
		out.CrossCheck = res
		if res.Conflicts > 0 {
			out.Notes = append(out.Notes, fmt.Sprintf("ntfs: cross-check: %d clusters that MFT records use are marked free in $Bitmap; kept (the bitmap is wrong: run chkdsk /f in Windows)", res.Conflicts))
		}
		if res.Unreadable > 0 {
			out.Notes = append(out.Notes, fmt.Sprintf("ntfs: cross-check: %d in-use MFT records or runlists could not be parsed ($Bitmap alone decides there)", res.Unreadable))
		}
		if res.Incomplete != "" {
			out.Notes = append(out.Notes, "ntfs: cross-check incomplete ($Bitmap alone decides): "+res.Incomplete)
		}
	}
	out.Free = free
	out.UsedClusters = used
	return out, nil
}

// volume is the state shared by the steps of Read.
type volume struct {
	r    io.ReaderAt
	size int64
	boot *boot
	mft  *attr  // unnamed $DATA of $MFT, first extent
	meta []span // cluster ranges of metadata that must be in use
}

// span is a half-open range of clusters [lcn, lcn+n) holding metadata.
type span struct {
	lcn, n int64
	what   string
}

// readFull reads len(p) bytes at off of the volume, which must lie inside it.
func (v *volume) readFull(p []byte, off int64) error {
	if off < 0 || off > v.size || int64(len(p)) > v.size-off {
		return formatErr(off, "read of %d bytes past the end of the volume", len(p))
	}
	n, err := v.r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("ntfs: reading %d bytes at %d: %w", len(p), off, err)
}
