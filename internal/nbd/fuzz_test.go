package nbd

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"
)

const fuzzSize = 1 << 20

// fakeServer plays a server on conn: a correct handshake offering
// structured replies and base:allocation (context id 1) for a 1 MiB
// export, then replies, whatever they are, then it hangs up. Requests are
// read and dropped.
func fakeServer(conn net.Conn, replies []byte) { fakeServerOpts(conn, replies, fakeOpts{}) }

// fakeOpts make fakeServer slow: pace sends the replies in 30-byte pieces
// that far apart; stall keeps the connection open, silent, after them
// until the client hangs up.
type fakeOpts struct {
	pace  time.Duration
	stall bool
}

func fakeServerOpts(conn net.Conn, replies []byte, o fakeOpts) {
	defer conn.Close()
	w := func(b ...[]byte) {
		for _, p := range b {
			if len(p) > 0 { // net.Pipe blocks on an empty write until a read
				conn.Write(p)
			}
		}
	}
	u16 := func(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }
	u32 := func(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
	u64 := func(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }
	optReply := func(opt, typ uint32, data []byte) {
		w(u64(magicOptReply), u32(opt), u32(typ), u32(uint32(len(data))), data)
	}
	readOpt := func() (uint32, bool) {
		var h [16]byte
		if _, err := io.ReadFull(conn, h[:]); err != nil {
			return 0, false
		}
		if _, err := io.CopyN(io.Discard, conn, int64(binary.BigEndian.Uint32(h[12:]))); err != nil {
			return 0, false
		}
		return binary.BigEndian.Uint32(h[8:]), true
	}
	w(u64(magicNBD), u64(magicOpt), u16(flagFixedNewstyle|flagNoZeroes))
	var cf [4]byte
	if _, err := io.ReadFull(conn, cf[:]); err != nil {
		return
	}
	for {
		opt, ok := readOpt()
		if !ok {
			return
		}
		switch opt {
		case optStructured:
			optReply(opt, repAck, nil)
		case optSetMetaContext:
			optReply(opt, repMetaContext, append(u32(1), metaAllocation...))
			optReply(opt, repAck, nil)
		case optGo:
			optReply(opt, repInfo, append(append(u16(infoExport), u64(fuzzSize)...), u16(1)...))
			optReply(opt, repInfo, append(append(append(u16(infoBlockSize), u32(512)...), u32(4096)...), u32(1<<20)...))
			optReply(opt, repAck, nil)
			// Answer only once the first request is there.
			var req [28]byte
			if _, err := io.ReadFull(conn, req[:]); err != nil {
				return
			}
			if o.stall {
				defer io.Copy(io.Discard, conn)
			} else {
				go io.Copy(io.Discard, conn)
			}
			for o.pace > 0 && len(replies) > 30 {
				w(replies[:30])
				replies = replies[30:]
				time.Sleep(o.pace)
			}
			w(replies)
			return
		default:
			optReply(opt, repErrUnsup, nil)
		}
	}
}

// chunk builds a structured reply chunk.
func chunk(flags, typ uint16, handle uint64, payload []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, magicStructured)
	b = binary.BigEndian.AppendUint16(b, flags)
	b = binary.BigEndian.AppendUint16(b, typ)
	b = binary.BigEndian.AppendUint64(b, handle)
	b = binary.BigEndian.AppendUint32(b, uint32(len(payload)))
	return append(b, payload...)
}

// fuzzSeeds are well-formed answers to the fuzz run's first request
// (handle 1): mode 0 a 64 KiB read at 0, mode 1 block status of the
// whole export. The first byte of an input is the mode.
func fuzzSeeds() [][]byte {
	be := binary.BigEndian
	status := be.AppendUint32(nil, 1)
	status = be.AppendUint32(status, 512<<10)
	status = be.AppendUint32(status, 0)
	status = be.AppendUint32(status, 512<<10)
	status = be.AppendUint32(status, 3)
	data := be.AppendUint64(nil, 0)
	data = append(data, make([]byte, 32<<10)...)
	hole := be.AppendUint64(nil, 32<<10)
	hole = be.AppendUint32(hole, 32<<10)
	errp := be.AppendUint32(nil, 5)
	errp = be.AppendUint16(errp, 4)
	errp = append(errp, "oops"...)
	errp = be.AppendUint64(errp, 100)
	read := append([]byte{0}, chunk(0, replyOffsetData, 1, data)...)
	read = append(read, chunk(replyFlagDone, replyOffsetHole, 1, hole)...)
	readErr := append([]byte{0}, chunk(0, replyErrorOffset, 1, errp)...)
	readErr = append(readErr, chunk(replyFlagDone, replyNone, 1, nil)...)
	bs := append([]byte{1}, chunk(replyFlagDone, replyBlockStatus, 1, status)...)
	simple := binary.BigEndian.AppendUint32([]byte{1}, magicSimple)
	simple = be.AppendUint32(simple, 22)
	simple = be.AppendUint64(simple, 1)
	return [][]byte{read, readErr, bs, simple, {0}}
}

// FuzzReplies feeds a client arbitrary transmission-phase replies: it must
// return an error or correct data, never panic, hang or read past a buffer.
func FuzzReplies(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) == 0 {
			return
		}
		a, b := net.Pipe()
		go fakeServer(b, in[1:])
		c, err := NewClient(a, "", "fake", 5*time.Second)
		if err != nil {
			t.Fatalf("handshake: %v", err)
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			if in[0] != 0 {
				last := int64(0)
				c.ZeroExtents(context.Background(), func(off, n int64) {
					if off < last || n <= 0 || off+n > fuzzSize {
						t.Errorf("zero extent [%d, +%d) out of order or outside the export", off, n)
					}
					last = off + n
				})
				return
			}
			p := make([]byte, 64<<10)
			n, err := c.ReadAt(p, 0)
			if n < 0 || n > len(p) || (n < len(p) && err == nil) {
				t.Errorf("ReadAt = %d, %v", n, err)
			}
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("client hangs")
		}
		c.Close()
	})
}

func TestFuzzSeedsParse(t *testing.T) {
	// The well-formed seed must read as the data it describes.
	a, b := net.Pipe()
	go fakeServer(b, fuzzSeeds()[2][1:])
	c, err := NewClient(a, "", "fake", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var zero [][2]int64
	if err := c.ZeroExtents(context.Background(), func(off, n int64) { zero = append(zero, [2]int64{off, n}) }); err != nil {
		t.Fatal(err)
	}
	if len(zero) != 1 || zero[0] != [2]int64{512 << 10, 512 << 10} {
		t.Fatalf("zero extents %v", zero)
	}
	a, b = net.Pipe()
	go fakeServer(b, fuzzSeeds()[0][1:])
	c, err = NewClient(a, "", "fake", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p := make([]byte, 64<<10)
	for i := range p {
		p[i] = 1
	}
	if n, err := c.ReadAt(p, 0); n != len(p) || err != nil {
		t.Fatalf("ReadAt = %d, %v", n, err)
	}
	for i, v := range p {
		if v != 0 {
			t.Fatalf("byte %d = %d", i, v)
		}
	}
}
