package ntfsmap

import (
	"encoding/binary"
	"unicode/utf16"
)

// Multi-sector record header, shared by FILE, INDX and RSTR records.
const (
	offRecMagic    = 0x00 // [4]byte
	offRecUSAOfs   = 0x04 // u16: offset of the update sequence array
	offRecUSACount = 0x06 // u16: 1 + number of 512-byte blocks

	// The update sequence stride is always 512 bytes, whatever the
	// sector size.
	fixupBlock = 512
)

// FILE record header (MFT record).
const (
	offFileAttrsOfs   = 0x14 // u16: offset of the first attribute
	offFileFlags      = 0x16 // u16
	offFileBytesInUse = 0x18 // u32
	offFileBytesAlloc = 0x1C // u32
	offFileBaseRecord = 0x20 // u64: MFT reference of the base record, 0 for a base record
	offFileRecordNum  = 0x2C // u32: this record's number (NTFS 3.1 layout only)
	fileHeader31      = 0x30 // header size of the NTFS 3.1 layout

	fileFlagInUse = 0x0001
)

// Attribute header.
const (
	offAttrType     = 0x00 // u32
	offAttrLength   = 0x04 // u32
	offAttrNonRes   = 0x08 // u8
	offAttrNameLen  = 0x09 // u8, UTF-16 units
	offAttrNameOfs  = 0x0A // u16
	offAttrFlags    = 0x0C // u16
	offResValueLen  = 0x10 // u32
	offResValueOfs  = 0x14 // u16
	resHeader       = 0x18
	offNonResLowVCN = 0x10 // i64
	offNonResHighVC = 0x18 // i64
	offNonResRuns   = 0x20 // u16: offset of the mapping pairs
	offNonResAlloc  = 0x28 // i64
	offNonResData   = 0x30 // i64
	offNonResInit   = 0x38 // i64
	nonResHeader    = 0x40

	attrEnd           = 0xFFFFFFFF
	attrStandardInfo  = 0x10
	attrAttributeList = 0x20
	attrFileName      = 0x30
	attrVolumeInfo    = 0x70
	attrData          = 0x80
	attrIndexRoot     = 0x90
	attrIndexAlloc    = 0xA0
	attrBitmap        = 0xB0

	attrFlagCompressed = 0x00FF
	attrFlagEncrypted  = 0x4000
	attrFlagSparse     = 0x8000

	// A reference's low 48 bits are the record number.
	mrefMask = 1<<48 - 1
)

// applyFixup checks and undoes the update sequence protection of a
// multi-sector record b, whose length is a multiple of 512. off is b's
// position on the volume, for error messages.
func applyFixup(b []byte, off int64) error {
	if len(b) < fixupBlock || len(b)%fixupBlock != 0 {
		return formatErr(off, "record length %d is not a multiple of %d", len(b), fixupBlock)
	}
	le := binary.LittleEndian
	usaOfs := int(le.Uint16(b[offRecUSAOfs:]))
	usaCount := int(le.Uint16(b[offRecUSACount:]))
	blocks := len(b) / fixupBlock
	if usaCount != blocks+1 {
		return formatErr(off+offRecUSACount, "update sequence count %d, want %d", usaCount, blocks+1)
	}
	// The array must follow the 8-byte header, be 2-aligned, and end
	// before the first protected word.
	if usaOfs < 8 || usaOfs&1 != 0 || usaOfs+2*usaCount > fixupBlock-2 {
		return formatErr(off+offRecUSAOfs, "update sequence array at %d (count %d) out of bounds", usaOfs, usaCount)
	}
	usn := le.Uint16(b[usaOfs:])
	for i := range blocks {
		end := (i+1)*fixupBlock - 2
		if le.Uint16(b[end:]) != usn {
			return formatErr(off+int64(end), "update sequence mismatch in block %d (torn write or corruption)", i)
		}
		copy(b[end:end+2], b[usaOfs+2+2*i:])
	}
	return nil
}

// attr is a parsed attribute header.
type attr struct {
	typ      uint32
	name     string
	flags    uint16
	nonRes   bool
	value    []byte // resident value
	lowVCN   int64  // non-resident fields
	highVCN  int64
	rawRuns  []byte // undecoded mapping pairs
	runsOff  int64  // volume offset of rawRuns
	runs     []run  // decoded by loadRuns
	alloc    int64
	dataSize int64
	initSize int64
	off      int64 // volume offset of the attribute header, for errors
}

// fileRecord is a fixed-up MFT record.
type fileRecord struct {
	num   int64
	off   int64 // volume offset of the record
	b     []byte
	flags uint16
	base  uint64
}

// parseFileRecord checks the FILE header of a fixed-up record b.
func parseFileRecord(b []byte, num, off int64) (*fileRecord, error) {
	le := binary.LittleEndian
	if string(b[offRecMagic:offRecMagic+4]) != "FILE" {
		return nil, formatErr(off, "MFT record %d has no FILE magic", num)
	}
	inUse := int(le.Uint32(b[offFileBytesInUse:]))
	if inUse < fileHeader31 || inUse > len(b) || int(le.Uint32(b[offFileBytesAlloc:])) != len(b) {
		return nil, formatErr(off+offFileBytesInUse, "MFT record %d: bytes in use %d / allocated %d do not fit record size %d",
			num, inUse, le.Uint32(b[offFileBytesAlloc:]), len(b))
	}
	if usaOfs := int(le.Uint16(b[offRecUSAOfs:])); usaOfs >= fileHeader31 {
		if got := int64(le.Uint32(b[offFileRecordNum:])); got != num {
			return nil, formatErr(off+offFileRecordNum, "MFT record %d says it is record %d", num, got)
		}
	}
	return &fileRecord{
		num:   num,
		off:   off,
		b:     b[:inUse],
		flags: le.Uint16(b[offFileFlags:]),
		base:  le.Uint64(b[offFileBaseRecord:]) & mrefMask,
	}, nil
}

