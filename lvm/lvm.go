// Package lvm reads LVM2 physical volumes: the container layer between a
// partition and the filesystems inside it. It finds the PV label, the
// metadata areas and the newest committed VG metadata, and maps each
// logical volume onto the PVs that hold it, so that the LV can be read as
// a volume of its own and its filesystem's free map projected back onto
// the PV (Volume.Project). Extents of a PV that no LV uses are free
// (VG.FreeExtents).
//
// In the pipeline: source finds a PV in a partition (or a bare disk),
// Read gives its VG, and each LV's bytes go through the same filesystem
// probes as a partition.
//
// Rules: only "striped" segments (linear is stripe_count 1) are mapped; an
// LV with any other segment type (thin, snapshot, RAID, mirror, cache,
// VDO, integrity, unknown) and every LV such a segment uses (a snapshot's
// origin, a pool's data) carries a Reason and must pass through. Labels,
// metadata areas and everything outside the extent area are never free. A
// checksum that fails, metadata that does not parse, or limits exceeded
// are errors: the whole PV passes through. Like every parser of prezero,
// it imports only freemap and the standard library, and its errors use
// freemap's scheme.
package lvm

import (
	"io"
	"strings"

	"github.com/prezero/prezero/freemap"
)

// PV is one physical volume as its label and metadata areas describe it.
type PV struct {
	UUID     string // without dashes, as in the label
	DevSize  int64  // bytes, as the label says
	PEStart  int64  // byte offset of the data area (the first extent)
	Metadata []Area // metadata areas (none: the VG text is on other PVs)
	// VG is the newest committed metadata found in this PV's metadata
	// areas, nil if it has none (pvcreate --metadatacopies 0) or its
	// metadata areas are all ignored.
	VG *VG
	// Info is this PV's entry in VG (nil if VG is nil).
	Info  *PVInfo
	Notes []string

	labelSector int64
}

// Probe reports whether an LVM2 label is in one of the first four sectors.
func Probe(r io.ReaderAt, size int64) bool {
	s, _ := findLabel(r, size)
	return s >= 0
}

// Read reads the PV label, its metadata areas, and the newest committed
// VG metadata among them. size is the size of the device holding the PV.
func Read(r io.ReaderAt, size int64) (*PV, error) {
	l, err := readLabel(r, size)
	if err != nil {
		return nil, err
	}
	pv := &PV{UUID: l.uuid, DevSize: l.devSize, Metadata: l.metadata, labelSector: l.sector}
	if len(l.data) != 1 {
		return nil, freemap.Unsupported("lvm: PV %s has %d data areas (one is known)", l.uuid, len(l.data))
	}
	pv.PEStart = l.data[0].Off
	if l.devSize > size {
		pv.Notes = append(pv.Notes, "the PV label says the device is larger than this volume: the PV is truncated")
	}
	var texts [][]byte
	for _, a := range l.metadata {
		t, err := readMDA(r, size, a)
		if err != nil {
			return nil, err
		}
		if t != nil {
			texts = append(texts, t)
		}
	}
	for _, t := range texts {
		vg, err := parseVG(t)
		if err != nil {
			return nil, err
		}
		switch {
		case pv.VG == nil || vg.Seqno > pv.VG.Seqno:
			if pv.VG != nil && pv.VG.ID != vg.ID {
				return nil, freemap.Formatf(0, "lvm: the metadata areas of PV %s name different VGs", l.uuid)
			}
			pv.VG = vg
		case vg.ID != pv.VG.ID:
			return nil, freemap.Formatf(0, "lvm: the metadata areas of PV %s name different VGs", l.uuid)
		}
	}
	if len(texts) > 1 {
		for _, t := range texts {
			if vg, _ := parseVG(t); vg.Seqno != pv.VG.Seqno {
				pv.Notes = append(pv.Notes, "the PV's metadata areas hold different versions; the newest is used")
				break
			}
		}
	}
	if pv.VG != nil {
		if err := pv.bind(pv.VG); err != nil {
			return nil, err
		}
	}
	return pv, nil
}

// bind finds the PV in vg and checks that vg agrees with the label.
func (pv *PV) bind(vg *VG) error {
	info := vg.PV(pv.UUID)
	if info == nil {
		return freemap.Formatf(0, "lvm: VG %s does not list PV %s", vg.Name, pv.UUID)
	}
	if info.PEStart != pv.PEStart {
		return freemap.Formatf(0, "lvm: VG %s puts the first extent of PV %s at byte %d, its label at %d", vg.Name, pv.UUID, info.PEStart, pv.PEStart)
	}
	// The extents must not cover the label or a metadata area: a free
	// extent there would zero them.
	end := info.PEStart + info.PECount*vg.ExtentSize
	if info.PEStart < (pv.labelSector+1)*SectorSize {
		return freemap.Formatf(0, "lvm: PV %s's first extent at byte %d covers its label", pv.UUID, info.PEStart)
	}
	for _, m := range pv.Metadata {
		if m.Off < end && m.Off+m.Size > info.PEStart {
			return freemap.Formatf(m.Off, "lvm: PV %s's extents [%d, %d) overlap its metadata area at byte %d", pv.UUID, info.PEStart, end, m.Off)
		}
	}
	pv.VG, pv.Info = vg, info
	return nil
}

// Bind attaches metadata found on another PV of the same VG to a PV that
// has none of its own (or an older copy). It fails if vg does not list pv.
func (pv *PV) Bind(vg *VG) error { return pv.bind(vg) }

// DMName returns the name device-mapper gives an LV: VG and LV joined by
// a dash, with every dash inside them doubled (vg-1/root → vg--1-root).
func DMName(vg, lv string) string {
	return strings.ReplaceAll(vg, "-", "--") + "-" + strings.ReplaceAll(lv, "-", "--")
}

// LabelUUID returns the PV UUID from the label alone, for a PV whose
// metadata cannot be read.
func LabelUUID(r io.ReaderAt, size int64) (string, error) {
	l, err := readLabel(r, size)
	if err != nil {
		return "", err
	}
	return l.uuid, nil
}
