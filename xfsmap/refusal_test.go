package xfsmap

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"strings"
	"testing"

	"github.com/prezero/prezero/freemap"
)

// TestRefusals: valid superblocks (checksum recomputed) that ask for what
// this parser must not zero pass through with the right kind and reason.
func TestRefusals(t *testing.T) {
	base := seed(t, "v5")
	for _, tc := range []struct {
		name  string
		patch func(sb []byte)
		kind  error
		msg   string
	}{
		{"external log", func(sb []byte) { be.PutUint64(sb[sbLogStartOff:], 0) }, freemap.ErrUnsupported, "external log"},
		{"realtime", func(sb []byte) { be.PutUint64(sb[sbRBlocksOff:], 1000) }, freemap.ErrUnsupported, "realtime"},
		{"inprogress", func(sb []byte) { sb[sbInProgressOff] = 1 }, freemap.ErrUnsafe, "sb_inprogress"},
		{"incompat", func(sb []byte) { sb[sbIncompatOff+2] |= 0x04 }, freemap.ErrUnsupported, "incompatible features"},
		{"needsrepair", func(sb []byte) { sb[sbIncompatOff+3] |= incompatNeedsRepair }, freemap.ErrUnsafe, "xfs_repair"},
		{"ro_compat", func(sb []byte) { sb[sbROCompatOff+3] |= 0x80 }, freemap.ErrUnsupported, "read-only-compatible"},
		{"log_incompat", func(sb []byte) { sb[sbLogIncompatOff+3] |= 0x20 }, freemap.ErrUnsupported, "log-incompatible"},
		{"version 3", func(sb []byte) { sb[sbVersionOff+1] = sb[sbVersionOff+1]&^0xf | 3 }, freemap.ErrUnsupported, "version 3"},
		{"too large", func(sb []byte) { be.PutUint64(sb[sbDBlocksOff:], be.Uint64(sb[sbDBlocksOff:])+1) }, freemap.ErrFormat, "blocks"},
		{"block size", func(sb []byte) { be.PutUint32(sb[sbBlockSizeOff:], 3000) }, freemap.ErrFormat, "block size"},
		{"bad crc", nil, freemap.ErrFormat, "checksum"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := bytes.Clone(base)
			sb := img[:512]
			if tc.patch != nil {
				tc.patch(sb)
				binary.LittleEndian.PutUint32(sb[sbCRCOff:], 0)
				binary.LittleEndian.PutUint32(sb[sbCRCOff:], crc32.Checksum(sb, castagnoli))
			} else {
				sb[sbCRCOff] ^= 1
			}
			_, err := Read(bytes.NewReader(img), int64(len(img)))
			if !errors.Is(err, tc.kind) || !strings.Contains(err.Error(), tc.msg) || !strings.HasPrefix(err.Error(), "xfs: ") {
				t.Fatalf("err = %v, want %v mentioning %q", err, tc.kind, tc.msg)
			}
		})
	}
}
