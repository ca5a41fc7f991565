// Package exfatmap reads the allocation bitmap of an exFAT volume (SD cards,
// USB media) and returns the byte ranges it proves unallocated, as a
// freemap.Map.
//
// Place in the pipeline: internal/source hands each partition to the parser
// whose probe claims it, as an io.ReaderAt and a size; exfatmap is the
// parser for exFAT (fatmap, extfsmap and ntfsmap are its peers). The map
// goes to the stream package, the one place that turns free ranges into
// zeros. exfatmap only reads; it never writes the source.
//
// The rule above all: unknown means allocated.
//   - Free space comes from the Allocation Bitmap, never from the FAT:
//     contiguous files flagged NoFatChain have no FAT chain at all. With
//     TexFAT's two bitmaps a cluster is free only if both say so.
//   - Everything outside the cluster heap passes through: the main and
//     backup boot regions, the FATs, any gap before the heap, the sectors
//     after the last cluster and after the volume's end.
//   - The boot region's checksum must verify; the bitmap's size must equal
//     ClusterCount bits (Linux refuses the volume otherwise); the bitmap,
//     up-case table and root directory must be marked allocated in it.
//     Anything else is an error, and the caller passes the volume through.
//   - exfatmap walks the directory tree (with depth, size and loop limits)
//     and collects every cluster range a directory entry references: a
//     stream extension's first cluster and length, contiguous (NoFatChain)
//     or along its FAT chain. On a clean volume each must be allocated in
//     the bitmap, or the volume is refused (a corrupt bitmap). A volume
//     with VolumeDirty set may have entries whose clusters the bitmap does
//     not show yet: those ranges are kept too, and if the walk fails Read
//     refuses (ErrUnsafe).
//
// Memory: the bitmap is streamed in 1 MiB chunks; what is kept grows with
// the number of free extents (and, on a dirty volume, of files).
package exfatmap

import (
	"encoding/binary"
	"fmt"
	"io"
	"slices"
	"sort"

	"github.com/prezero/prezero/freemap"
)

// Volume is what Read learned about an exFAT volume.
type Volume struct {
	FS           string       // "exfat", as blkid names it
	SectorSize   int          // bytes per sector
	BlockSize    int          // bytes per cluster
	Clusters     int64        // ClusterCount (clusters 2 .. Clusters+1)
	FreeClusters int64        // clusters proven free (and kept in Free)
	Bitmaps      int          // allocation bitmaps united (2 with TexFAT)
	Dirty        bool         // VolumeDirty was set: clusters directory entries reference were kept
	Free         *freemap.Map // proven-free byte ranges relative to the volume start; Free.Size() == size
	Notes        []string     // remarks: dirty state, media failure flag, ...
}

// Probe reports whether r looks like exFAT: the jump and "EXFAT   " name
// at the start of the boot sector. It is cheap and proves nothing; Read
// validates.
func Probe(r io.ReaderAt, size int64) bool {
	if size < 512 {
		return false
	}
	var b [11]byte
	if n, err := r.ReadAt(b[:], 0); n != len(b) && err != nil {
		return false
	}
	return b[0] == 0xEB && b[1] == 0x76 && b[2] == 0x90 && string(b[3:11]) == fsName
}

// Read maps the exFAT volume of size bytes in r. An error means the caller
// must pass the whole volume through; errors.Is matches it against
// freemap.ErrFormat, ErrUnsupported or ErrUnsafe, and its message, which
// starts with "exfat:", is the reason shown to the user.
func Read(r io.ReaderAt, size int64) (*Volume, error) {
	v := &volume{r: r, size: size}
	if err := v.readBoot(); err != nil {
		return nil, err
	}
	b := v.boot
	out := &Volume{FS: "exfat", SectorSize: int(b.bps), BlockSize: int(b.clusterBytes()), Clusters: int64(b.clusters)}
	if b.flags&flagMediaFailure != 0 {
		v.note("the MediaFailure flag is set (the medium reported errors)")
	}
	root, err := v.chain(b.rootClus, 0, false, "root directory")
	if err != nil {
		return nil, freemap.Formatf(offRootCluster, "exfat: %v", err)
	}
	data, err := v.readRuns(root, maxDirBytes, "root directory")
	if err != nil {
		return nil, err
	}
	maps, meta, err := v.rootEntries(data)
	if err != nil {
		return nil, err
	}
	meta = append(meta, root...)
	out.Bitmaps = len(maps)

	// The directory tree must agree with the bitmap; on a dirty volume
	// what it references is kept even where the bitmap says free.
	dirty := b.flags&flagDirty != 0
	out.Dirty = dirty
	w := &walker{v: v, visited: map[uint32]bool{}}
	if err := w.walk(b.rootClus, data); err != nil {
		if dirty {
			return nil, freemap.Unsafe("exfat: volume is dirty and its directory tree cannot be walked to find the clusters its bitmap may not show yet: %v", err)
		}
		return nil, freemap.Formatf(v.clusterOffset(b.rootClus), "exfat: directory tree cannot be walked: %v", err)
	}
	metaSet, keepSet := newRunSet(meta), newRunSet(w.keep)
	fb := freemap.NewBuilder(size)
	var conflicts int64
	err = v.streamBitmaps(maps, func(f run) error {
		if n := metaSet.cut(f, nil); n > 0 {
			return freemap.Formatf(v.clusterOffset(maps[0].first), "exfat: the allocation bitmap marks free %d clusters of its own metadata (bitmap, up-case table, root directory) in clusters %d..%d", n, f.first, f.end()-1)
		}
		conflicts += keepSet.cut(f, func(p run) {
			fb.Add(v.clusterOffset(p.first), int64(p.n)*b.clusterBytes())
		})
		return nil
	})
	if err != nil {
		return nil, err
	}
	if conflicts > 0 {
		if !dirty {
			return nil, freemap.Formatf(v.clusterOffset(maps[0].first), "exfat: the allocation bitmap marks free %d clusters that directory entries use, on a volume marked clean", conflicts)
		}
		v.note("volume is dirty (VolumeDirty set): also kept %d clusters that directory entries reference but the bitmap marks free", conflicts)
	} else if dirty {
		v.note("volume is dirty (VolumeDirty set): its directory tree agrees with the bitmap")
	}
	out.Free, out.Notes = fb.Map(), v.notes
	out.FreeClusters = out.Free.FreeBytes() / b.clusterBytes()
	return out, nil
}

