package lvm

import (
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/prezero/prezero/freemap"
)

// Limits on what a VG may declare; beyond them the VG is refused.
const (
	maxPVs      = 4096
	maxLVs      = 1 << 14
	maxSegments = 1 << 14 // per LV
	maxStripes  = 128     // per segment
)

// VG is a volume group as its newest metadata describes it.
type VG struct {
	Name       string
	ID         string // UUID without dashes
	Seqno      int64  // metadata version: higher is newer
	ExtentSize int64  // bytes
	PVs        []*PVInfo
	LVs        []*LV
}

// PVInfo is one physical volume of the VG.
type PVInfo struct {
	Name    string // name inside the metadata: "pv0", "pv1", ...
	ID      string // UUID without dashes, as in the PV's label
	PEStart int64  // byte offset of the first extent on the PV
	PECount int64  // number of extents
}

// LV is one logical volume.
type LV struct {
	Name     string
	Visible  bool
	Size     int64 // bytes
	Segments []Segment
	// Reason is why the LV cannot be read as a plain volume ("" if it
	// can): a segment type other than striped/linear, or the LV is used
	// by another LV (a snapshot's origin or COW store, a thin pool's data,
	// a mirror or RAID leg ...). Such an LV passes through.
	Reason string
}

// Segment is a range of an LV's extents.
type Segment struct {
	StartExtent int64
	ExtentCount int64
	Type        string   // "striped" for linear and striped segments
	StripeSize  int64    // bytes; 0 for a single stripe
	Stripes     []Stripe // for "striped": stripe_count (PV, extent) pairs
}

// Stripe is one area of a striped segment: ExtentCount/len(Stripes)
// extents on PV starting at extent Extent.
type Stripe struct {
	PV     string // PVInfo.Name
	Extent int64
}

// parseVG turns a metadata text into a VG.
func parseVG(text []byte) (*VG, error) {
	top, err := parseConfig(text)
	if err != nil {
		return nil, err
	}
	var vg *VG
	for _, k := range top.Keys {
		if s := top.Vals[k].Sec; s != nil {
			if vg != nil {
				return nil, freemap.Formatf(0, "lvm: metadata text holds more than one volume group")
			}
			if vg, err = readVG(k, s); err != nil {
				return nil, err
			}
		}
	}
	if vg == nil {
		return nil, freemap.Formatf(0, "lvm: metadata text holds no volume group")
	}
	return vg, nil
}

func bad(format string, args ...any) error {
	return freemap.Formatf(0, "lvm: metadata: "+format, args...)
}

func readVG(name string, s *section) (*VG, error) {
	vg := &VG{Name: name}
	id, ok := s.str("id")
	if !ok {
		return nil, bad("VG %s has no id", name)
	}
	vg.ID = strings.ReplaceAll(id, "-", "")
	if vg.Seqno, ok = s.num("seqno"); !ok {
		return nil, bad("VG %s has no seqno", name)
	}
	if f, ok := s.str("format"); ok && f != "lvm2" {
		return nil, freemap.Unsupported("lvm: VG %s has format %q (only lvm2 is known)", name, f)
	}
	ext, ok := s.num("extent_size")
	if !ok || ext <= 0 || ext > 1<<32 {
		return nil, bad("VG %s: bad extent_size %d", name, ext)
	}
	vg.ExtentSize = ext * SectorSize
	pvs := s.sub("physical_volumes")
	if pvs == nil {
		return nil, bad("VG %s has no physical_volumes", name)
	}
	if len(pvs.Keys) > maxPVs {
		return nil, bad("VG %s lists %d PVs", name, len(pvs.Keys))
	}
	byName := map[string]*PVInfo{}
	for _, k := range pvs.Keys {
		p := pvs.Vals[k].Sec
		if p == nil {
			return nil, bad("PV %s is not a section", k)
		}
		pv := &PVInfo{Name: k}
		id, ok := p.str("id")
		pv.ID = strings.ReplaceAll(id, "-", "")
		start, ok2 := p.num("pe_start")
		count, ok3 := p.num("pe_count")
		if !ok || !ok2 || !ok3 || start < 0 || count < 0 || start > math.MaxInt64/SectorSize/2 ||
			count > (math.MaxInt64/2-start*SectorSize)/vg.ExtentSize {
			return nil, bad("PV %s: missing or bad id, pe_start or pe_count", k)
		}
		pv.PEStart, pv.PECount = start*SectorSize, count
		vg.PVs = append(vg.PVs, pv)
		byName[k] = pv
	}
	if lvs := s.sub("logical_volumes"); lvs != nil {
		if len(lvs.Keys) > maxLVs {
			return nil, bad("VG %s lists %d LVs", name, len(lvs.Keys))
		}
		for _, k := range lvs.Keys {
			l := lvs.Vals[k].Sec
			if l == nil {
				return nil, bad("LV %s is not a section", k)
			}
			lv, err := readLV(vg, byName, k, l)
			if err != nil {
				return nil, err
			}
			vg.LVs = append(vg.LVs, lv)
		}
	}
	if err := markUsed(vg, s.sub("logical_volumes")); err != nil {
		return nil, err
	}
	if err := checkOverlaps(vg); err != nil {
		return nil, err
	}
	return vg, nil
}

