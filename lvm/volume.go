package lvm

import (
	"fmt"
	"io"
	"sort"

	"github.com/prezero/prezero/freemap"
)

// Volume is an LV assembled from the PVs that hold it: an io.ReaderAt over
// the LV's bytes, and the way back from LV offsets to PV offsets.
type Volume struct {
	size int64
	segs []vseg
	pvs  map[string]Device
}

// Device is a reader of the device holding a PV, and its size.
type Device struct {
	R    io.ReaderAt
	Size int64
}

// vseg is a segment in bytes: chunk-sized stripes round-robin over areas.
type vseg struct {
	off, len int64 // LV byte range
	chunk    int64 // stripe size (len/len(areas) for a single stripe)
	areas    []varea
}

type varea struct {
	pv  string
	off int64 // byte offset of the area on the PV's device
}

var _ io.ReaderAt = (*Volume)(nil)

// Open assembles lv from its PVs: pvs maps PVInfo.Name to the device
// holding that PV. It fails if a segment is not striped, or a PV is
// missing or too short to hold the LV's extents. An LV with a Reason whose
// segments are all striped (a snapshot's origin) opens: its bytes are
// readable, they just must not be zeroed.
func (vg *VG) Open(lv *LV, pvs map[string]Device) (*Volume, error) {
	for _, seg := range lv.Segments {
		if seg.Type != "striped" {
			return nil, freemap.Unsupported("lvm: LV %s/%s: %s", vg.Name, lv.Name, lv.Reason)
		}
	}
	v := &Volume{size: lv.Size, pvs: pvs}
	byName := map[string]*PVInfo{}
	for _, p := range vg.PVs {
		byName[p.Name] = p
	}
	for _, seg := range lv.Segments {
		n := int64(len(seg.Stripes))
		s := vseg{off: seg.StartExtent * vg.ExtentSize, len: seg.ExtentCount * vg.ExtentSize}
		s.chunk = seg.StripeSize
		if n == 1 {
			s.chunk = s.len
		}
		for _, st := range seg.Stripes {
			d, ok := pvs[st.PV]
			if !ok || d.R == nil {
				return nil, freemap.Unsupported("lvm: LV %s/%s has extents on PV %s (%s), which is not in this source", vg.Name, lv.Name, st.PV, byName[st.PV].ID)
			}
			a := varea{st.PV, byName[st.PV].PEStart + st.Extent*vg.ExtentSize}
			if a.off+s.len/n > d.Size {
				return nil, freemap.Unsupported("lvm: LV %s/%s has extents past the end of PV %s: the PV is truncated", vg.Name, lv.Name, st.PV)
			}
			s.areas = append(s.areas, a)
		}
		v.segs = append(v.segs, s)
	}
	return v, nil
}

// Size returns the LV's size in bytes.
func (v *Volume) Size() int64 { return v.size }

// locate returns the PV and PV offset of LV byte off, and how many bytes
// from there are contiguous on that PV.
func (v *Volume) locate(off int64) (pv string, pvOff, run int64) {
	i := sort.Search(len(v.segs), func(i int) bool { return v.segs[i].off+v.segs[i].len > off })
	s := v.segs[i]
	rel := off - s.off
	n := int64(len(s.areas))
	row, r := rel/(s.chunk*n), rel%(s.chunk*n)
	a := s.areas[r/s.chunk]
	inner := r % s.chunk
	return a.pv, a.off + row*s.chunk + inner, s.chunk - inner
}

// ReadAt implements io.ReaderAt over the LV.
func (v *Volume) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("lvm: negative offset %d", off)
	}
	if off >= v.size {
		return 0, io.EOF
	}
	want := len(p)
	if rem := v.size - off; int64(len(p)) > rem {
		p = p[:rem]
	}
	n := 0
	for n < len(p) {
		pv, pvOff, run := v.locate(off + int64(n))
		chunk := p[n:]
		if int64(len(chunk)) > run {
			chunk = chunk[:run]
		}
		k, err := v.pvs[pv].R.ReadAt(chunk, pvOff)
		n += k
		if k < len(chunk) {
			if err == nil || err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return n, err
		}
	}
	if n < want {
		return n, io.EOF
	}
	return n, nil
}

// Project adds to b (a builder over the device of PV pv) the PV byte
// ranges that correspond to the free extents of free, a map of the LV.
// A free LV range maps onto each stripe area as one contiguous range.
func (v *Volume) Project(free *freemap.Map, pv string, b *freemap.Builder) {
	exts := free.Extents()
	for _, s := range v.segs {
		n := int64(len(s.areas))
		// the free extents overlapping this segment
		i := sort.Search(len(exts), func(i int) bool { return exts[i].End() > s.off })
		for ; i < len(exts) && exts[i].Off < s.off+s.len; i++ {
			from := max(exts[i].Off, s.off) - s.off
			to := min(exts[i].End(), s.off+s.len) - s.off
			for k, a := range s.areas {
				if a.pv != pv {
					continue
				}
				lo, hi := stripeOff(from, int64(k), s.chunk, n), stripeOff(to, int64(k), s.chunk, n)
				if hi > lo {
					b.Add(a.off+lo, hi-lo)
				}
			}
		}
	}
}

// stripeOff returns the offset inside stripe area k of the first byte at
// or after segment offset x that lies on stripe k. The bytes of stripe k
// within [x, y) are then exactly [stripeOff(x), stripeOff(y)) of its area.
func stripeOff(x, k, chunk, n int64) int64 {
	row, r := x/(chunk*n), x%(chunk*n)
	return row*chunk + min(max(r-k*chunk, 0), chunk)
}
