package ntfsmap

import (
	"encoding/binary"

	"github.com/prezero/prezero/freemap"
)

// $LogFile restart page header and restart area layout.
const (
	offRPChkdskLSN = 0x08 // i64
	offRPSysPage   = 0x10 // u32: system page size
	offRPLogPage   = 0x14 // u32: log page size
	offRPAreaOfs   = 0x18 // u16: offset of the restart area
	offRPMinor     = 0x1A // i16
	offRPMajor     = 0x1C // i16
	rpHeader       = 0x1E

	offRACurrentLSN = 0x00 // i64
	offRAClients    = 0x08 // u16: number of log clients
	offRAInUse      = 0x0C // u16: first client in use, 0xFFFF for none
	offRAFlags      = 0x0E // u16
	raFixedFields   = 0x18 // bytes of the area that Read uses, all before the first fixup word

	noClient          = 0xFFFF
	restartVolIsClean = 0x0002

	// Restart pages are looked for at 0 and at the system page size,
	// which is a power of two no larger than this.
	maxRestartPos = 64 << 10
	minLogPage    = 4096
)

// checkLogFile fails unless the journal was shut down cleanly: an unclean
// $LogFile holds operations, allocations among them, that the on-disk
// $Bitmap may not reflect yet. An empty journal (all 0xFF, as mkntfs and
// ntfs-3g leave it) is clean.
//
// Like ntfs-3g, it looks for restart pages ("RSTR" or "CHKD") at offsets 0,
// 512, 1024, ... and uses the one with the most recent LSN; the journal is
// clean if that restart area has no client in use or says the volume is
// clean. The fields read lie before the first fixup word, so no fixup is
// needed.
func (v *volume) checkLogFile() error {
	fr, as, err := v.record(recLogFile)
	if err != nil {
		return err
	}
	if err := checkName(fr, as, "$LogFile"); err != nil {
		return err
	}
	d, err := dataAttr(fr, as)
	if err != nil {
		return err
	}
	if !d.nonRes || d.lowVCN != 0 {
		return formatErr(d.off, "$LogFile data is resident or does not start at vcn 0")
	}
	if err := v.addMeta(d, "$LogFile"); err != nil {
		return err
	}
	if d.initSize < 2*minLogPage {
		return formatErr(d.off, "$LogFile of %d bytes is too small", d.initSize)
	}
	empty := true
	var best *restartArea
	b := make([]byte, fixupBlock)
	for pos := int64(0); pos+fixupBlock <= d.initSize && pos <= maxRestartPos; {
		if err := v.readAttr(d, b, pos); err != nil {
			return err
		}
		magic := string(b[:4])
		if magic == "\xff\xff\xff\xff" {
			if !empty {
				break
			}
		} else {
			empty = false
			if magic == "RCRD" {
				break
			}
			if magic == "RSTR" || magic == "CHKD" {
				if ra, ok := parseRestart(b, pos); ok {
					if best == nil || ra.lsn > best.lsn {
						best = ra
					}
					if pos > 0 {
						break
					}
				}
			}
		}
		if pos == 0 {
			pos = fixupBlock
		} else {
			pos <<= 1
		}
	}
	if empty {
		return nil
	}
	if best == nil {
		return freemap.Unsafe("ntfs: the journal ($LogFile) is not empty but has no valid restart page, so it cannot be proved clean; " +
			"boot Windows and shut it down fully, or run chkdsk")
	}
	if best.inUse != noClient && best.flags&restartVolIsClean == 0 {
		return freemap.Unsafe("ntfs: the journal ($LogFile) is not clean: Windows did not shut down cleanly and the bitmap may be stale, " +
			"so the volume is passed through unzeroed; boot Windows and shut it down fully (or run ntfsfix)")
	}
	return nil
}

type restartArea struct {
	lsn          int64
	inUse, flags uint16
}

// parseRestart checks the first 512 bytes b of a restart page found at pos
// of $LogFile, as ntfs-3g's ntfs_check_restart_page_header and
// ntfs_check_restart_area do for the fields used here.
func parseRestart(b []byte, pos int64) (*restartArea, bool) {
	le := binary.LittleEndian
	sys := int64(le.Uint32(b[offRPSysPage:]))
	logp := int64(le.Uint32(b[offRPLogPage:]))
	if sys < fixupBlock || logp < fixupBlock || sys&(sys-1) != 0 || logp&(logp-1) != 0 {
		return nil, false
	}
	if pos != 0 && pos != sys {
		return nil, false
	}
	major, minor := int16(le.Uint16(b[offRPMajor:])), int16(le.Uint16(b[offRPMinor:]))
	if !(major == 1 && minor == 1) && !(major == 2 && minor == 0) {
		return nil, false
	}
	chkd := string(b[:4]) == "CHKD"
	chkdskLSN := int64(le.Uint64(b[offRPChkdskLSN:]))
	if !chkd && chkdskLSN != 0 {
		return nil, false
	}
	ra := int(le.Uint16(b[offRPAreaOfs:]))
	if ra&7 != 0 || ra < rpHeader || ra+raFixedFields > fixupBlock-2 {
		return nil, false
	}
	clients := le.Uint16(b[ra+offRAClients:])
	r := &restartArea{
		lsn:   int64(le.Uint64(b[ra+offRACurrentLSN:])),
		inUse: le.Uint16(b[ra+offRAInUse:]),
		flags: le.Uint16(b[ra+offRAFlags:]),
	}
	if r.inUse != noClient && r.inUse >= clients {
		return nil, false
	}
	if chkd {
		r.lsn = chkdskLSN
	}
	return r, true
}