func contains(list []string, s string) bool {
	for _, e := range list {
		if e == s {
			return true
		}
	}
	return false
}

func readLV(vg *VG, pvs map[string]*PVInfo, name string, s *section) (*LV, error) {
	lv := &LV{Name: name}
	st, _ := s.strs("status")
	lv.Visible = contains(st, "VISIBLE")
	var segs []*section
	for _, k := range s.Keys {
		if strings.HasPrefix(k, "segment") && k != "segment_count" {
			sec := s.Vals[k].Sec
			if sec == nil {
				return nil, bad("LV %s: %s is not a section", name, k)
			}
			segs = append(segs, sec)
		}
	}
	if n, ok := s.num("segment_count"); !ok || n != int64(len(segs)) || n > maxSegments {
		return nil, bad("LV %s: segment_count %d, %d segments", name, n, len(segs))
	}
	var extents int64
	for i, sec := range segs {
		seg, err := readSegment(vg, pvs, name, i+1, sec)
		if err != nil {
			return nil, err
		}
		if seg.Type != "striped" && lv.Reason == "" {
			lv.Reason = segmentReason(seg.Type)
		}
		lv.Segments = append(lv.Segments, seg)
		extents += seg.ExtentCount
	}
	sort.Slice(lv.Segments, func(i, j int) bool { return lv.Segments[i].StartExtent < lv.Segments[j].StartExtent })
	var next int64
	for _, seg := range lv.Segments {
		if seg.StartExtent != next {
			return nil, bad("LV %s: segments leave a gap or overlap at extent %d", name, next)
		}
		next += seg.ExtentCount
	}
	if extents > math.MaxInt64/vg.ExtentSize {
		return nil, bad("LV %s: %d extents", name, extents)
	}
	lv.Size = extents * vg.ExtentSize
	return lv, nil
}

// segmentReason says why a segment type passes through.
func segmentReason(t string) string {
	switch {
	case t == "thin-pool":
		return "thin pool"
	case t == "thin":
		return "thin volume (its blocks live in a thin pool)"
	case t == "snapshot":
		return "snapshot (copy-on-write)"
	case strings.HasPrefix(t, "raid"):
		return "RAID (" + t + ")"
	case t == "mirror":
		return "mirror"
	case t == "cache", t == "cache-pool", t == "writecache":
		return "cache (" + t + ")"
	case t == "vdo", t == "vdo-pool":
		return "VDO (" + t + ")"
	case t == "integrity":
		return "integrity"
	case t == "error", t == "zero":
		return "segment type " + t + " (no data on disk)"
	}
	return fmt.Sprintf("unknown segment type %q", t)
}

func readSegment(vg *VG, pvs map[string]*PVInfo, lv string, k int, s *section) (Segment, error) {
	var seg Segment
	var ok1, ok2 bool
	seg.StartExtent, ok1 = s.num("start_extent")
	seg.ExtentCount, ok2 = s.num("extent_count")
	seg.Type, _ = s.str("type")
	if !ok1 || !ok2 || seg.StartExtent < 0 || seg.ExtentCount <= 0 || seg.StartExtent > math.MaxInt64/4 ||
		seg.ExtentCount > math.MaxInt64/4 || seg.Type == "" {
		return seg, bad("LV %s segment %d: bad start_extent, extent_count or type", lv, k)
	}
	if seg.Type != "striped" {
		return seg, nil
	}
	n, ok := s.num("stripe_count")
	if !ok || n < 1 || n > maxStripes || seg.ExtentCount%n != 0 {
		return seg, bad("LV %s segment %d: stripe_count %d for %d extents", lv, k, n, seg.ExtentCount)
	}
	if n > 1 {
		ss, ok := s.num("stripe_size")
		if !ok || ss <= 0 || ss&(ss-1) != 0 || ss*SectorSize > vg.ExtentSize || vg.ExtentSize%(ss*SectorSize) != 0 {
			return seg, bad("LV %s segment %d: stripe_size %d with extent size %d", lv, k, ss, vg.ExtentSize/SectorSize)
		}
		seg.StripeSize = ss * SectorSize
	}
	arr := s.get("stripes")
	if arr == nil || !arr.IsArr || int64(len(arr.Arr)) != 2*n {
		return seg, bad("LV %s segment %d: stripes does not list %d (PV, extent) pairs", lv, k, n)
	}
	per := seg.ExtentCount / n
	for i := int64(0); i < n; i++ {
		pvName, ext := arr.Arr[2*i], arr.Arr[2*i+1]
		pv := pvs[pvName.Str]
		if !pvName.IsStr || !ext.IsInt || pv == nil || ext.Int < 0 || ext.Int > pv.PECount || per > pv.PECount-ext.Int {
			return seg, bad("LV %s segment %d: stripe %d (%v, %v) is not inside a PV of the VG", lv, k, i, pvName, ext)
		}
		seg.Stripes = append(seg.Stripes, Stripe{PV: pvName.Str, Extent: ext.Int})
	}
	return seg, nil
}

