package ntfsmap

import (
	"errors"
	"sort"
)

// run maps n clusters starting at vcn to lcn; lcn is -1 for a sparse run.
type run struct {
	vcn, lcn, n int64
}

// maxVCN caps the virtual cluster numbers of a runlist, so that vcn*clusterSize
// cannot overflow an int64 for any valid cluster size.
const maxVCN = 1 << 40

// decodeRunlist decodes NTFS mapping pairs starting at virtual cluster
// startVCN. Each pair is a header byte (low nibble: size of the length,
// high nibble: size of the signed LCN delta; zero ends the list), the
// length, and the delta (absent for a sparse run). Every run must be
// non-empty and lie inside the volume's clusters.
func decodeRunlist(b []byte, startVCN, clusters int64) ([]run, error) {
	var runs []run
	vcn, lcn := startVCN, int64(0)
	for pos := 0; ; {
		if pos >= len(b) {
			return nil, errors.New("runlist has no terminator")
		}
		h := b[pos]
		if h == 0 {
			return runs, nil
		}
		ls, os := int(h&0x0F), int(h>>4)
		if ls == 0 || ls > 8 || os > 8 {
			return nil, errors.New("runlist header byte has invalid sizes")
		}
		pos++
		if ls+os > len(b)-pos {
			return nil, errors.New("runlist pair runs past the attribute")
		}
		n := signed(b[pos : pos+ls])
		pos += ls
		if n <= 0 || n > maxVCN-vcn {
			return nil, errors.New("runlist run has invalid length")
		}
		r := run{vcn: vcn, lcn: -1, n: n}
		if os > 0 {
			d := signed(b[pos : pos+os])
			pos += os
			// Check the range before adding, so the sum cannot overflow.
			if (d > 0 && d > clusters-lcn) || (d < 0 && -d > lcn) {
				return nil, errors.New("runlist run starts outside the volume")
			}
			lcn += d
			if lcn < 0 || n > clusters-lcn {
				return nil, errors.New("runlist run lies outside the volume")
			}
			r.lcn = lcn
		}
		runs = append(runs, r)
		vcn += n
	}
}

// signed decodes a little-endian two's complement integer of 1..8 bytes.
func signed(b []byte) int64 {
	var v uint64
	for i := len(b) - 1; i >= 0; i-- {
		v = v<<8 | uint64(b[i])
	}
	if sh := 64 - 8*len(b); sh > 0 {
		return int64(v<<sh) >> sh
	}
	return int64(v)
}

// runsEnd returns the first VCN after runs, which start at vcn.
func runsEnd(runs []run, vcn int64) int64 {
	if len(runs) == 0 {
		return vcn
	}
	last := runs[len(runs)-1]
	return last.vcn + last.n
}

// readAttr reads len(p) bytes at offset off of the attribute's data. Every
// byte must lie inside the initialized data and, for a non-resident
// attribute, inside a non-sparse run of this extent: anything else is an
// error, never zeros.
func (v *volume) readAttr(a *attr, p []byte, off int64) error {
	if off < 0 || off > a.initSize || int64(len(p)) > a.initSize-off {
		return formatErr(a.off, "attribute 0x%x: read of %d bytes at %d past its initialized size %d", a.typ, len(p), off, a.initSize)
	}
	if !a.nonRes {
		copy(p, a.value[off:])
		return nil
	}
	if err := a.loadRuns(v.boot.clusters); err != nil {
		return err
	}
	cs := int64(v.boot.clusterSize)
	for len(p) > 0 {
		vcn := off / cs
		i := sort.Search(len(a.runs), func(i int) bool { return a.runs[i].vcn+a.runs[i].n > vcn })
		if i == len(a.runs) || a.runs[i].vcn > vcn {
			return formatErr(a.off, "attribute 0x%x: vcn %d is not in this extent's runlist", a.typ, vcn)
		}
		r := a.runs[i]
		if r.lcn < 0 {
			return formatErr(a.off, "attribute 0x%x: vcn %d is sparse", a.typ, vcn)
		}
		k := min(int64(len(p)), (r.vcn+r.n)*cs-off)
		if err := v.readFull(p[:k], (r.lcn+vcn-r.vcn)*cs+off%cs); err != nil {
			return err
		}
		p = p[k:]
		off += k
	}
	return nil
}
