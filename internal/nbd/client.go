package nbd

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Request sizing: reads are split into requests of at most RequestSize
// bytes (less if the server's maximum block size is smaller), and at most
// InFlight requests wait for replies at once. Measured with qemu-nbd 7.2
// (bench/nbd.sh): 128 KiB requests were about twice as fast as 1 MiB ones,
// for which qemu maps and unmaps a fresh buffer each time.
const (
	RequestSize = 128 << 10
	InFlight    = 32
)

// DefaultTimeout is how long a server may stay silent, in the handshake or
// while requests wait for replies, before the client gives up on it
// (ErrStalled): an NBD server that stops answering must not hang prezero.
const DefaultTimeout = 60 * time.Second

// ErrStalled is wrapped by the error of every request of a connection the
// client gave up on because the server sent nothing for its timeout while
// requests waited.
var ErrStalled = errors.New("the NBD server stopped answering")

// Client is a read-only connection to one NBD export. ReadAt and
// ZeroExtents are safe for concurrent use.
type Client struct {
	conn       net.Conn
	br         *bufio.Reader
	name       string        // the server, as errors name it
	timeout    time.Duration // silence allowed while requests wait; <= 0: none
	progress   atomic.Int64  // bytes read from conn, for the stall watchdog
	size       int64
	structured bool
	metaID     uint32
	hasMeta    bool
	minBlock   int64
	maxReq     int64

	wmu     sync.Mutex // serialises requests on conn
	mu      sync.Mutex // guards pending, next, err
	pending map[uint64]*request
	next    uint64
	err     error // fatal: the connection is unusable

	slots   chan struct{} // in-flight requests
	readerD chan struct{} // closed when the reply reader ends
	closed  atomic.Bool

	requested atomic.Int64 // bytes asked for with NBD_CMD_READ
	received  atomic.Int64 // data bytes the server sent
}

// request is one command waiting for its reply.
type request struct {
	typ    uint16
	off    int64
	length uint32
	buf    []byte // NBD_CMD_READ: where the data goes, len == length
	got    intervals
	ext    []extent // NBD_CMD_BLOCK_STATUS: the extents of our context
	err    error    // the first error of the reply
	done   chan struct{}
}

// Dial connects to the export named by a and negotiates it. timeout is
// how long the server may stay silent (see NewClient); it bounds the
// connection attempt too.
func Dial(ctx context.Context, a Address, timeout time.Duration) (*Client, error) {
	d := net.Dialer{Timeout: max(timeout, 0)}
	conn, err := d.DialContext(ctx, a.Network, a.Addr)
	if err != nil {
		return nil, fmt.Errorf("connecting to the NBD server %s: %w", a, err)
	}
	c, err := NewClient(conn, a.Export, a.URI, timeout)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("%s: %w", a, err)
	}
	return c, nil
}

// NewClient negotiates export on conn (fixed newstyle) and starts the
// transmission phase. name is how errors name the server. If the server
// sends nothing for timeout during the handshake, or while requests wait
// for replies, the client gives up: the connection fails with ErrStalled
// (timeout <= 0: wait forever). On error the caller closes conn.
func NewClient(conn net.Conn, export, name string, timeout time.Duration) (*Client, error) {
	c := &Client{
		conn:     conn,
		name:     name,
		timeout:  timeout,
		pending:  map[uint64]*request{},
		minBlock: 1,
		maxReq:   RequestSize,
		slots:    make(chan struct{}, InFlight),
		readerD:  make(chan struct{}),
	}
	c.br = bufio.NewReaderSize(progressReader{conn, &c.progress}, 64<<10)
	if timeout > 0 {
		conn.SetDeadline(time.Now().Add(timeout))
	}
	if err := c.handshake(export); err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			err = fmt.Errorf("%w: %s sent nothing for %v during the handshake", ErrStalled, name, timeout)
		}
		return nil, err
	}
	conn.SetDeadline(time.Time{})
	go c.readReplies()
	if timeout > 0 {
		go c.watch()
	}
	return c, nil
}

// progressReader counts the bytes read from the connection.
type progressReader struct {
	r io.Reader
	n *atomic.Int64
}

