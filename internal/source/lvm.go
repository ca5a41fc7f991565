package source

import (
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/prezero/prezero/freemap"
	"github.com/prezero/prezero/internal/layout"
	"github.com/prezero/prezero/lvm"
	"github.com/prezero/prezero/stream"
)

// pvFS is what map shows as the filesystem of an LVM PV (blkid's name).
const pvFS = "LVM2_member"

// LVFileName is the mount's file name of an LV: lv/VG-LV.img, with the
// VG-LV part named as device-mapper names it (dashes doubled).
func LVFileName(lv *Part) string { return "lv/" + lv.Name + ".img" }

// pvPart is a partition holding an LVM PV.
type pvPart struct {
	part *Part
	sec  io.ReaderAt
	n    int64
	pv   *lvm.PV
}

// vgGroup is a VG and the PVs of the source that belong to it.
type vgGroup struct {
	vg      *lvm.VG
	members []*pvPart
	seqnos  map[int64]bool
	reason  string // non-empty: every member passes through
}

// mapLVM maps every partition that mapPart found to be an LVM PV: PVs are
// grouped into VGs by their metadata, each LV that lies wholly in the
// source and uses only linear or striped segments is mapped with the probe
// table, and each PV's free extents plus its LVs' free space become the
// partition's map. It returns the LVs, which it also hangs under their
// partitions (Part.Volumes).
func mapLVM(r io.ReaderAt, size int64, parts []*Part, meta []layout.Extent, opt Options) []*Part {
	var pvs []*pvPart
	broken := map[string]*Part{} // PV UUID → partition whose PV cannot be read
	for _, p := range parts {
		if p.FS != pvFS || p.Container || p.Problem != "" {
			continue
		}
		start, n := p.Clip(size)
		pp := &pvPart{part: p, sec: io.NewSectionReader(r, start, n), n: n}
		pv, err := lvm.Read(pp.sec, n)
		if err != nil {
			p.Reason = "LVM2 PV: " + err.Error()
			if id, err := lvm.LabelUUID(pp.sec, n); err == nil {
				broken[id] = p
			}
			continue
		}
		pp.pv = pv
		p.Notes = append(p.Notes, pv.Notes...)
		pvs = append(pvs, pp)
	}
	// Group by VG; a PV without metadata joins the VG that lists it.
	groups := map[string]*vgGroup{}
	var order []string
	for _, pp := range pvs {
		vg := pp.pv.VG
		if vg == nil {
			continue
		}
		g := groups[vg.ID]
		if g == nil {
			g = &vgGroup{seqnos: map[int64]bool{}}
			groups[vg.ID] = g
			order = append(order, vg.ID)
		}
		g.members = append(g.members, pp)
		g.seqnos[vg.Seqno] = true
		if g.vg == nil || vg.Seqno > g.vg.Seqno {
			g.vg = vg
		}
	}
	for _, pp := range pvs {
		if pp.pv.VG != nil {
			continue
		}
		for _, id := range order {
			if groups[id].vg.PV(pp.pv.UUID) != nil {
				groups[id].members = append(groups[id].members, pp)
				break
			}
		}
	}
	var lvs []*Part
	for _, pp := range pvs {
		if pp.pv.VG == nil && !inGroup(groups, pp) {
			pp.part.Reason = fmt.Sprintf("LVM2 PV %s has no metadata area, and no PV in this source holds its VG's metadata", pp.pv.UUID)
		}
	}
	for _, id := range order {
		lvs = append(lvs, mapVG(groups[id], broken, meta, opt)...)
	}
	return lvs
}

func inGroup(groups map[string]*vgGroup, pp *pvPart) bool {
	for _, g := range groups {
		for _, m := range g.members {
			if m == pp {
				return true
			}
		}
	}
	return false
}

