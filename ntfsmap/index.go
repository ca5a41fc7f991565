package ntfsmap

import (
	"encoding/binary"
	"strings"
)

// $INDEX_ROOT value and index block layout.
const (
	offIRBlockSize = 0x08 // u32: bytes per index block
	offIRHeader    = 0x10 // index header inside $INDEX_ROOT's value
	offIXHeader    = 0x18 // index header inside an INDX block

	offIHEntries = 0x00 // u32: offset of the first entry, from the index header
	offIHLength  = 0x04 // u32: end of the entries, from the index header
	ihSize       = 0x10

	offIEFileRef = 0x00 // u64: MFT reference of the indexed file
	offIELength  = 0x08 // u16
	offIEKeyLen  = 0x0A // u16
	offIEFlags   = 0x0C // u16
	offIEKey     = 0x10
	ieEnd        = 0x0002

	// maxRootIndex caps the root directory index that lookupRoot reads
	// (millions of entries), and so the size of its in-use bitmap.
	maxRootIndex = 4 << 30
)

// lookupRoot finds name (compared case-insensitively) in the root
// directory's $I30 index and returns its MFT record number, or -1 if it is
// absent. It walks the index root and every in-use index block rather than
// descending the B+tree, so it does not depend on the $UpCase collation.
func (v *volume) lookupRoot(name string) (int64, error) {
	fr, as, err := v.record(recRoot)
	if err != nil {
		return 0, err
	}
	if err := checkName(fr, as, "."); err != nil {
		return 0, err
	}
	root := find(as, attrIndexRoot, "$I30")
	if root == nil || root.nonRes || len(root.value) < offIRHeader+ihSize {
		return 0, formatErr(fr.off, "root directory has no valid $I30 index root")
	}
	ref, err := scanEntries(root.value, offIRHeader, name, root.off)
	if ref >= 0 || err != nil {
		return ref, err
	}
	alloc := find(as, attrIndexAlloc, "$I30")
	if alloc == nil {
		return -1, nil
	}
	if !alloc.nonRes || alloc.lowVCN != 0 || alloc.flags&(attrFlagCompressed|attrFlagEncrypted) != 0 {
		return 0, formatErr(alloc.off, "root directory index allocation is not plain non-resident data")
	}
	if alloc.initSize > maxRootIndex {
		return 0, formatErr(alloc.off, "root directory index of %d bytes is too large", alloc.initSize)
	}
	bs := int64(binary.LittleEndian.Uint32(root.value[offIRBlockSize:]))
	if bs < minRecordSize || bs > maxRecordSize || bs&(bs-1) != 0 {
		return 0, formatErr(root.off, "root directory index block size %d invalid", bs)
	}
	// The $I30 bitmap says which index blocks are in use; without it,
	// every block must be valid.
	var inUse []byte
	if bm := find(as, attrBitmap, "$I30"); bm != nil {
		want := (alloc.initSize/bs + 7) / 8
		if bm.initSize < want {
			return 0, formatErr(bm.off, "root directory index bitmap is too short")
		}
		inUse = make([]byte, want) // bounded by the index size / (8*512)
		if err := v.readAttr(bm, inUse, 0); err != nil {
			return 0, err
		}
	}
	blk := make([]byte, bs)
	for i := int64(0); i < alloc.initSize/bs; i++ {
		if inUse != nil && inUse[i/8]&(1<<(i%8)) == 0 {
			continue
		}
		if err := v.readAttr(alloc, blk, i*bs); err != nil {
			return 0, err
		}
		off := v.attrOffset(alloc, i*bs)
		if string(blk[:4]) != "INDX" {
			return 0, formatErr(off, "root directory index block %d has no INDX magic", i)
		}
		if err := applyFixup(blk, off); err != nil {
			return 0, err
		}
		ref, err := scanEntries(blk, offIXHeader, name, off)
		if ref >= 0 || err != nil {
			return ref, err
		}
	}
	return -1, nil
}

// scanEntries walks the index entries under the index header at hdr in b
// and returns the record number of the entry whose $FILE_NAME key is name,
// or -1.
func scanEntries(b []byte, hdr int, name string, off int64) (int64, error) {
	le := binary.LittleEndian
	if hdr+ihSize > len(b) {
		return 0, formatErr(off, "index header out of bounds")
	}
	start := hdr + int(le.Uint32(b[hdr+offIHEntries:]))
	end := hdr + int(le.Uint32(b[hdr+offIHLength:]))
	if start < hdr+ihSize || end > len(b) || start > end || start < 0 || end < 0 {
		return 0, formatErr(off, "index entries [%d,%d) out of bounds", start, end)
	}
	for pos := start; ; {
		if pos+offIEKey > end {
			return 0, formatErr(off+int64(pos), "index entries have no end entry")
		}
		n := int(le.Uint16(b[pos+offIELength:]))
		kl := int(le.Uint16(b[pos+offIEKeyLen:]))
		flags := le.Uint16(b[pos+offIEFlags:])
		if n < offIEKey || n&7 != 0 || n > end-pos || kl > n-offIEKey {
			return 0, formatErr(off+int64(pos), "index entry length %d (key %d) invalid", n, kl)
		}
		if flags&ieEnd != 0 {
			return -1, nil
		}
		if _, fn, ok := fileName(b[pos+offIEKey : pos+offIEKey+kl]); ok && strings.EqualFold(fn, name) {
			return int64(le.Uint64(b[pos+offIEFileRef:]) & mrefMask), nil
		}
		pos += n
	}
}