func (p progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.n.Add(int64(n))
	return n, err
}

// watch fails the connection once requests have waited for timeout
// without a byte from the server. It checks a few times per timeout and
// costs the read path one atomic add.
func (c *Client) watch() {
	t := time.NewTicker(max(c.timeout/8, time.Millisecond))
	defer t.Stop()
	last, since := c.progress.Load(), time.Now()
	for {
		select {
		case <-c.readerD:
			return
		case now := <-t.C:
			p := c.progress.Load()
			c.mu.Lock()
			waiting := len(c.pending)
			c.mu.Unlock()
			if p != last || waiting == 0 {
				last, since = p, now
				continue
			}
			if now.Sub(since) >= c.timeout {
				c.fail(fmt.Errorf("%w: %s sent nothing for %v while %d requests waited; giving up (is the server overloaded or hung?)",
					ErrStalled, c.name, c.timeout, waiting))
				return
			}
		}
	}
}

// Size returns the export's size in bytes.
func (c *Client) Size() int64 { return c.size }

// HasZeroInfo reports whether the server offered base:allocation.
func (c *Client) HasZeroInfo() bool { return c.hasMeta }

// Requested returns the bytes asked for with NBD_CMD_READ so far, and
// Received the data bytes the server sent (holes it reports in a read
// reply are not sent).
func (c *Client) Requested() int64 { return c.requested.Load() }

// Received returns the data bytes received in read replies so far.
func (c *Client) Received() int64 { return c.received.Load() }

func (c *Client) handshake(export string) error {
	var hdr [18]byte
	if _, err := io.ReadFull(c.br, hdr[:]); err != nil {
		return fmt.Errorf("reading the server's greeting: %w", eofIsUnexpected(err))
	}
	if be.Uint64(hdr[0:]) != magicNBD {
		return protoErr("not an NBD server (greeting %x)", hdr[:8])
	}
	if be.Uint64(hdr[8:]) != magicOpt {
		return protoErr("the server speaks the oldstyle handshake, which is not supported")
	}
	hflags := be.Uint16(hdr[16:])
	if hflags&flagFixedNewstyle == 0 {
		return protoErr("the server does not speak the fixed newstyle handshake")
	}
	cflags := uint32(flagFixedNewstyle)
	noZeroes := hflags&flagNoZeroes != 0
	if noZeroes {
		cflags |= flagNoZeroes
	}
	var b [4]byte
	be.PutUint32(b[:], cflags)
	if _, err := c.conn.Write(b[:]); err != nil {
		return err
	}

	// Structured replies, then base:allocation; either may be refused.
	typ, _, err := c.option(optStructured, nil)
	if err != nil {
		return err
	}
	c.structured = typ == repAck
	if c.structured {
		if err := c.setMeta(export); err != nil {
			return err
		}
	}

	// NBD_OPT_GO with the export's size and block sizes.
	name := []byte(export)
	if len(name) > 4096 {
		return fmt.Errorf("export name of %d bytes: at most 4096", len(name))
	}
	req := make([]byte, 4+len(name)+2+4)
	be.PutUint32(req, uint32(len(name)))
	copy(req[4:], name)
	be.PutUint16(req[4+len(name):], 2)
	be.PutUint16(req[6+len(name):], infoExport)
	be.PutUint16(req[8+len(name):], infoBlockSize)
	if err := c.sendOption(optGo, req); err != nil {
		return err
	}
	gotSize := false
	for {
		typ, data, err := c.optionReply(optGo)
		if err != nil {
			return err
		}
		switch {
		case typ == repInfo:
			if err := c.info(data, &gotSize); err != nil {
				return err
			}
			continue
		case typ == repAck:
		case typ == repErrUnsup:
			return c.exportName(name, noZeroes)
		default:
			return optionError("selecting the export "+fmt.Sprintf("%q", export), typ, data)
		}
		break
	}
	if !gotSize {
		return protoErr("the server did not send the export's size")
	}
	return nil
}

