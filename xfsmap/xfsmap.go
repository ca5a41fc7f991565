// Package xfsmap reads the free-space B+trees of an XFS filesystem (v4 or
// v5) and returns the byte ranges they prove free.
//
// In prezero's pipeline it sits between layout (which finds the partition
// and hands it over as an io.ReaderAt of known size) and stream (which reads
// the partition back with every free range as zeros). It only reads; it
// never writes the source.
//
// The rule above all: unknown means allocated. A range goes into the
// freemap only when the by-block-number free-space btree (bnobt) of its
// allocation group says so, and that AG's structures check out:
//
//   - The superblock's geometry is validated (block and sector sizes,
//     AG size and count against the block count and the volume size, the
//     internal log's place); v5 checksums are verified.
//   - Each AG's AGF must carry its magic, sequence number and length (the
//     last AG may be short) and, on v5, a good checksum and the filesystem's
//     uuid. Every bnobt block is checked (magic, level, sibling links, key
//     ranges, record order and bounds; on v5 also checksum, block number,
//     owner and uuid), with a visited set against loops.
//   - The by-size tree (cntbt) is walked the same way and must hold exactly
//     the same extents, and their total must equal agf_freeblks. Without v5
//     checksums this second, independent copy is what catches corruption.
//   - An AG that fails any check passes through whole; it is counted in
//     Volume.Fallbacks and explained in Volume.Notes.
//   - AGFL blocks are not in the bnobt, so they stay used, as do the AG
//     headers, every btree block, and the internal log.
//   - The log must be clean (an unmount record at its head) or covered (only
//     superblock updates between tail and head, whose geometry equals the
//     on-disk superblock's: what fsfreeze and LVM snapshots of a mounted XFS
//     leave). Any other log needs recovery, and its transactions may have
//     allocated blocks the on-disk btrees still call free: the volume is
//     refused with ErrUnsafe. An external log, a realtime section, an
//     unfinished mkfs, NEEDSREPAIR, a v1 log or unknown feature bits refuse
//     the volume too.
//
// On a clean filesystem the result equals xfs_db's "freesp -d" minus the
// AGFL blocks, and the zeroed stream equals "xfs_copy -d" output.
//
// Memory stays bounded: btree blocks are read one at a time, each AG's
// extents go straight into a freemap.Builder (which coarsens past
// freemap.SetMemoryLimit), and only the numbers of the btree blocks (4
// bytes each) are kept while an AG is checked.
package xfsmap

import (
	"errors"
	"fmt"
	"io"

	"github.com/prezero/prezero/freemap"
)

// maxNotes caps Volume.Notes.
const maxNotes = 20

// Probe reports whether r looks like XFS: the superblock magic "XFSB" at
// byte 0. It does no validation.
func Probe(r io.ReaderAt, size int64) bool {
	if size < minSectSize {
		return false
	}
	var b [4]byte
	if _, err := r.ReadAt(b[:], 0); err != nil && !errors.Is(err, io.EOF) {
		return false
	}
	return be.Uint32(b[:]) == sbMagic
}

// Volume is what Read learned.
type Volume struct {
	FS         string       // "xfs", as blkid names it
	Version    int          // superblock version: 4 or 5
	BlockSize  int          // bytes
	SectorSize int          // bytes
	Blocks     int64        // sb_dblocks
	AGCount    int          // allocation groups
	FreeBlocks int64        // blocks the trusted bnobts call free (before any coarsening)
	Log        string       // "clean" or "covered"
	Free       *freemap.Map // proven-free byte ranges relative to the volume start; Free.Size() == size
	Fallbacks  int          // AGs passed through because something could not be trusted
	Notes      []string     // reasons for the fallbacks and other remarks, capped
}

// Read maps the filesystem in r, a volume of size bytes. An error means the
// whole volume must be passed through; errors.Is tells freemap.ErrFormat,
// freemap.ErrUnsupported and freemap.ErrUnsafe apart.
func Read(r io.ReaderAt, size int64) (*Volume, error) {
	rd := &reader{r: r, size: size}
	s, err := readSuper(rd, size)
	if err != nil {
		return nil, err
	}
	logState, err := checkLog(rd, s)
	if err != nil {
		return nil, err
	}
	m := &mapper{r: rd, s: s, out: freemap.NewBuilder(size)}
	for agno := range s.agcount {
		if err := m.mapAG(agno); err != nil {
			var fe *freemap.FormatError
			if !errors.As(err, &fe) {
				return nil, err // a read error: nothing can be trusted
			}
			m.fallbacks++
			m.note("AG %d kept whole: %v", agno, err)
		}
	}
	if m.coarse.Bytes > 0 {
		m.note("coarsened while checking AGs (memory limit): %v served from the source", m.coarse)
	}
	if m.dropped > 0 {
		m.notes = append(m.notes, fmt.Sprintf("... and %d more", m.dropped))
	}
	ver := 4
	if s.v5 {
		ver = 5
	}
	return &Volume{
		FS:         "xfs",
		Version:    ver,
		BlockSize:  int(s.blockSize),
		SectorSize: int(s.sectSize),
		Blocks:     int64(s.dblocks),
		AGCount:    int(s.agcount),
		FreeBlocks: m.freeBlocks,
		Log:        logState,
		Free:       m.out.Map(),
		Fallbacks:  m.fallbacks,
		Notes:      m.notes,
	}, nil
}

// reader reads whole buffers inside the volume.
type reader struct {
	r    io.ReaderAt
	size int64
}

// read fills b from byte off. A buffer that does not lie wholly inside the
// volume is a format error: on-disk fields chose the offset.
func (r *reader) read(b []byte, off int64) error {
	if off < 0 || off > r.size || int64(len(b)) > r.size-off {
		return freemap.Formatf(off, "xfs: %d bytes at byte %d lie outside the %d-byte volume", len(b), off, r.size)
	}
	n, err := r.r.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("xfs: reading %d bytes at byte %d: %w", len(b), off, err)
}

// mapper holds the state of one Read.
type mapper struct {
	r          *reader
	s          *superblock
	out        *freemap.Builder
	freeBlocks int64
	fallbacks  int
	coarse     freemap.Coarsening // dropped by the per-AG builders
	notes      []string
	dropped    int
}

func (m *mapper) note(format string, args ...any) {
	if len(m.notes) >= maxNotes {
		m.dropped++
		return
	}
	m.notes = append(m.notes, fmt.Sprintf(format, args...))
}
