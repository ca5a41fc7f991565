package extfsmap

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"slices"

	"github.com/prezero/prezero/freemap"
)

// byteRange is a half-open byte range [start, end).
type byteRange struct{ start, end int64 }

// mapGroups walks the groups in order and adds their free ranges to m.out.
func (m *mapper) mapGroups(meta *freemap.Map) error {
	s := m.s
	fsb := s.fsBytes()
	cs := s.clusterSize
	firstCluster := s.firstDataBlock >> s.clusterBits
	bitmap := make([]byte, s.blockSize)
	var used []byteRange
	var sbRanges []blockRange
	d := newDescReader(m.r, s)
	for g := range s.groups {
		gd, err := d.desc(g)
		if err != nil {
			return err
		}
		start := int64(firstCluster+g*s.clustersPerGroup) * cs
		end := min(start+int64(s.clustersPerGroup)*cs, fsb)
		if !gd.csumOK {
			m.fallback(g, "descriptor checksum mismatch (descriptor at byte %d)", s.descOffset(g))
			continue
		}
		sbRanges = s.superAndBGD(g, sbRanges)
		used = m.groupUsed(start, end, sbRanges, meta, used)
		k := 0
		if s.gdtCsum && gd.flags&bgBlockUninit != 0 {
			// Never initialised: free but for its metadata. Its bitmap
			// block holds garbage and is not read.
			m.emit(start, end, used, &k)
			continue
		}
		if reason := s.checkBitmapLoc(g, gd.blockBitmap); reason != "" {
			m.fallback(g, "%s", reason)
			continue
		}
		off := int64(gd.blockBitmap) * s.blockSize
		if _, err := m.r.ReadAt(bitmap, off); err != nil {
			return fmt.Errorf("%s: reading block bitmap of group %d at byte %d: %w", s.kind, g, off, err)
		}
		if s.metadataCsum && !s.bitmapChecksumOK(gd.raw, bitmap) {
			m.fallback(g, "block bitmap checksum mismatch (bitmap at byte %d)", off)
			continue
		}
		nbits := uint64((end - start + cs - 1) / cs) // padding bits past the end are ignored
		// Without checksums a misplaced bitmap pointer would go unnoticed;
		// the descriptor's free count is a second witness. A bitmap showing
		// more free clusters than the descriptor counts is not trusted.
		if free, want := countZeros(bitmap, nbits), gd.freeClusters; free > want {
			m.fallback(g, "block bitmap at byte %d shows %d free clusters but the descriptor counts %d", off, free, want)
			continue
		}
		// The group's own metadata (superblock copy, descriptors, bitmaps
		// and inode tables placed here) is always marked in a real bitmap.
		// A block that is not a bitmap, or a stale one, almost never marks
		// all of it: such a bitmap is not trusted.
		if c, ok := unmarkedMetadata(bitmap, start, cs, nbits, used); !ok {
			m.fallback(g, "block bitmap at byte %d marks metadata cluster %d free", off, c)
			continue
		}
		for i := nextBit(bitmap, 0, nbits, false); i < nbits; {
			j := nextBit(bitmap, i, nbits, true)
			m.emit(start+int64(i)*cs, min(start+int64(j)*cs, end), used, &k)
			i = nextBit(bitmap, j, nbits, false)
		}
	}
	return nil
}