// setMeta selects base:allocation for export. A refusal leaves it off.
func (c *Client) setMeta(export string) error {
	q := []byte(metaAllocation)
	req := make([]byte, 0, 12+len(export)+len(q))
	req = be.AppendUint32(req, uint32(len(export)))
	req = append(req, export...)
	req = be.AppendUint32(req, 1)
	req = be.AppendUint32(req, uint32(len(q)))
	req = append(req, q...)
	if err := c.sendOption(optSetMetaContext, req); err != nil {
		return err
	}
	for {
		typ, data, err := c.optionReply(optSetMetaContext)
		if err != nil {
			return err
		}
		switch {
		case typ == repMetaContext:
			if len(data) >= 4 && string(data[4:]) == metaAllocation {
				c.metaID, c.hasMeta = be.Uint32(data), true
			}
		case typ == repAck:
			return nil
		case typ&repErrBit != 0:
			c.hasMeta = false
			return nil
		default:
			return protoErr("unexpected reply %d to NBD_OPT_SET_META_CONTEXT", typ)
		}
	}
}

// info records one NBD_REP_INFO of NBD_OPT_GO.
func (c *Client) info(d []byte, gotSize *bool) error {
	if len(d) < 2 {
		return protoErr("NBD_REP_INFO of %d bytes", len(d))
	}
	switch be.Uint16(d) {
	case infoExport:
		if len(d) != 12 {
			return protoErr("NBD_INFO_EXPORT of %d bytes", len(d))
		}
		size := be.Uint64(d[2:])
		if size > maxExportSize {
			return protoErr("export size %d", size)
		}
		c.size, *gotSize = int64(size), true
	case infoBlockSize:
		if len(d) != 14 {
			return protoErr("NBD_INFO_BLOCK_SIZE of %d bytes", len(d))
		}
		minB, maxB := int64(be.Uint32(d[2:])), int64(be.Uint32(d[10:]))
		// Use them only if they make sense: a power of two minimum up to
		// 64 KiB, a maximum that is a multiple of it.
		if minB >= 1 && minB <= 64<<10 && minB&(minB-1) == 0 {
			c.minBlock = minB
		}
		if maxB >= c.minBlock && maxB%c.minBlock == 0 && maxB < c.maxReq {
			c.maxReq = max(maxB, c.minBlock)
		}
	}
	if c.maxReq%c.minBlock != 0 {
		c.maxReq = c.minBlock
	}
	return nil
}

