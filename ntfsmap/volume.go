package ntfsmap

import (
	"encoding/binary"
	"fmt"
	"strings"

	"github.com/prezero/prezero/freemap"
)

// System file record numbers.
const (
	recMFT     = 0
	recMFTMirr = 1
	recLogFile = 2
	recVolume  = 3
	recRoot    = 5
	recBitmap  = 6
)

// $FILE_NAME value layout.
const (
	offFNParent  = 0x00 // u64 MFT reference of the parent directory
	offFNNameLen = 0x40 // u8, UTF-16 units
	offFNName    = 0x42
)

// $VOLUME_INFORMATION value layout.
const (
	offVIMajor = 0x08 // u8
	offVIMinor = 0x09 // u8
	offVIFlags = 0x0A // u16
	viSize     = 0x0C

	volumeIsDirty = 0x0001
)

// loadMFT reads MFT record 0 at the cluster the boot sector names and keeps
// the first extent of its unnamed $DATA, through which every other record
// is read.
func (v *volume) loadMFT() error {
	bs := v.boot
	cs := int64(bs.clusterSize)
	off := bs.mftLCN * cs
	b := make([]byte, bs.recordSize)
	if err := v.readFull(b, off); err != nil {
		return err
	}
	if err := applyFixup(b, off); err != nil {
		return err
	}
	fr, err := parseFileRecord(b, recMFT, off)
	if err != nil {
		return err
	}
	if fr.flags&fileFlagInUse == 0 || fr.base != 0 {
		return formatErr(off, "$MFT record is not an in-use base record")
	}
	as, err := fr.attrs()
	if err != nil {
		return err
	}
	d, err := dataAttr(fr, as)
	if err != nil {
		return err
	}
	if !d.nonRes || d.lowVCN != 0 {
		return formatErr(d.off, "$MFT $DATA is resident or does not start at vcn 0")
	}
	if err := d.loadRuns(bs.clusters); err != nil {
		return err
	}
	if len(d.runs) == 0 || d.runs[0].lcn != bs.mftLCN {
		return formatErr(d.off, "$MFT runlist does not start at the boot sector's $MFT cluster %d", bs.mftLCN)
	}
	v.mft = d
	// A fragmented $MFT moves attributes, its $FILE_NAME among them, to
	// extension records named by its $ATTRIBUTE_LIST.
	if err := v.checkNameListed(fr, as, "$MFT"); err != nil {
		return err
	}
	if err := v.addMeta(d, "$MFT"); err != nil {
		return err
	}
	v.meta = append(v.meta, span{0, max(1, 8192/cs), "$Boot"})
	return v.checkMirror()
}

// mirrorRecords is how many records $MFTMirr duplicates.
const mirrorRecords = 4

// checkMirror compares the first records of $MFT with their copies in
// $MFTMirr, as ntfs-3g does before it mounts: a mismatch means a torn write
// or corruption in the records everything else is read through.
func (v *volume) checkMirror() error {
	fr, as, err := v.record(recMFTMirr)
	if err != nil {
		return err
	}
	if err := checkName(fr, as, "$MFTMirr"); err != nil {
		return err
	}
	d, err := dataAttr(fr, as)
	if err != nil {
		return err
	}
	if !d.nonRes || d.lowVCN != 0 {
		return formatErr(d.off, "$MFTMirr data is resident or does not start at vcn 0")
	}
	if err := v.addMeta(d, "$MFTMirr"); err != nil {
		return err
	}
	if len(d.runs) == 0 || d.runs[0].lcn != v.boot.mftMirrLCN {
		return formatErr(d.off, "$MFTMirr runlist does not start at the boot sector's $MFTMirr cluster %d", v.boot.mftMirrLCN)
	}
	rs := int64(v.boot.recordSize)
	a, b := make([]byte, rs), make([]byte, rs)
	for i := range int64(mirrorRecords) {
		if err := v.readAttr(v.mft, a, i*rs); err != nil {
			return err
		}
		if err := v.readAttr(d, b, i*rs); err != nil {
			return err
		}
		if err := applyFixup(a, v.attrOffset(v.mft, i*rs)); err != nil {
			return err
		}
		if err := applyFixup(b, v.attrOffset(d, i*rs)); err != nil {
			return err
		}
		n := binary.LittleEndian.Uint32(a[offFileBytesInUse:])
		if int64(n) > rs || string(a[:n]) != string(b[:n]) {
			return formatErr(v.attrOffset(d, i*rs), "$MFTMirr does not match $MFT (record %d): run chkdsk /f in Windows", i)
		}
	}
	return nil
}

