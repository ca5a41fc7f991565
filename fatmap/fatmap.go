// Package fatmap reads the File Allocation Tables of a FAT12, FAT16 or FAT32
// volume (an EFI system partition, a USB stick, an SD card) and returns the
// byte ranges they prove unallocated, as a freemap.Map.
//
// Place in the pipeline: internal/source hands each partition to the parser
// whose probe claims it, as an io.ReaderAt and a size; fatmap is the parser
// for FAT (extfsmap, ntfsmap and exfatmap are its peers). The map goes to the
// stream package, the one place that turns free ranges into zeros. fatmap
// only reads; it never writes the source.
//
// The rule above all: unknown means allocated. A cluster is free only if its
// entry is zero in every copy of the FAT (with FAT32 mirroring disabled only
// the active copy is authoritative, but a stale copy that calls a cluster
// used still keeps it). Everything outside the clusters passes through: the
// boot sector and the other reserved sectors, the FATs, the fixed root
// directory of FAT12/16, the sectors after the last whole cluster and the
// bytes between the volume's end and the partition's end. FAT32 entries are
// compared as whole 32-bit values: a nonzero value in the four reserved top
// bits still means allocated.
//
// The FAT type comes from the cluster count alone (Microsoft's rule: fewer
// than 4085 clusters is FAT12, fewer than 65525 FAT16, else FAT32), never
// from the label. A BPB whose layout says otherwise (a FAT32 BPB with too few
// clusters, say) is refused, as is a FAT too short (or far too long) for the
// clusters, a volume larger than its partition, or any BPB field out of
// range.
//
// FAT12/16 boot sectors have no checksum or backup, and one wrong byte in
// them would shift every cluster. So besides the FAT32 backup boot sector,
// the FAT's media entry and zero entries past the last cluster, fatmap
// walks the directory tree of every volume (breadth first, with depth,
// size and loop limits) and checks that it agrees with the geometry and
// the FAT: each subdirectory begins with its "." and ".." entries, short
// names are well formed, and on a clean volume every live entry starts at
// a cluster the FAT marks used. A disagreement refuses the volume
// (ErrFormat).
//
// A dirty volume (Linux sets the boot sector's state byte on every
// read-write mount; Windows clears the clean-shutdown bit in FAT[1]) may have
// directory entries written before their FAT chains. So on a dirty volume
// fatmap also keeps every cluster a live directory entry starts at, and
// every cluster that any allocated FAT entry in any copy points at (which
// covers every chain). If the walk fails, Read refuses the volume
// (ErrUnsafe) and the caller passes it through.
//
// Memory: the FATs are streamed; a bitmap of one bit per cluster (at most
// 32 MiB for the largest FAT32) and the free extents are kept.
package fatmap

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/prezero/prezero/freemap"
)

// Volume is what Read learned about a FAT volume.
type Volume struct {
	FS           string       // "vfat", as blkid names every FAT
	Type         string       // "FAT12", "FAT16" or "FAT32", from the cluster count
	SectorSize   int          // bytes per sector
	BlockSize    int          // bytes per cluster
	Clusters     int64        // data clusters (numbered 2 .. Clusters+1)
	FreeClusters int64        // clusters proven free (and kept in Free)
	Dirty        bool         // the volume was not cleanly unmounted; the directory tree was walked
	Free         *freemap.Map // proven-free byte ranges relative to the volume start; Free.Size() == size
	Notes        []string     // remarks: dirty state, FAT copies that differ, ...
}

// Probe reports whether r looks like a FAT volume: a jump instruction, the
// 0x55AA signature and a plausible BIOS parameter block (sector size, a
// power-of-two cluster size, reserved sectors and FATs, media byte). NTFS and
// exFAT boot sectors carry zeros where FAT has these fields, so they are not
// claimed. It is cheap and proves nothing; Read validates.
func Probe(r io.ReaderAt, size int64) bool {
	if size < 512 {
		return false
	}
	var b [512]byte
	if n, err := r.ReadAt(b[:], 0); n != len(b) && err != nil {
		return false
	}
	_, err := parseBPB(b[:])
	return err == nil
}