// mapVG maps one VG's LVs and its PVs' partitions.
func mapVG(g *vgGroup, broken map[string]*Part, meta []layout.Extent, opt Options) []*Part {
	vg := g.vg
	if len(g.seqnos) > 1 {
		var ss []string
		for s := range g.seqnos {
			ss = append(ss, fmt.Sprint(s))
		}
		sort.Strings(ss)
		g.reason = fmt.Sprintf("the PVs of VG %s hold different metadata versions (seqno %s); run vgck", vg.Name, strings.Join(ss, ", "))
	}
	// A PV the VG lists that is in this source but unreadable: its
	// metadata may be newer than what the others say.
	for id, p := range broken {
		if vg.PV(id) != nil && g.reason == "" {
			g.reason = fmt.Sprintf("VG %s: its PV %s (partition %d) cannot be read", vg.Name, id, p.Number)
		}
	}
	// The same PV twice (a cloned disk inside the source): which copy
	// holds what is unknown, so nothing of the VG is zeroed.
	seen := map[string]*pvPart{}
	for _, m := range g.members {
		if o := seen[m.pv.UUID]; o != nil && g.reason == "" {
			g.reason = fmt.Sprintf("VG %s: PV %s is in this source twice (partitions %d and %d)", vg.Name, m.pv.UUID, o.part.Number, m.part.Number)
		}
		seen[m.pv.UUID] = m
	}
	devs := map[string]lvm.Device{}
	host := map[string]*pvPart{}
	for _, m := range g.members {
		if err := m.pv.Bind(vg); err != nil && g.reason == "" {
			g.reason = err.Error()
		}
		if m.pv.Info != nil {
			devs[m.pv.Info.Name] = lvm.Device{R: m.sec, Size: m.n}
			host[m.pv.Info.Name] = m
		}
	}
	if g.reason != "" {
		for _, m := range g.members {
			m.part.Reason = "LVM2 " + g.reason
		}
		return nil
	}
	builders := map[string]*freemap.Builder{}
	for _, m := range g.members {
		b := freemap.NewBuilder(m.n)
		fe := vg.FreeExtents(m.pv.Info, m.n)
		b.AddMap(fe, 0)
		fe.Release()
		builders[m.pv.Info.Name] = b
	}
	var out []*Part
	for _, l := range vg.LVs {
		lv := &Part{LV: vg.Name + "/" + l.Name}
		lv.Name = lvm.DMName(vg.Name, l.Name)
		lv.Size = l.Size
		lv.Type, lv.TypeName = lvType(l)
		// The LV hangs under the partition of its first extent, or under
		// the first PV of the VG in the source if that one is elsewhere.
		hostPV := g.members[0]
		if st := firstStripe(l); st != nil && host[st.PV] != nil {
			hostPV = host[st.PV]
			lv.Start = hostPV.part.Start + vg.PV(hostPV.pv.UUID).PEStart + st.Extent*vg.ExtentSize
		}
		lv.Number = hostPV.part.Number
		hostPV.part.Volumes = append(hostPV.part.Volumes, lv)
		out = append(out, lv)

		vol, err := vg.Open(l, devs)
		if err != nil {
			lv.Reason = nonEmpty(l.Reason, strings.TrimPrefix(err.Error(), "lvm: "))
			lv.Free = freemap.NewBuilder(l.Size).Map()
			continue
		}
		if l.Reason != "" {
			// Readable, but others read through it: served unchanged.
			lv.Reason = l.Reason
			lv.Free = freemap.NewBuilder(l.Size).Map()
			lv.Stream = stream.New(vol, l.Size, lv.Free)
			continue
		}
		if lvm.Probe(vol, l.Size) {
			lv.FS = pvFS
			lv.Reason = "an LVM2 PV inside an LV (nested VGs are not mapped)"
			lv.Free = freemap.NewBuilder(l.Size).Map()
			lv.Stream = stream.New(vol, l.Size, lv.Free)
			continue
		}
		mapVolume(lv, vol, l.Size, opt)
		if lv.Zeroed {
			for name, b := range builders {
				vol.Project(lv.Free, name, b)
			}
		}
	}
	for _, m := range g.members {
		p := m.part
		// Partition-table sectors inside the PV (a hostile table) stay.
		p.Free = keepMeta(builders[m.pv.Info.Name].Map(), p.Start, meta)
		p.Stream = stream.New(m.sec, m.n, p.Free)
		p.Zeroed, p.Reason = true, ""
		p.TypeName = nonEmpty(p.TypeName, "LVM")
		if len(g.members) < len(vg.PVs) {
			p.Notes = append(p.Notes, fmt.Sprintf("LVM2 PV of VG %s: only %d of its %d PVs are in this source", vg.Name, len(g.members), len(vg.PVs)))
		}
	}
	return out
}

func nonEmpty(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func firstStripe(l *lvm.LV) *lvm.Stripe {
	if len(l.Segments) == 0 || len(l.Segments[0].Stripes) == 0 {
		return nil
	}
	return &l.Segments[0].Stripes[0]
}

// lvType names an LV's layout for map's TYPE column.
func lvType(l *lvm.LV) (typ, name string) {
	typ = "lvm"
	var kinds []string
	for _, s := range l.Segments {
		k := s.Type
		if k == "striped" {
			k = "linear"
			if len(s.Stripes) > 1 {
				k = fmt.Sprintf("striped x%d", len(s.Stripes))
			}
		}
		if len(kinds) == 0 || kinds[len(kinds)-1] != k {
			kinds = append(kinds, k)
		}
	}
	name = "LV " + strings.Join(kinds, "+")
	if len(l.Segments) > 1 {
		name += fmt.Sprintf(" (%d segments)", len(l.Segments))
	}
	return typ, name
}