// addMeta records the clusters of a non-resident attribute as metadata that
// the bitmap must show in use. A sparse run in metadata is an error.
func (v *volume) addMeta(a *attr, what string) error {
	if !a.nonRes {
		return nil
	}
	if err := a.loadRuns(v.boot.clusters); err != nil {
		return err
	}
	for _, r := range a.runs {
		if r.lcn < 0 {
			return formatErr(a.off, "%s data has a sparse run", what)
		}
		v.meta = append(v.meta, span{r.lcn, r.n, what})
	}
	return nil
}

// record reads MFT record num, applies its fixups and parses its
// attributes. The record must be an in-use base record.
func (v *volume) record(num int64) (*fileRecord, []*attr, error) {
	rs := int64(v.boot.recordSize)
	if num < 0 || num >= v.mft.initSize/rs {
		return nil, nil, formatErr(v.mft.off, "MFT record %d is past the initialized $MFT", num)
	}
	b := make([]byte, rs)
	if err := v.readAttr(v.mft, b, num*rs); err != nil {
		return nil, nil, fmt.Errorf("reading MFT record %d: %w", num, err)
	}
	off := v.attrOffset(v.mft, num*rs)
	if err := applyFixup(b, off); err != nil {
		return nil, nil, err
	}
	fr, err := parseFileRecord(b, num, off)
	if err != nil {
		return nil, nil, err
	}
	if fr.flags&fileFlagInUse == 0 || fr.base != 0 {
		return nil, nil, formatErr(off, "MFT record %d is not an in-use base record", num)
	}
	as, err := fr.attrs()
	if err != nil {
		return nil, nil, err
	}
	return fr, as, nil
}

// attrOffset returns the volume offset of byte off of a's data, or -1.
func (v *volume) attrOffset(a *attr, off int64) int64 {
	cs := int64(v.boot.clusterSize)
	for _, r := range a.runs {
		if vcn := off / cs; r.lcn >= 0 && vcn >= r.vcn && vcn < r.vcn+r.n {
			return (r.lcn+vcn-r.vcn)*cs + off%cs
		}
	}
	return -1
}

// checkName checks that record fr, with attributes as, is the system file
// name in the root directory.
func checkName(fr *fileRecord, as []*attr, name string) error {
	for _, a := range as {
		if a.typ != attrFileName || a.nonRes || len(a.value) < offFNName {
			continue
		}
		parent, n, ok := fileName(a.value)
		if ok && parent == recRoot && n == name {
			return nil
		}
	}
	return formatErr(fr.off, "MFT record %d is not %s", fr.num, name)
}

// checkNameListed is checkName, also looking at the $FILE_NAME attributes
// of the extension records that fr's attribute list names.
func (v *volume) checkNameListed(fr *fileRecord, as []*attr, name string) error {
	err := checkName(fr, as, name)
	if err == nil {
		return nil
	}
	list, lerr := v.attrList(as)
	if lerr != nil || list == nil {
		return err
	}
	for _, e := range list {
		if e.typ != attrFileName || e.ref == fr.num {
			continue
		}
		xr, xs, xerr := v.extension(v.mft, e.ref)
		if xerr != nil {
			return xerr
		}
		if xr.base != uint64(fr.num) {
			return formatErr(xr.off, "MFT record %d named in record %d's attribute list belongs to record %d", e.ref, fr.num, xr.base)
		}
		if checkName(xr, xs, name) == nil {
			return nil
		}
	}
	return err
}

// fileName decodes a $FILE_NAME value: parent record number and name.
func fileName(b []byte) (parent int64, name string, ok bool) {
	if len(b) < offFNName {
		return 0, "", false
	}
	n := int(b[offFNNameLen])
	if offFNName+2*n > len(b) {
		return 0, "", false
	}
	parent = int64(binary.LittleEndian.Uint64(b[offFNParent:]) & mrefMask)
	return parent, utf16String(b[offFNName : offFNName+2*n]), true
}

