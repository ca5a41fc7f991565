package ntfsmap

import (
	"encoding/binary"
	"fmt"
	"sort"

	"github.com/prezero/prezero/freemap"
)

// The cross-check walks every in-use MFT record (base and extension
// records, so attributes spread by an $ATTRIBUTE_LIST are all seen) and
// keeps used every cluster that a non-resident attribute's runlist
// references but $Bitmap marks free, as ntfsclone does before it trusts
// $Bitmap. $MFT itself is read through its whole runlist, following its own
// $ATTRIBUTE_LIST when it is fragmented.

// CrossCheckResult says what the cross-check found.
type CrossCheckResult struct {
	Done       bool   // the cross-check ran over the whole MFT
	Records    int64  // in-use records read
	Conflicts  int64  // clusters referenced by a record but marked free, kept used
	Unreadable int64  // in-use records or runlists that could not be parsed
	Incomplete string // why the walk stopped early, if it did
}

// attribute list entry layout.
const (
	alType    = 0x00 // u32
	alLength  = 0x04 // u16
	alNameLen = 0x06 // u8
	alLowVCN  = 0x08 // u64
	alRef     = 0x10 // u64
	alMin     = 0x1A

	maxAttrList = 16 << 20 // bytes of $MFT's attribute list read at most
	mftBatch    = 1 << 20
)

// alEntry is one $ATTRIBUTE_LIST entry: an attribute of type typ (unnamed
// if !named) whose extent starting at lowVCN lives in MFT record ref.
type alEntry struct {
	typ    uint32
	named  bool
	lowVCN int64
	ref    int64
}

// attrList reads and decodes the $ATTRIBUTE_LIST among as, if any.
func (v *volume) attrList(as []*attr) ([]alEntry, error) {
	al := find(as, attrAttributeList, "")
	if al == nil {
		return nil, nil
	}
	if al.dataSize > maxAttrList {
		return nil, formatErr(al.off, "attribute list of %d bytes", al.dataSize)
	}
	list := make([]byte, al.initSize)
	if err := v.readAttr(al, list, 0); err != nil {
		return nil, err
	}
	le := binary.LittleEndian
	var out []alEntry
	for pos := 0; pos+alMin <= len(list); {
		n := int(le.Uint16(list[pos+alLength:]))
		if n < alMin || pos+n > len(list) {
			return nil, formatErr(al.off, "attribute list entry at %d has length %d", pos, n)
		}
		e := list[pos : pos+n]
		pos += n
		out = append(out, alEntry{
			typ:    le.Uint32(e[alType:]),
			named:  e[alNameLen] != 0,
			lowVCN: int64(le.Uint64(e[alLowVCN:])),
			ref:    int64(le.Uint64(e[alRef:]) & mrefMask),
		})
	}
	return out, nil
}

// extension reads MFT record ref through the runs of mft and parses its
// attributes (it may be a base or an extension record).
func (v *volume) extension(mft *attr, ref int64) (*fileRecord, []*attr, error) {
	rs := int64(v.boot.recordSize)
	b := make([]byte, rs)
	if err := v.readAttr(mft, b, ref*rs); err != nil {
		return nil, nil, fmt.Errorf("ntfs: reading MFT record %d: %w", ref, err)
	}
	off := v.attrOffset(mft, ref*rs)
	if err := applyFixup(b, off); err != nil {
		return nil, nil, err
	}
	fr, err := parseFileRecord(b, ref, off)
	if err != nil {
		return nil, nil, err
	}
	if fr.flags&fileFlagInUse == 0 {
		return nil, nil, formatErr(off, "MFT record %d named in an attribute list is not in use", ref)
	}
	as, err := fr.attrs()
	if err != nil {
		return nil, nil, err
	}
	return fr, as, nil
}