// groupUsed returns the sorted, merged byte ranges inside [start, end) that
// stay used whatever the bitmap says: the group's superblock copy and
// descriptor blocks, the metadata of any group placed here, and the primary
// superblock's first 2 KiB. Ranges are widened to whole clusters, as marking
// one block of a cluster marks the cluster.
func (m *mapper) groupUsed(start, end int64, sbr []blockRange, meta *freemap.Map, out []byteRange) []byteRange {
	s := m.s
	out = out[:0]
	add := func(a, b int64) {
		a = a / s.clusterSize * s.clusterSize
		b = (b + s.clusterSize - 1) / s.clusterSize * s.clusterSize
		a, b = max(a, start), min(b, end)
		if a < b {
			out = append(out, byteRange{a, b})
		}
	}
	if start < sbOffset+sbSize {
		add(0, sbOffset+sbSize)
	}
	for _, r := range sbr {
		add(int64(r.start)*s.blockSize, int64(r.end)*s.blockSize)
	}
	for e, ok := meta.Next(start); ok && e.Off < end; e, ok = meta.Next(e.End()) {
		add(e.Off, e.End())
	}
	slices.SortFunc(out, func(x, y byteRange) int {
		switch {
		case x.start < y.start:
			return -1
		case x.start > y.start:
			return 1
		}
		return 0
	})
	merged := out[:0]
	for _, r := range out {
		if n := len(merged); n > 0 && r.start <= merged[n-1].end {
			merged[n-1].end = max(merged[n-1].end, r.end)
			continue
		}
		merged = append(merged, r)
	}
	return merged
}

// emit adds [a, b) minus the used ranges to the map. Calls for one group
// come in ascending order; *k is the cursor into used.
func (m *mapper) emit(a, b int64, used []byteRange, k *int) {
	for a < b {
		for *k < len(used) && used[*k].end <= a {
			*k++
		}
		if *k == len(used) || used[*k].start >= b {
			m.out.Add(a, b-a)
			return
		}
		if u := used[*k]; u.start > a {
			m.out.Add(a, u.start-a)
		}
		a = used[*k].end
	}
}

// checkBitmapLoc returns why block bitmap location blk of group g cannot be
// right, or "" (the checks of ext2fs_check_desc).
func (s *superblock) checkBitmapLoc(g, blk uint64) string {
	if blk < s.firstDataBlock || blk == 0 || blk >= s.blocksCount {
		return fmt.Sprintf("block bitmap location %d outside the filesystem", blk)
	}
	host := (blk - s.firstDataBlock) / s.blocksPerGroup
	if s.incompat&incompatFlexBG == 0 && host != g {
		return fmt.Sprintf("block bitmap location %d outside its group without flex_bg", blk)
	}
	for _, r := range s.superAndBGD(host, nil) {
		if blk >= r.start && blk < r.end {
			return fmt.Sprintf("block bitmap location %d overlaps superblock or group descriptors", blk)
		}
	}
	return ""
}

// unmarkedMetadata checks that every cluster of the used ranges (which lie
// inside the group starting at byte start) is set in the group's bitmap. It
// returns the first clear one's index within the group and false otherwise.
func unmarkedMetadata(bitmap []byte, start, cs int64, nbits uint64, used []byteRange) (uint64, bool) {
	for _, r := range used {
		i := uint64((r.start - start) / cs)
		j := min(uint64((r.end-start+cs-1)/cs), nbits)
		if c := nextBit(bitmap, i, j, false); c < j {
			return c, false
		}
	}
	return 0, true
}

// nextBit returns the index of the first bit >= i and < n of bitmap bm that
// equals set, or n. Bits are little-endian within bytes, as in ext2.
func nextBit(bm []byte, i, n uint64, set bool) uint64 {
	for i < n {
		if i%64 == 0 && i+64 <= n {
			w := binary.LittleEndian.Uint64(bm[i/8:])
			if !set {
				w = ^w
			}
			if w == 0 {
				i += 64
				continue
			}
			return i + uint64(bits.TrailingZeros64(w))
		}
		if (bm[i/8]>>(i%8)&1 == 1) == set {
			return i
		}
		i++
	}
	return n
}

// countZeros returns the number of clear bits among the first n of bm.
func countZeros(bm []byte, n uint64) uint64 {
	var ones uint64
	i := uint64(0)
	for ; i+64 <= n; i += 64 {
		ones += uint64(bits.OnesCount64(binary.LittleEndian.Uint64(bm[i/8:])))
	}
	for ; i < n; i++ {
		ones += uint64(bm[i/8] >> (i % 8) & 1)
	}
	return n - ones
}
