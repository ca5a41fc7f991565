package exfatmap

import (
	"fmt"
)

// Limits of the directory walk. Exceeding one fails the walk, and the
// volume passes through.
const (
	maxDepth   = 256
	maxDirs    = 1 << 20
	maxEntries = 1 << 24
	maxKeep    = 1 << 22
)

// walker walks the directory tree breadth first and collects every
// cluster range a directory entry references.
type walker struct {
	v       *volume
	visited map[uint32]bool
	queue   []subdir
	keep    []run
	entries int
}

type subdir struct {
	first      uint32
	length     uint64
	noFatChain bool
	depth      int
	path       string
}

func (w *walker) walk(root uint32, rootData []byte) error {
	w.visited[root] = true
	if err := w.entriesIn(rootData, 0, "/"); err != nil {
		return err
	}
	for len(w.queue) > 0 {
		d := w.queue[0]
		w.queue = w.queue[1:]
		runs, err := w.v.chain(d.first, d.length, d.noFatChain, "directory "+d.path)
		if err != nil {
			return err
		}
		data, err := w.v.readRuns(runs, maxDirBytes, "directory "+d.path)
		if err != nil {
			return err
		}
		if err := w.entriesIn(data, d.depth, d.path); err != nil {
			return err
		}
	}
	return nil
}

// alloc keeps the clusters of an allocation; a chain that breaks early is
// completed contiguously (the FAT may not be written yet).
func (w *walker) alloc(first uint32, length uint64, noFatChain bool, what string) error {
	if length == 0 {
		return nil // nothing allocated, whatever first says
	}
	runs, err := w.v.chainOpt(first, length, noFatChain, true, what)
	if err != nil {
		return err
	}
	w.keep = append(w.keep, runs...)
	if len(w.keep) > maxKeep {
		return fmt.Errorf("more than %d cluster ranges referenced", maxKeep)
	}
	return nil
}

// entriesIn reads one directory's entries: it keeps every allocation and
// queues subdirectories.
func (w *walker) entriesIn(data []byte, depth int, path string) error {
	for i := 0; i+32 <= len(data); i += 32 {
		e := data[i : i+32]
		t := e[0]
		if t == typeEnd {
			return nil
		}
		if t&inUse == 0 || t&secondary != 0 {
			continue // unused, or a secondary outside a set (skipped, as Linux does)
		}
		if w.entries++; w.entries > maxEntries {
			return fmt.Errorf("more than %d directory entries", maxEntries)
		}
		switch {
		case t == typeBitmap || t == typeUpcase:
			if depth != 0 {
				return fmt.Errorf("%s: entry type %#x outside the root directory", path, t)
			}
			if err := w.alloc(le32(e, 20), le64(e, 24), t == typeBitmap, fmt.Sprintf("entry %#x in /", t)); err != nil {
				return err
			}
			continue
		case t == typeLabel:
			continue
		case t != typeFile && t&benign == 0:
			return fmt.Errorf("%s: unknown critical directory entry type %#x", path, t)
		}
		// A file (or a benign primary) and its secondaries.
		sc := int(e[1])
		if i+32*(sc+1) > len(data) {
			return fmt.Errorf("%s: entry set of %d secondaries runs past the directory's end", path, sc)
		}
		set := data[i+32 : i+32*(sc+1)]
		if t&benign != 0 {
			if flags := le16(e, 4); flags&flagAllocPoss != 0 {
				if err := w.alloc(le32(e, 20), le64(e, 24), flags&flagNoFatChn != 0, fmt.Sprintf("%s entry %#x", path, t)); err != nil {
					return err
				}
			}
		} else if sc < 2 || set[0] != typeStream {
			return fmt.Errorf("%s: file entry without its stream extension", path)
		}
		name := fmt.Sprintf("%s<entry %d>", path, i/32)
		for k := 0; k < sc; k++ {
			s := set[32*k : 32*k+32]
			if s[0]&(inUse|secondary) != inUse|secondary {
				return fmt.Errorf("%s: secondary entry %d of %d has type %#x", name, k+1, sc, s[0])
			}
			flags := s[1]
			if flags&flagAllocPoss == 0 {
				continue
			}
			first, length, noFat := le32(s, 20), le64(s, 24), flags&flagNoFatChn != 0
			if err := w.alloc(first, length, noFat, name); err != nil {
				return err
			}
			if k == 0 && t == typeFile && le16(e, 4)&attrDirectory != 0 && length > 0 {
				if depth+1 > maxDepth {
					return fmt.Errorf("directories nested more than %d deep at %s", maxDepth, name)
				}
				if w.visited[first] {
					return fmt.Errorf("directory %s (cluster %d) is reached twice: a loop in the tree", name, first)
				}
				if len(w.visited) >= maxDirs {
					return fmt.Errorf("more than %d directories", maxDirs)
				}
				w.visited[first] = true
				w.queue = append(w.queue, subdir{first, length, noFat, depth + 1, name + "/"})
			}
		}
		i += 32 * sc
	}
	return nil
}