// exportName is the old way into transmission, for servers without GO.
func (c *Client) exportName(name []byte, noZeroes bool) error {
	if err := c.sendOption(optExportName, name); err != nil {
		return err
	}
	n := 10
	if !noZeroes {
		n += 124
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(c.br, b); err != nil {
		return fmt.Errorf("the server refused export %q (closed the connection): %w", name, eofIsUnexpected(err))
	}
	size := be.Uint64(b)
	if size > maxExportSize {
		return protoErr("export size %d", size)
	}
	c.size = int64(size)
	return nil
}

// option sends an option and returns its single reply.
func (c *Client) option(opt uint32, data []byte) (uint32, []byte, error) {
	if err := c.sendOption(opt, data); err != nil {
		return 0, nil, err
	}
	return c.optionReply(opt)
}

func (c *Client) sendOption(opt uint32, data []byte) error {
	b := make([]byte, 16+len(data))
	be.PutUint64(b, magicOpt)
	be.PutUint32(b[8:], opt)
	be.PutUint32(b[12:], uint32(len(data)))
	copy(b[16:], data)
	_, err := c.conn.Write(b)
	return err
}

func (c *Client) optionReply(opt uint32) (uint32, []byte, error) {
	var h [20]byte
	if _, err := io.ReadFull(c.br, h[:]); err != nil {
		return 0, nil, fmt.Errorf("reading the server's option reply: %w", eofIsUnexpected(err))
	}
	if be.Uint64(h[0:]) != magicOptReply {
		return 0, nil, protoErr("bad option reply magic %x", h[:8])
	}
	if got := be.Uint32(h[8:]); got != opt {
		return 0, nil, protoErr("reply to option %d while waiting for %d", got, opt)
	}
	typ, n := be.Uint32(h[12:]), be.Uint32(h[16:])
	if n > maxOptReply {
		return 0, nil, protoErr("option reply of %d bytes", n)
	}
	data := make([]byte, n)
	if _, err := io.ReadFull(c.br, data); err != nil {
		return 0, nil, fmt.Errorf("reading the server's option reply: %w", eofIsUnexpected(err))
	}
	return typ, data, nil
}

func optionError(what string, typ uint32, data []byte) error {
	msg := sanitize(data)
	if msg != "" {
		msg = ": " + msg
	}
	switch typ {
	case repErrUnknown:
		return fmt.Errorf("%s: no such export%s", what, msg)
	case repErrPolicy:
		return fmt.Errorf("%s: refused by the server's policy%s", what, msg)
	case repErrTLSReqd:
		return fmt.Errorf("%s: the server requires TLS, which prezero does not speak%s", what, msg)
	}
	if typ&repErrBit != 0 {
		return fmt.Errorf("%s: server error %d%s", what, typ&^repErrBit, msg)
	}
	return protoErr("%s: unexpected reply %d", what, typ)
}

func eofIsUnexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// ErrClosed is returned for requests on a closed client.
var ErrClosed = errors.New("nbd: client closed")

// submit sends a command and registers it; the reply reader completes it.
func (c *Client) submit(r *request) error {
	c.slots <- struct{}{}
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		<-c.slots
		return err
	}
	c.next++
	h := c.next
	r.done = make(chan struct{})
	c.pending[h] = r
	c.mu.Unlock()

	var b [28]byte
	be.PutUint32(b[0:], magicRequest)
	be.PutUint16(b[4:], 0)
	be.PutUint16(b[6:], r.typ)
	be.PutUint64(b[8:], h)
	be.PutUint64(b[16:], uint64(r.off))
	be.PutUint32(b[24:], r.length)
	c.wmu.Lock()
	_, err := c.conn.Write(b[:])
	c.wmu.Unlock()
	if err != nil {
		c.fail(fmt.Errorf("nbd: sending a request: %w", err))
	}
	return nil
}

// fail ends the connection: every pending and later request gets err.
func (c *Client) fail(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	for h, r := range c.pending {
		if r.err == nil {
			r.err = c.err
		}
		delete(c.pending, h)
		close(r.done)
		<-c.slots
	}
	c.mu.Unlock()
	c.conn.Close()
}

// complete removes a finished request and wakes its caller.
func (c *Client) complete(h uint64, r *request) {
	c.mu.Lock()
	delete(c.pending, h)
	c.mu.Unlock()
	close(r.done)
	<-c.slots
}

func (c *Client) lookup(h uint64) *request {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pending[h]
}

// readReplies reads every reply and hands it to its request, until the
// connection ends or the server breaks the protocol.
func (c *Client) readReplies() {
	defer close(c.readerD)
	for {
		if err := c.readReply(); err != nil {
			if c.closed.Load() {
				err = ErrClosed
			} else if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				err = fmt.Errorf("nbd: the server closed the connection: %w", io.ErrUnexpectedEOF)
			}
			c.fail(err)
			return
		}
	}
}

func (c *Client) readReply() error {
	var m [4]byte
	if _, err := io.ReadFull(c.br, m[:]); err != nil {
		return err
	}
	switch be.Uint32(m[:]) {
	case magicSimple:
		return c.simpleReply()
	case magicStructured:
		if !c.structured {
			return protoErr("structured reply without negotiation")
		}
		return c.structuredChunk()
	}
	return protoErr("bad reply magic %x", m)
}

func (c *Client) simpleReply() error {
	var h [12]byte
	if _, err := io.ReadFull(c.br, h[:]); err != nil {
		return eofIsUnexpected(err)
	}
	errno, handle := be.Uint32(h[0:]), be.Uint64(h[4:])
	r := c.lookup(handle)
	if r == nil {
		return protoErr("reply for unknown handle %d", handle)
	}
	switch {
	case errno != 0:
		r.err = &ServerError{Errno: errnoOf(errno), Off: -1}
	case r.typ == cmdRead && c.structured:
		return protoErr("simple reply to a read after structured replies were negotiated")
	case r.typ == cmdRead:
		n, err := io.ReadFull(c.br, r.buf)
		c.received.Add(int64(n))
		if err != nil {
			return eofIsUnexpected(err)
		}
	case r.typ == cmdBlockStatus:
		r.err = protoErr("block status answered without extents")
	}
	c.complete(handle, r)
	return nil
}