// maxNotes caps Volume.Notes.
const maxNotes = 20

// run is a range of clusters [first, first+n).
type run struct{ first, n uint32 }

func (a run) end() uint64 { return uint64(a.first) + uint64(a.n) }

// volume is the state shared by the steps of Read.
type volume struct {
	r     io.ReaderAt
	size  int64
	boot  *boot
	cache fatCache
	notes []string
}

func (v *volume) note(format string, args ...any) {
	if len(v.notes) < maxNotes {
		v.notes = append(v.notes, fmt.Sprintf(format, args...))
	}
}

// readAt reads len(p) bytes at off, which must lie inside the volume.
func (v *volume) readAt(p []byte, off int64) error {
	if off < 0 || off > v.size || int64(len(p)) > v.size-off {
		return freemap.Formatf(off, "exfat: read of %d bytes past the end of the %d-byte volume", len(p), v.size)
	}
	n, err := v.r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("exfat: reading %d bytes at %d: %w", len(p), off, err)
}

func (v *volume) clusterOffset(n uint32) int64 {
	return v.boot.heap*int64(v.boot.bps) + int64(n-2)*v.boot.clusterBytes()
}

// inHeap reports whether the clusters [first, first+n) exist.
func (v *volume) inHeap(first uint32, n uint64) bool {
	return first >= 2 && n > 0 && uint64(first)+n <= uint64(v.boot.clusters)+2
}

func countRuns(rs []run) int64 {
	var n int64
	for _, r := range rs {
		n += int64(r.n)
	}
	return n
}

// runSet is a sorted, merged set of cluster runs, cut against ascending
// free runs with a cursor.
type runSet struct {
	rs []run
	i  int
}

func newRunSet(rs []run) *runSet {
	rs = slices.Clone(rs)
	sort.Slice(rs, func(i, j int) bool { return rs[i].first < rs[j].first })
	var out []run
	for _, r := range rs {
		if k := len(out); k > 0 && uint64(r.first) <= out[k-1].end() {
			if r.end() > out[k-1].end() {
				out[k-1].n = uint32(r.end() - uint64(out[k-1].first))
			}
			continue
		}
		out = append(out, r)
	}
	return &runSet{rs: out}
}

// cut calls keep (if not nil) with the pieces of f outside the set and
// returns how many of f's clusters are inside it. Calls must come with
// ascending, disjoint f.
func (s *runSet) cut(f run, keep func(run)) (inside int64) {
	for s.i < len(s.rs) && s.rs[s.i].end() <= uint64(f.first) {
		s.i++
	}
	start, end := uint64(f.first), f.end()
	for j := s.i; j < len(s.rs) && uint64(s.rs[j].first) < end; j++ {
		r := s.rs[j]
		if ks := uint64(r.first); ks > start && keep != nil {
			keep(run{uint32(start), uint32(ks - start)})
		}
		lo, hi := max(start, uint64(r.first)), min(end, r.end())
		if hi > lo {
			inside += int64(hi - lo)
		}
		start = max(start, r.end())
	}
	if start < end && keep != nil {
		keep(run{uint32(start), uint32(end - start)})
	}
	return inside
}

func le16(b []byte, off int) uint32 { return uint32(binary.LittleEndian.Uint16(b[off:])) }
func le32(b []byte, off int) uint32 { return binary.LittleEndian.Uint32(b[off:]) }
func le64(b []byte, off int) uint64 { return binary.LittleEndian.Uint64(b[off:]) }