// markUsed gives a Reason to every LV that another LV's non-striped
// segment names (a snapshot's origin and COW store, a thin pool's data and
// metadata, RAID images, mirror legs and logs, a cache's origin ...): its
// blocks are read through that other LV, so they must pass through whole.
// Names are matched in every string of such a segment, recursively. Such a
// segment that names a PV (its extents in a layout prezero does not know)
// makes the whole VG unsupported: its free extents could not be trusted.
func markUsed(vg *VG, lvs *section) error {
	if lvs == nil {
		return nil
	}
	byName := map[string]*LV{}
	for _, lv := range vg.LVs {
		byName[lv.Name] = lv
	}
	pvNames := map[string]bool{}
	for _, p := range vg.PVs {
		pvNames[p.Name] = true
	}
	var err error
	var walk func(user, key string, v *value, depth int)
	walk = func(user, key string, v *value, depth int) {
		switch {
		case depth > maxDepth:
		case v.IsStr:
			if pvNames[v.Str] && err == nil {
				err = freemap.Unsupported("lvm: LV %s (%s) places extents on %s in a layout prezero does not know", user, byName[user].Reason, v.Str)
			}
			if lv := byName[v.Str]; lv != nil && lv.Name != user && lv.Reason == "" {
				lv.Reason = usedReason(user, byName[user].Reason, key)
			}
		case v.IsArr:
			for i := range v.Arr {
				walk(user, key, &v.Arr[i], depth+1)
			}
		case v.Sec != nil:
			for _, k := range v.Sec.Keys {
				walk(user, k, v.Sec.Vals[k], depth+1)
			}
		}
	}
	for _, k := range lvs.Keys {
		lv := byName[k]
		if lv == nil || lv.Reason == "" {
			continue
		}
		for _, sk := range lvs.Vals[k].Sec.Keys {
			seg := lvs.Vals[k].Sec.Vals[sk].Sec
			if seg == nil {
				continue
			}
			if t, _ := seg.str("type"); t == "striped" {
				continue
			}
			walk(k, "", lvs.Vals[k].Sec.Vals[sk], 0)
		}
	}
	return err
}

// usedReason says why an LV that user's segment names under key passes
// through.
func usedReason(user, userReason, key string) string {
	switch {
	case strings.HasPrefix(userReason, "snapshot") && key == "origin":
		return "origin of snapshot " + user + " (the snapshot reads its unchanged chunks from it)"
	case strings.HasPrefix(userReason, "snapshot") && key == "cow_store":
		return "copy-on-write store of snapshot " + user
	}
	return "used by " + user + " (" + userReason + ")"
}

// checkOverlaps refuses a VG in which two stripe areas share an extent.
func checkOverlaps(vg *VG) error {
	type area struct {
		from, to int64
		lv       string
	}
	per := map[string][]area{}
	for _, lv := range vg.LVs {
		for _, seg := range lv.Segments {
			if len(seg.Stripes) == 0 {
				continue
			}
			n := seg.ExtentCount / int64(len(seg.Stripes))
			for _, st := range seg.Stripes {
				per[st.PV] = append(per[st.PV], area{st.Extent, st.Extent + n, lv.Name})
			}
		}
	}
	for pv, as := range per {
		sort.Slice(as, func(i, j int) bool { return as[i].from < as[j].from })
		for i := 1; i < len(as); i++ {
			if as[i].from < as[i-1].to {
				return bad("LVs %s and %s share extent %d of %s", as[i-1].lv, as[i].lv, as[i].from, pv)
			}
		}
	}
	return nil
}

// PV returns the PV of the VG with the given UUID (without dashes), or nil.
func (vg *VG) PV(id string) *PVInfo {
	for _, p := range vg.PVs {
		if p.ID == id {
			return p
		}
	}
	return nil
}

// FreeExtents returns the extents of PV pv that no LV uses, as byte
// ranges of a device of devSize bytes: they hold only deleted LVs' data.
// Labels, metadata areas, the gap before pe_start and anything after the
// last extent are not in it.
func (vg *VG) FreeExtents(pv *PVInfo, devSize int64) *freemap.Map {
	type span struct{ from, to int64 }
	var spans []span
	for _, lv := range vg.LVs {
		for _, seg := range lv.Segments {
			if len(seg.Stripes) == 0 && seg.Type != "striped" {
				continue
			}
			n := seg.ExtentCount / int64(len(seg.Stripes))
			for _, st := range seg.Stripes {
				if st.PV == pv.Name {
					spans = append(spans, span{st.Extent, st.Extent + n})
				}
			}
		}
	}
	sort.Slice(spans, func(i, j int) bool { return spans[i].from < spans[j].from })
	b := freemap.NewBuilder(devSize)
	next := int64(0)
	add := func(from, to int64) {
		if to > from {
			b.Add(pv.PEStart+from*vg.ExtentSize, (to-from)*vg.ExtentSize)
		}
	}
	for _, s := range spans {
		add(next, s.from)
		next = max(next, s.to)
	}
	add(next, pv.PECount)
	return b.Map()
}