func (c *Client) structuredChunk() error {
	var hb [16]byte
	if _, err := io.ReadFull(c.br, hb[:]); err != nil {
		return eofIsUnexpected(err)
	}
	h := parseChunkHeader(hb[:])
	r := c.lookup(h.handle)
	if r == nil {
		return protoErr("reply chunk for unknown handle %d", h.handle)
	}
	if err := c.chunk(r, h); err != nil {
		return err
	}
	if h.flags&replyFlagDone == 0 {
		return nil
	}
	if r.err == nil && r.typ == cmdRead && !r.got.full(int64(r.length)) {
		return protoErr("read reply at %d ends without all %d bytes", r.off, r.length)
	}
	c.complete(h.handle, r)
	return nil
}

// chunk handles one structured chunk's payload for request r.
func (c *Client) chunk(r *request, h chunkHeader) error {
	switch h.typ {
	case replyNone:
		if h.length != 0 || h.flags&replyFlagDone == 0 {
			return protoErr("NBD_REPLY_TYPE_NONE of %d bytes, flags %#x", h.length, h.flags)
		}
		return nil
	case replyOffsetData:
		if r.typ != cmdRead || h.length <= 8 {
			return protoErr("data chunk of %d bytes for command %d", h.length, r.typ)
		}
		var ob [8]byte
		if _, err := io.ReadFull(c.br, ob[:]); err != nil {
			return eofIsUnexpected(err)
		}
		a, b, err := r.span(be.Uint64(ob[:]), int64(h.length)-8)
		if err != nil {
			return err
		}
		n, err := io.ReadFull(c.br, r.buf[a:b])
		c.received.Add(int64(n))
		return eofIsUnexpected(err)
	case replyOffsetHole:
		if r.typ != cmdRead || h.length != 12 {
			return protoErr("hole chunk of %d bytes for command %d", h.length, r.typ)
		}
		var hb [12]byte
		if _, err := io.ReadFull(c.br, hb[:]); err != nil {
			return eofIsUnexpected(err)
		}
		n := int64(be.Uint32(hb[8:]))
		if n == 0 {
			return protoErr("hole chunk of length 0")
		}
		a, b, err := r.span(be.Uint64(hb[:]), n)
		if err != nil {
			return err
		}
		clear(r.buf[a:b])
		return nil
	case replyBlockStatus:
		if r.typ != cmdBlockStatus || h.length > maxStatusChunk {
			return protoErr("block status chunk of %d bytes for command %d", h.length, r.typ)
		}
		p := make([]byte, h.length)
		if _, err := io.ReadFull(c.br, p); err != nil {
			return eofIsUnexpected(err)
		}
		id, ext, err := parseBlockStatus(p, r.off, r.length)
		if err != nil {
			return err
		}
		if id == c.metaID && r.ext == nil {
			r.ext = ext
		}
		return nil
	}
	if h.typ&replyErrBit == 0 {
		return protoErr("unknown reply chunk type %d", h.typ)
	}
	if h.length > maxErrorPayload {
		return protoErr("error chunk of %d bytes", h.length)
	}
	p := make([]byte, h.length)
	if _, err := io.ReadFull(c.br, p); err != nil {
		return eofIsUnexpected(err)
	}
	var se *ServerError
	if h.typ == replyError || h.typ == replyErrorOffset {
		var err error
		if se, err = parseError(h.typ, p); err != nil {
			return err
		}
	} else {
		se = &ServerError{Errno: 5, Message: fmt.Sprintf("unknown error chunk type %d", h.typ), Off: -1}
	}
	if r.err == nil {
		r.err = se
	}
	return nil
}

