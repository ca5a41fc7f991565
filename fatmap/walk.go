package fatmap

import (
	"errors"
	"fmt"
)

// Limits of the directory walk. Exceeding one fails the walk, and the
// volume passes through.
const (
	maxDepth      = 256     // nested directories
	maxDirs       = 1 << 20 // directories visited
	maxEntries    = 1 << 24 // directory entries read
	maxDirBytes   = 2 << 20 // one directory (FAT allows 65536 entries of 32 bytes)
	attrLFN       = 0x0F
	attrVolumeID  = 0x08
	attrDirectory = 0x10
)

// walker walks the directory tree breadth first. On every volume it checks
// that the tree agrees with the geometry and the FAT (each subdirectory
// begins with its "." and ".." entries, names are well formed, live entries
// start at allocated clusters), which catches a corrupt boot sector that
// would shift every cluster; on a dirty volume it also keeps every cluster a
// live entry starts at.
type walker struct {
	v       *volume
	dirty   bool
	visited map[uint32]bool // directory start clusters
	queue   []subdir
	entries int
	off     int64 // byte offset of the entry being checked, for errors
}

type subdir struct {
	start uint32
	depth int
	path  string
}

// walk visits every live directory entry.
func (w *walker) walk() error {
	v, g := w.v, w.v.g
	if g.bits == 32 {
		w.visited[g.rootClus] = true
		w.queue = append(w.queue, subdir{g.rootClus, 0, "/"})
	} else {
		b := make([]byte, int64(g.rootEnt)*32)
		off := int64(g.rsvd+g.nfats*g.fatSz) * int64(g.bps)
		if err := v.readAt(b, off); err != nil {
			return err
		}
		if err := w.entriesIn(b, func(i int) int64 { return off + int64(i) }, 0, 0, "/"); err != nil {
			return err
		}
	}
	for len(w.queue) > 0 {
		d := w.queue[0]
		w.queue = w.queue[1:]
		if err := w.dir(d.start, d.depth, d.path); err != nil {
			return err
		}
	}
	return nil
}

// push queues a subdirectory, refusing loops and excess.
func (w *walker) push(start uint32, depth int, path string) error {
	if depth > maxDepth {
		return fmt.Errorf("directories nested more than %d deep at %s", maxDepth, path)
	}
	if w.visited[start] {
		return fmt.Errorf("directory %s (cluster %d) is reached twice: a loop in the tree", path, start)
	}
	if len(w.visited) >= maxDirs {
		return fmt.Errorf("more than %d directories", maxDirs)
	}
	w.visited[start] = true
	w.queue = append(w.queue, subdir{start, depth, path})
	return nil
}

// dir reads the directory starting at cluster start, following its chain in
// the FAT copy the drivers read.
func (w *walker) dir(start uint32, depth int, path string) error {
	v, g := w.v, w.v.g
	cb := g.clusterBytes()
	var data []byte
	var offs []int64 // byte offset of each cluster read
	for c, n := start, uint32(0); ; n++ {
		if int64(len(data))+cb > maxDirBytes && len(data) > 0 {
			return fmt.Errorf("directory %s is larger than %d bytes", path, maxDirBytes)
		}
		off := g.clusterOffset(c)
		w.off = off
		b := make([]byte, cb)
		if err := v.readAt(b, off); err != nil {
			return err
		}
		data = append(data, b...)
		offs = append(offs, off)
		next, err := v.entry(g.activeFAT(), c)
		if err != nil {
			return err
		}
		if g.eoc(next) {
			break
		}
		if g.bits == 32 {
			next &= 0x0FFFFFFF
		}
		if next < 2 || next >= g.clusters+2 {
			return fmt.Errorf("directory %s: cluster %d's FAT entry %#x is neither a next cluster nor end of chain", path, c, next)
		}
		if n >= g.clusters {
			return fmt.Errorf("directory %s: its cluster chain loops", path)
		}
		c = next
	}
	at := func(i int) int64 { return offs[i/int(cb)] + int64(i%int(cb)) }
	self := start
	if depth == 0 {
		self = 0 // the FAT32 root has no "." and ".."
	}
	return w.entriesIn(data, at, self, depth, path)
}

