// Package nbd is a small, read-only client of the Network Block Device
// protocol (NetworkBlockDevice/nbd doc/proto.md), spoken from user space:
// no nbd kernel module, no root. prezero reads VM images (qcow2, vmdk,
// vhdx, ...) through a qemu-nbd it starts itself (StartQemu), and any NBD
// export named by an NBD URI (ParseURI) such as libvirt's pull-mode backups
// or nbdkit.
//
// A Client is an io.ReaderAt of the export plus its size and, where the
// server offers the "base:allocation" metadata context, the ranges the
// server reports as reading as zeros (ZeroExtents). It negotiates the fixed
// newstyle handshake with NBD_OPT_GO, structured replies and
// base:allocation, splits reads into requests of at most the server's
// maximum block size and keeps several in flight on one connection.
//
// Rules: nothing the server says is trusted as a size, an offset or a count
// before it is checked against the request it answers; every violation is
// an error, never a panic or an unbounded allocation. Only NBD_STATE_ZERO
// means "reads as zeros": a hole without it is unknown, so it is read. The
// client never sends a write. Never a hang: a server that sends nothing for
// the client's timeout, in the handshake or while requests wait, fails the
// connection with ErrStalled, naming the server.
package nbd

import (
	"encoding/binary"
	"fmt"
	"syscall"
)

// Magic numbers and constants of the protocol, named as in proto.md.
const (
	magicNBD        = 0x4e42444d41474943 // "NBDMAGIC"
	magicOpt        = 0x49484156454F5054 // "IHAVEOPT"
	magicOptReply   = 0x3e889045565a9
	magicRequest    = 0x25609513
	magicSimple     = 0x67446698
	magicStructured = 0x668e33ef

	flagFixedNewstyle = 1 << 0 // handshake and client flags
	flagNoZeroes      = 1 << 1

	optExportName     = 1
	optAbort          = 2
	optGo             = 7
	optStructured     = 8
	optSetMetaContext = 10

	repAck         = 1
	repInfo        = 3
	repMetaContext = 4
	repErrBit      = 1 << 31
	repErrUnsup    = repErrBit + 1
	repErrPolicy   = repErrBit + 2
	repErrTLSReqd  = repErrBit + 5
	repErrUnknown  = repErrBit + 6

	infoExport    = 0
	infoBlockSize = 3

	cmdRead        = 0
	cmdDisc        = 2
	cmdBlockStatus = 7

	replyFlagDone    = 1 << 0
	replyNone        = 0
	replyOffsetData  = 1
	replyOffsetHole  = 2
	replyBlockStatus = 5
	replyErrBit      = 1 << 15
	replyError       = replyErrBit + 1
	replyErrorOffset = replyErrBit + 2

	stateZero = 1 << 1 // base:allocation: the extent reads as zeros

	metaAllocation = "base:allocation"
)

// Limits on what the client accepts from a server.
const (
	maxOptReply     = 64 << 10  // option reply payload
	maxErrorPayload = 64 << 10  // error chunk payload
	maxStatusChunk  = 4 << 20   // block status chunk: 512 Ki descriptors
	defaultMaxBlock = 32 << 20  // proto.md's interoperable maximum request
	maxIntervals    = 4096      // distinct pieces of one read reply
	maxExportSize   = 1<<63 - 1 // int64
)

// ProtocolError is a violation of the protocol by the server: the
// connection is unusable after it.
type ProtocolError struct{ Msg string }

func (e *ProtocolError) Error() string { return "nbd: protocol error: " + e.Msg }

func protoErr(format string, a ...any) error {
	return &ProtocolError{fmt.Sprintf(format, a...)}
}

// ServerError is an error the server reported for one request.
type ServerError struct {
	Errno   syscall.Errno // the NBD error value, a Linux errno
	Message string        // the server's text, if it sent one
	Off     int64         // where the error is, or -1
}