// span checks that a reply piece [off, off+n) lies inside request r and
// overlaps no earlier piece, and returns it relative to r.buf.
func (r *request) span(off uint64, n int64) (int64, int64, error) {
	if off < uint64(r.off) || off-uint64(r.off) > uint64(r.length) || n > int64(r.length)-int64(off-uint64(r.off)) {
		return 0, 0, protoErr("reply piece [%d, +%d) outside the request [%d, +%d)", off, n, r.off, r.length)
	}
	a := int64(off - uint64(r.off))
	if err := r.got.add(a, a+n); err != nil {
		return 0, 0, err
	}
	return a, a + n, nil
}

func errnoOf(n uint32) syscall.Errno { return syscall.Errno(n) }

// ReadAt implements io.ReaderAt over the export.
func (c *Client) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("nbd: negative offset")
	}
	if off >= c.size {
		return 0, io.EOF
	}
	want := len(p)
	if rem := c.size - off; int64(len(p)) > rem {
		p = p[:rem]
	}
	end := off + int64(len(p))
	type piece struct {
		r        *request
		dst      []byte // where the wanted bytes go
		skip     int64  // of r.buf, when bounced
		bounced  bool
		submitOK bool
	}
	var pieces []piece
	for pos := off; pos < end; {
		cend := min(end, (pos/c.maxReq+1)*c.maxReq)
		a := pos - pos%c.minBlock
		b := min((cend+c.minBlock-1)/c.minBlock*c.minBlock, c.size)
		pc := piece{dst: p[pos-off : cend-off]}
		r := &request{typ: cmdRead, off: a, length: uint32(b - a)}
		if a == pos && b == cend {
			r.buf = pc.dst
		} else {
			r.buf = make([]byte, b-a)
			pc.bounced, pc.skip = true, pos-a
		}
		pc.r = r
		c.requested.Add(b - a)
		err := c.submit(r)
		pc.submitOK = err == nil
		if err != nil {
			r.err = err
		}
		pieces = append(pieces, pc)
		if err != nil {
			break
		}
		pos = cend
	}
	var first error
	n := 0
	for _, pc := range pieces {
		if pc.submitOK {
			<-pc.r.done
		}
		if pc.r.err != nil {
			if first == nil {
				first = fmt.Errorf("reading %d bytes at %d: %w", pc.r.length, pc.r.off, pc.r.err)
			}
			continue
		}
		if pc.bounced {
			copy(pc.dst, pc.r.buf[pc.skip:])
		}
		if first == nil {
			n += len(pc.dst)
		}
	}
	if first != nil {
		return n, first
	}
	if n < want {
		return n, io.EOF
	}
	return n, nil
}

// ZeroExtents calls fn for every range the server reports as reading as
// zeros (NBD_STATE_ZERO in base:allocation), in order. Without
// base:allocation it calls nothing.
func (c *Client) ZeroExtents(ctx context.Context, fn func(off, n int64)) error {
	if !c.hasMeta {
		return nil
	}
	const maxQuery = 1 << 30
	for off := int64(0); off < c.size; {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := min(c.size-off, maxQuery)
		r := &request{typ: cmdBlockStatus, off: off, length: uint32(n)}
		if err := c.submit(r); err != nil {
			return err
		}
		<-r.done
		if r.err != nil {
			return fmt.Errorf("block status at %d: %w", off, r.err)
		}
		if len(r.ext) == 0 {
			return protoErr("block status at %d reported no extents", off)
		}
		for _, e := range r.ext {
			if e.flags&stateZero != 0 {
				fn(e.off, e.len)
			}
			off = e.off + e.len
		}
	}
	return nil
}

// failure returns the error that ended the connection, or nil.
func (c *Client) failure() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Close ends the session (NBD_CMD_DISC) and closes the connection.
func (c *Client) Close() error {
	if c.closed.Swap(true) {
		return nil
	}
	c.mu.Lock()
	ok := c.err == nil
	c.mu.Unlock()
	if ok {
		var b [28]byte
		be.PutUint32(b[0:], magicRequest)
		be.PutUint16(b[6:], cmdDisc)
		c.wmu.Lock()
		c.conn.SetWriteDeadline(time.Now().Add(time.Second))
		c.conn.Write(b[:])
		c.wmu.Unlock()
	}
	err := c.conn.Close()
	<-c.readerD
	if errors.Is(err, net.ErrClosed) { // the server hung up first, as it may after DISC
		err = nil
	}
	return err
}