// dataAttr returns the unnamed $DATA attribute of a base record. If the
// record has none but has an attribute list, the data is described in
// extension records, which this package does not follow.
func dataAttr(fr *fileRecord, as []*attr) (*attr, error) {
	if d := find(as, attrData, ""); d != nil {
		if d.flags&(attrFlagCompressed|attrFlagEncrypted) != 0 {
			return nil, formatErr(d.off, "MFT record %d: $DATA is compressed or encrypted", fr.num)
		}
		return d, nil
	}
	if find(as, attrAttributeList, "") != nil {
		return nil, formatErr(fr.off, "MFT record %d: $DATA is in an attribute list extension (not supported)", fr.num)
	}
	return nil, formatErr(fr.off, "MFT record %d has no $DATA attribute", fr.num)
}

// checkVolumeInfo reads $Volume's $VOLUME_INFORMATION and reports whether
// the volume is dirty.
func (v *volume) checkVolumeInfo() (dirty bool, err error) {
	fr, as, err := v.record(recVolume)
	if err != nil {
		return false, err
	}
	if err := checkName(fr, as, "$Volume"); err != nil {
		return false, err
	}
	vi := find(as, attrVolumeInfo, "")
	if vi == nil || vi.nonRes || len(vi.value) < viSize {
		return false, formatErr(fr.off, "$Volume has no valid $VOLUME_INFORMATION")
	}
	major, minor := vi.value[offVIMajor], vi.value[offVIMinor]
	if !(major == 3 && minor <= 1) && !(major == 1 && minor == 2) {
		return false, formatErr(vi.off, "unsupported NTFS version %d.%d", major, minor)
	}
	return binary.LittleEndian.Uint16(vi.value[offVIFlags:])&volumeIsDirty != 0, nil
}

// checkHiberfil looks up hiberfil.sys in the root directory and fails if it
// starts with a hibernation signature: a hibernated or fast-started Windows
// has the volume in use, and its bitmap on disk is not the truth.
//
// ntfs-3g refuses only "hibr". Descriptions of the format also list "HIBR",
// "wake", "WAKE" and "RSTR" for the states around hibernating and resuming;
// this refuses all of them, in either case: a false alarm costs a
// pass-through, a miss costs data. An absent hiberfil.sys, or one whose
// header is anything else (zeros after a full shutdown), is fine.
func (v *volume) checkHiberfil() error {
	ref, err := v.lookupRoot("hiberfil.sys")
	if err != nil {
		return fmt.Errorf("ntfs: cannot check whether Windows is hibernated: %w", err)
	}
	if ref < 0 {
		return nil
	}
	sig, err := v.fileHead(ref)
	if err != nil {
		return fmt.Errorf("ntfs: cannot read hiberfil.sys to check whether Windows is hibernated: %w", err)
	}
	switch strings.ToLower(string(sig[:])) {
	case "hibr", "wake", "rstr":
		return freemap.Unsafe("ntfs: Windows is hibernated or fast-started (hiberfil.sys starts with %q): "+
			"the volume is still in use by a suspended Windows, so it is passed through unzeroed; "+
			"boot Windows and shut it down fully (disable Fast Startup, or run \"shutdown /s /t 0\")", sig[:])
	}
	return nil
}

// fileHead returns the first 4 bytes of the unnamed $DATA of record ref;
// bytes that are not stored (past the initialized size, or sparse) are zero.
func (v *volume) fileHead(ref int64) ([4]byte, error) {
	var sig [4]byte
	fr, as, err := v.record(ref)
	if err != nil {
		return sig, err
	}
	d, err := dataAttr(fr, as)
	if err != nil {
		return sig, err
	}
	n := min(d.initSize, int64(len(sig)))
	if d.nonRes {
		if d.lowVCN != 0 {
			return sig, formatErr(d.off, "hiberfil.sys $DATA does not start at vcn 0")
		}
		if err := d.loadRuns(v.boot.clusters); err != nil {
			return sig, err
		}
		if len(d.runs) > 0 && d.runs[0].lcn < 0 {
			return sig, nil // sparse: zeros
		}
	}
	if err := v.readAttr(d, sig[:n], 0); err != nil {
		return sig, err
	}
	return sig, nil
}