var errTooMany = errors.New("too many directory entries")

// entriesIn checks the entries in b (the directory at cluster self, 0 for
// the root), keeps the clusters they start at on a dirty volume,
// and queues subdirectories. at maps an index in b to its volume offset.
// Like Linux, it reads past a 0x00 entry (only that entry is unused), but
// an entry after one that is malformed is skipped rather than failing.
func (w *walker) entriesIn(b []byte, at func(int) int64, self uint32, depth int, path string) error {
	v, g := w.v, w.v.g
	first := 0
	if self != 0 {
		// A subdirectory begins with "." (itself) and "..".
		if len(b) < 64 || string(b[:11]) != ".          " || string(b[32:43]) != "..         " ||
			b[11]&attrDirectory == 0 || w.start(b[:32]) != self {
			w.off = at(0)
			return fmt.Errorf("directory %s (cluster %d) does not begin with its \".\" and \"..\" entries", path, self)
		}
		first = 64
	}
	ended := false
	for i := first; i+32 <= len(b); i += 32 {
		e := b[i : i+32]
		w.off = at(i)
		if e[0] == 0x00 {
			ended = true
			continue
		}
		if e[0] == 0xE5 {
			continue
		}
		attr := e[11]
		if attr&0x3F == attrLFN || attr&attrVolumeID != 0 {
			continue
		}
		if w.entries++; w.entries > maxEntries {
			return errTooMany
		}
		name := path + shortName(e)
		start := w.start(e)
		var bad string
		switch {
		case !validName(e):
			bad = fmt.Sprintf("malformed short name %q", shortName(e))
		case start == 0 && attr&attrDirectory != 0:
			bad = "a directory without a cluster"
		case start == 1 || start >= g.clusters+2:
			bad = fmt.Sprintf("starts at cluster %d, outside clusters 2..%d", start, g.clusters+1)
		}
		if bad != "" {
			if ended {
				continue // garbage after the end marker
			}
			return fmt.Errorf("%s: %s", name, bad)
		}
		if start == 0 {
			continue // an empty file
		}
		if v.isFree(start) {
			if !w.dirty && !ended {
				return fmt.Errorf("%s starts at cluster %d, which every FAT copy marks free, on a volume marked clean", name, start)
			}
			v.keep(start)
			v.kept++
		}
		if attr&attrDirectory != 0 {
			if err := w.push(start, depth+1, name+"/"); err != nil {
				return err
			}
		}
	}
	return nil
}

// start returns the first cluster of a directory entry.
func (w *walker) start(e []byte) uint32 {
	s := le16(e, 26)
	if w.v.g.bits == 32 {
		s |= le16(e, 20) << 16
	}
	return s
}

// validName reports whether an entry's short name is well formed: no
// control characters (0x05 stands for 0xE5 in the first byte), no leading
// space, no dot.
func validName(e []byte) bool {
	if e[0] == ' ' || e[0] == '.' {
		return false
	}
	for i, c := range e[:11] {
		if c < 0x20 && !(i == 0 && c == 0x05) {
			return false
		}
	}
	return true
}

// shortName renders an 8.3 name for messages.
func shortName(e []byte) string {
	clean := func(b []byte) string {
		out := make([]byte, 0, len(b))
		for _, c := range b {
			if c < 0x20 || c > 0x7e {
				c = '?'
			}
			out = append(out, c)
		}
		for len(out) > 0 && out[len(out)-1] == ' ' {
			out = out[:len(out)-1]
		}
		return string(out)
	}
	base, ext := clean(e[:8]), clean(e[8:11])
	if ext != "" {
		return base + "." + ext
	}
	return base
}