func (e *ServerError) Error() string {
	s := "nbd server: " + errnoText(e.Errno)
	if e.Off >= 0 {
		s += fmt.Sprintf(" at byte %d", e.Off)
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

func (e *ServerError) Unwrap() error { return e.Errno }

// errnoText names the error values proto.md defines, else the number.
func errnoText(n syscall.Errno) string {
	switch n {
	case 1, 5, 12, 22, 28, 75, 95, 108: // EPERM EIO ENOMEM EINVAL ENOSPC EOVERFLOW ENOTSUP ESHUTDOWN
		return n.Error()
	}
	return fmt.Sprintf("error %d", uint32(n))
}

var be = binary.BigEndian

// chunkHeader is the fixed part of a structured reply chunk after its magic.
type chunkHeader struct {
	flags  uint16
	typ    uint16
	handle uint64
	length uint32
}

func parseChunkHeader(b []byte) chunkHeader {
	return chunkHeader{
		flags:  be.Uint16(b[0:]),
		typ:    be.Uint16(b[2:]),
		handle: be.Uint64(b[4:]),
		length: be.Uint32(b[12:]),
	}
}

// parseError decodes the payload of an error chunk: error, message length,
// message, and for NBD_REPLY_TYPE_ERROR_OFFSET an offset after the message.
func parseError(typ uint16, p []byte) (*ServerError, error) {
	if len(p) < 6 {
		return nil, protoErr("error chunk of %d bytes", len(p))
	}
	e := &ServerError{Errno: syscall.Errno(be.Uint32(p[0:])), Off: -1}
	n := int(be.Uint16(p[4:]))
	if n > len(p)-6 {
		return nil, protoErr("error message of %d bytes in a %d-byte chunk", n, len(p))
	}
	e.Message = sanitize(p[6 : 6+n])
	if typ == replyErrorOffset {
		if len(p)-6-n != 8 {
			return nil, protoErr("error-offset chunk of %d bytes with a %d-byte message", len(p), n)
		}
		off := be.Uint64(p[6+n:])
		if off > maxExportSize {
			return nil, protoErr("error offset %d", off)
		}
		e.Off = int64(off)
	}
	if e.Errno == 0 {
		e.Errno = syscall.EIO // proto.md: MUST be nonzero; still an error
	}
	return e, nil
}

// sanitize keeps a server's message printable and short.
func sanitize(b []byte) string {
	if len(b) > 512 {
		b = b[:512]
	}
	out := make([]rune, 0, len(b))
	for _, r := range string(b) {
		if r < 0x20 || r == 0x7f {
			r = '?'
		}
		out = append(out, r)
	}
	return string(out)
}

// extent is one block status descriptor, made absolute.
type extent struct {
	off, len int64
	flags    uint32
}

// parseBlockStatus decodes a block status chunk answering a request for
// [off, off+length): descriptors are clipped to that range, lengths must
// be nonzero, and the sum may not run past it. It returns the context id
// and the extents from off onwards.
func parseBlockStatus(p []byte, off int64, length uint32) (uint32, []extent, error) {
	if len(p) < 12 || (len(p)-4)%8 != 0 {
		return 0, nil, protoErr("block status chunk of %d bytes", len(p))
	}
	id := be.Uint32(p)
	end := off + int64(length)
	var out []extent
	pos := off
	for d := p[4:]; len(d) >= 8; d = d[8:] {
		n := int64(be.Uint32(d))
		if n == 0 {
			return 0, nil, protoErr("block status descriptor of length 0")
		}
		if pos >= end {
			return 0, nil, protoErr("block status descriptors run past the %d bytes asked for", length)
		}
		n = min(n, end-pos) // never trust a length past the request
		out = append(out, extent{pos, n, be.Uint32(d[4:])})
		pos += n
	}
	return id, out, nil
}

// intervals is the set of byte ranges a read reply has covered so far,
// relative to the request, kept sorted and merged, to reject overlaps.
type intervals struct {
	iv [][2]int64
}

// add records [a, b); it fails on an overlap with what was added before.
func (s *intervals) add(a, b int64) error {
	// Index of the first interval ending after a.
	i, j := 0, len(s.iv)
	for i < j {
		h := int(uint(i+j) >> 1)
		if s.iv[h][1] <= a {
			i = h + 1
		} else {
			j = h
		}
	}
	if i < len(s.iv) && s.iv[i][0] < b {
		return protoErr("read reply chunks overlap at %d", max(a, s.iv[i][0]))
	}
	switch {
	case i > 0 && s.iv[i-1][1] == a && i < len(s.iv) && s.iv[i][0] == b:
		s.iv[i-1][1] = s.iv[i][1]
		s.iv = append(s.iv[:i], s.iv[i+1:]...)
	case i > 0 && s.iv[i-1][1] == a:
		s.iv[i-1][1] = b
	case i < len(s.iv) && s.iv[i][0] == b:
		s.iv[i][0] = a
	default:
		if len(s.iv) >= maxIntervals {
			return protoErr("read reply in more than %d scattered pieces", maxIntervals)
		}
		s.iv = append(s.iv, [2]int64{})
		copy(s.iv[i+1:], s.iv[i:])
		s.iv[i] = [2]int64{a, b}
	}
	return nil
}

// full reports whether [0, n) is covered.
func (s *intervals) full(n int64) bool {
	return n == 0 || len(s.iv) == 1 && s.iv[0] == [2]int64{0, n}
}