// mftData returns $MFT's unnamed $DATA with its whole runlist: the first
// extent from record 0, plus every extent its $ATTRIBUTE_LIST names.
func (v *volume) mftData() (*attr, error) {
	_, as, err := v.record(recMFT)
	if err != nil {
		return nil, err
	}
	list, err := v.attrList(as)
	if err != nil || list == nil {
		return v.mft, err
	}
	full := *v.mft
	full.runs = append([]run(nil), v.mft.runs...)
	for _, e := range list {
		if e.typ != attrData || e.named || e.lowVCN == v.mft.lowVCN {
			continue
		}
		_, xs, err := v.extension(&full, e.ref)
		if err != nil {
			return nil, err
		}
		var ext *attr
		for _, a := range xs {
			if a.typ == attrData && a.name == "" && a.nonRes && a.lowVCN == e.lowVCN {
				ext = a
			}
		}
		if ext == nil {
			return nil, formatErr(v.mft.off, "$MFT extension record %d has no $DATA extent at vcn %d", e.ref, e.lowVCN)
		}
		if err := ext.loadRuns(v.boot.clusters); err != nil {
			return nil, err
		}
		full.runs = append(full.runs, ext.runs...)
	}
	sort.Slice(full.runs, func(i, j int) bool { return full.runs[i].vcn < full.runs[j].vcn })
	next := int64(0)
	for _, r := range full.runs {
		if r.vcn != next {
			return nil, formatErr(v.mft.off, "$MFT runlist has a gap or overlap at vcn %d", next)
		}
		next += r.n
	}
	full.highVCN = next - 1
	return &full, nil
}

// crossCheck returns free without the clusters that in-use MFT records
// reference.
func (v *volume) crossCheck(free *freemap.Map) (*freemap.Map, CrossCheckResult) {
	var res CrossCheckResult
	mft, err := v.mftData()
	if err != nil {
		res.Incomplete = fmt.Sprintf("$MFT could not be read whole: %v", err)
		return free, res
	}
	cs := int64(v.boot.clusterSize)
	rs := int64(v.boot.recordSize)
	conflicts := freemap.NewBuilder(free.Size())
	ref := func(lcn, n int64) {
		off, end := lcn*cs, (lcn+n)*cs
		for e, ok := free.Next(off); ok && e.Off < end; e, ok = free.Next(e.End()) {
			a, b := max(e.Off, off), min(e.End(), end)
			conflicts.Add(a, b-a)
		}
	}
	records := mft.initSize / rs
	buf := make([]byte, max(mftBatch/rs, 1)*rs)
	for first := int64(0); first < records; {
		k := min(int64(len(buf))/rs, records-first)
		p := buf[:k*rs]
		if err := v.readAttr(mft, p, first*rs); err != nil {
			res.Incomplete = fmt.Sprintf("reading MFT records %d..%d: %v", first, first+k-1, err)
			break
		}
		for i := range k {
			num := first + i
			b := p[i*rs : (i+1)*rs]
			if string(b[:4]) != "FILE" || binary.LittleEndian.Uint16(b[offFileFlags:])&fileFlagInUse == 0 {
				continue // never used, free, or not a record: nothing references through it
			}
			off := v.attrOffset(mft, num*rs)
			if applyFixup(b, off) != nil {
				res.Unreadable++
				continue
			}
			fr, err := parseFileRecord(b, num, off)
			if err != nil {
				res.Unreadable++
				continue
			}
			res.Records++
			as, err := fr.attrs()
			if err != nil {
				res.Unreadable++
				continue
			}
			for _, a := range as {
				if !a.nonRes {
					continue
				}
				runs, err := decodeRunlist(a.rawRuns, a.lowVCN, v.boot.clusters)
				if err != nil {
					res.Unreadable++
					continue
				}
				for _, r := range runs {
					if r.lcn >= 0 {
						ref(r.lcn, r.n)
					}
				}
			}
		}
		first += k
	}
	res.Done = res.Incomplete == ""
	conf := conflicts.Map()
	defer conf.Release()
	if conf.FreeBytes() == 0 {
		return free, res
	}
	res.Conflicts = conf.FreeBytes() / cs
	return free.Without(conf), res
}