// Read maps the FAT volume of size bytes in r. An error means the caller
// must pass the whole volume through; errors.Is matches it against
// freemap.ErrFormat, ErrUnsupported or ErrUnsafe, and its message, which
// starts with "vfat:", is the reason shown to the user.
func Read(r io.ReaderAt, size int64) (*Volume, error) {
	if size < 512 {
		return nil, freemap.Formatf(0, "vfat: volume of %d bytes is too small for a boot sector", size)
	}
	b := make([]byte, 512)
	if err := readFull(r, size, b, 0); err != nil {
		return nil, err
	}
	g, err := parseBPB(b)
	if err != nil {
		return nil, err
	}
	if err := g.check(size); err != nil {
		return nil, err
	}
	v := &volume{r: r, size: size, g: g}
	if err := v.checkBackup(b); err != nil {
		return nil, err
	}
	if err := v.loadFATs(); err != nil {
		return nil, err
	}
	out := &Volume{
		FS: "vfat", Type: g.typeName(), SectorSize: int(g.bps), BlockSize: int(g.clusterBytes()),
		Clusters: int64(g.clusters),
	}
	if g.bits == 32 && g.extFlags&0x80 != 0 {
		v.note("FAT mirroring is disabled (active FAT %d); a cluster is free only if all %d copies say so", g.extFlags&0x0f, g.nfats)
	}
	dirty, why, err := v.dirtyState(b)
	if err != nil {
		return nil, err
	}
	if dirty {
		out.Dirty = true
		if err := v.keepPointed(); err != nil {
			return nil, err
		}
	}
	w := &walker{v: v, dirty: dirty, visited: map[uint32]bool{}}
	if err := w.walk(); err != nil {
		var fe *freemap.FormatError
		if errors.As(err, &fe) {
			err = fe
		}
		if dirty {
			return nil, freemap.Unsafe("vfat: volume is dirty (%s) and its directory tree cannot be walked to find the clusters its FAT may not show yet: %v", why, err)
		}
		return nil, freemap.Formatf(w.off, "vfat: directory tree disagrees with the boot sector or the FAT: %v", err)
	}
	if dirty {
		v.note("volume is dirty (%s): also kept %d clusters that directory entries or FAT chains point at but every FAT copy marks free", why, v.kept)
	}
	out.Free = v.freeMap()
	out.FreeClusters = out.Free.FreeBytes() / g.clusterBytes() // after any coarsening by freemap
	out.Notes = v.notes
	return out, nil
}

// maxNotes caps Volume.Notes.
const maxNotes = 20

// volume is the state shared by the steps of Read.
type volume struct {
	r     io.ReaderAt
	size  int64
	g     *geometry
	free  []uint64 // bit n-2 set: cluster n is free (zero in every FAT copy, not referenced)
	kept  int64    // free clusters kept because something points at them (dirty volumes)
	cache fatCache
	notes []string
}

func (v *volume) note(format string, args ...any) {
	if len(v.notes) < maxNotes {
		v.notes = append(v.notes, fmt.Sprintf(format, args...))
	}
}

// readFull reads len(p) bytes at off, which must lie inside the volume.
func readFull(r io.ReaderAt, size int64, p []byte, off int64) error {
	if off < 0 || off > size || int64(len(p)) > size-off {
		return freemap.Formatf(off, "vfat: read of %d bytes past the end of the %d-byte volume", len(p), size)
	}
	n, err := r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("vfat: reading %d bytes at %d: %w", len(p), off, err)
}

func (v *volume) readAt(p []byte, off int64) error { return readFull(v.r, v.size, p, off) }

// isFree reports whether cluster n (2 <= n < clusters+2) is still free.
func (v *volume) isFree(n uint32) bool {
	i := n - 2
	return v.free[i/64]&(1<<(i%64)) != 0
}

// keep marks cluster n used; out-of-range numbers are ignored.
func (v *volume) keep(n uint32) {
	if n < 2 || n >= v.g.clusters+2 {
		return
	}
	i := n - 2
	v.free[i/64] &^= 1 << (i % 64)
}

// freeMap turns the free-cluster bitmap into byte ranges.
func (v *volume) freeMap() *freemap.Map {
	b := freemap.NewBuilder(v.size)
	cb := v.g.clusterBytes()
	n := v.g.clusters
	for i := uint32(0); i < n; {
		w := v.free[i/64]
		if w == 0 && i%64 == 0 {
			i += 64
			continue
		}
		if w&(1<<(i%64)) == 0 {
			i++
			continue
		}
		j := i + 1
		for j < n && v.free[j/64]&(1<<(j%64)) != 0 {
			j++
		}
		b.Add(v.g.clusterOffset(i+2), int64(j-i)*cb)
		i = j
	}
	return b.Map()
}

// le16 and le32 read little-endian fields.
func le16(b []byte, off int) uint32 { return uint32(binary.LittleEndian.Uint16(b[off:])) }
func le32(b []byte, off int) uint32 { return binary.LittleEndian.Uint32(b[off:]) }