// attrs parses every attribute of the record, with bounds checks on each.
func (fr *fileRecord) attrs() ([]*attr, error) {
	le := binary.LittleEndian
	b := fr.b
	pos := int(le.Uint16(b[offFileAttrsOfs:]))
	if pos < 0x2A || pos&7 != 0 {
		return nil, formatErr(fr.off+offFileAttrsOfs, "MFT record %d: attribute offset %d invalid", fr.num, pos)
	}
	var out []*attr
	for {
		if pos+4 > len(b) {
			return nil, formatErr(fr.off+int64(pos), "MFT record %d: attributes run past bytes in use", fr.num)
		}
		typ := le.Uint32(b[pos+offAttrType:])
		if typ == attrEnd {
			return out, nil
		}
		if pos+resHeader > len(b) {
			return nil, formatErr(fr.off+int64(pos), "MFT record %d: attribute header past bytes in use", fr.num)
		}
		n := int(le.Uint32(b[pos+offAttrLength:]))
		if n < resHeader || n&7 != 0 || n > len(b)-pos {
			return nil, formatErr(fr.off+int64(pos+offAttrLength), "MFT record %d: attribute length %d invalid", fr.num, n)
		}
		a, err := parseAttr(b[pos:pos+n], fr.off+int64(pos))
		if err != nil {
			return nil, err
		}
		out = append(out, a)
		pos += n
	}
}

// parseAttr parses one attribute a (exactly its length) at volume offset off.
func parseAttr(a []byte, off int64) (*attr, error) {
	le := binary.LittleEndian
	at := &attr{
		typ:    le.Uint32(a[offAttrType:]),
		flags:  le.Uint16(a[offAttrFlags:]),
		nonRes: a[offAttrNonRes] != 0,
		off:    off,
	}
	if a[offAttrNonRes] > 1 {
		return nil, formatErr(off+offAttrNonRes, "attribute 0x%x: non-resident flag %d", at.typ, a[offAttrNonRes])
	}
	if nl := int(a[offAttrNameLen]); nl > 0 {
		no := int(le.Uint16(a[offAttrNameOfs:]))
		if no+2*nl > len(a) {
			return nil, formatErr(off+offAttrNameOfs, "attribute 0x%x: name out of bounds", at.typ)
		}
		at.name = utf16String(a[no : no+2*nl])
	}
	if !at.nonRes {
		vl := int(le.Uint32(a[offResValueLen:]))
		vo := int(le.Uint16(a[offResValueOfs:]))
		if vo < resHeader || vl > len(a) || vo > len(a)-vl {
			return nil, formatErr(off+offResValueLen, "attribute 0x%x: resident value (%d bytes at %d) out of bounds", at.typ, vl, vo)
		}
		at.value = a[vo : vo+vl]
		at.dataSize = int64(vl)
		at.initSize = int64(vl)
		at.alloc = int64(vl)
		return at, nil
	}
	if len(a) < nonResHeader {
		return nil, formatErr(off, "attribute 0x%x: non-resident header truncated", at.typ)
	}
	at.lowVCN = int64(le.Uint64(a[offNonResLowVCN:]))
	at.highVCN = int64(le.Uint64(a[offNonResHighVC:]))
	at.alloc = int64(le.Uint64(a[offNonResAlloc:]))
	at.dataSize = int64(le.Uint64(a[offNonResData:]))
	at.initSize = int64(le.Uint64(a[offNonResInit:]))
	if at.lowVCN < 0 || at.highVCN < at.lowVCN-1 || at.alloc < 0 || at.dataSize < 0 ||
		at.initSize < 0 || at.initSize > at.dataSize || at.dataSize > at.alloc {
		return nil, formatErr(off+offNonResLowVCN, "attribute 0x%x: inconsistent sizes (vcn %d..%d, allocated %d, data %d, initialized %d)",
			at.typ, at.lowVCN, at.highVCN, at.alloc, at.dataSize, at.initSize)
	}
	ro := int(le.Uint16(a[offNonResRuns:]))
	if ro < nonResHeader || ro > len(a) {
		return nil, formatErr(off+offNonResRuns, "attribute 0x%x: runlist offset %d out of bounds", at.typ, ro)
	}
	at.rawRuns = a[ro:]
	at.runsOff = off + int64(ro)
	return at, nil
}

// loadRuns decodes the runlist of a non-resident attribute. It is done only
// for the attributes Read uses, so that an odd attribute elsewhere in a
// record does not stop the mapping.
func (a *attr) loadRuns(clusters int64) error {
	if !a.nonRes || a.runs != nil {
		return nil
	}
	runs, err := decodeRunlist(a.rawRuns, a.lowVCN, clusters)
	if err != nil {
		return formatErr(a.runsOff, "attribute 0x%x: %v", a.typ, err)
	}
	if end := runsEnd(runs, a.lowVCN); end != a.highVCN+1 {
		return formatErr(a.off+offNonResHighVC, "attribute 0x%x: runlist ends at vcn %d, header says %d", a.typ, end, a.highVCN+1)
	}
	a.runs = runs
	return nil
}

// find returns the first attribute of type typ named name, or nil.
func find(as []*attr, typ uint32, name string) *attr {
	for _, a := range as {
		if a.typ == typ && a.name == name {
			return a
		}
	}
	return nil
}

func utf16String(b []byte) string {
	u := make([]uint16, len(b)/2)
	for i := range u {
		u[i] = binary.LittleEndian.Uint16(b[2*i:])
	}
	return string(utf16.Decode(u))
}
