package nbd

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"net"
	"strings"
	"testing"
	"time"
)

// TestStall: a server that stops answering fails the client within its
// timeout, naming the server, in the handshake and in the transmission
// phase; a slow server that keeps sending, and an idle client, do not.
func TestStall(t *testing.T) {
	const timeout = 300 * time.Millisecond
	within := func(t *testing.T, start time.Time) {
		t.Helper()
		if d := time.Since(start); d < timeout || d > timeout+2*time.Second {
			t.Fatalf("gave up after %v, timeout %v", d, timeout)
		}
	}

	t.Run("handshake", func(t *testing.T) {
		a, b := net.Pipe() // b never writes
		defer b.Close()
		start := time.Now()
		_, err := NewClient(a, "", "the silent server", timeout)
		within(t, start)
		if !errors.Is(err, ErrStalled) || !strings.Contains(err.Error(), "the silent server") {
			t.Fatalf("err = %v", err)
		}
	})

	t.Run("read", func(t *testing.T) {
		a, b := net.Pipe()
		go fakeServerOpts(b, nil, fakeOpts{stall: true})
		c, err := NewClient(a, "", "the stalled server", timeout)
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		start := time.Now()
		go func() {
			_, err := c.ReadAt(make([]byte, 300<<10), 4096) // several requests
			done <- err
		}()
		select {
		case err = <-done:
		case <-time.After(timeout + 10*time.Second):
			t.Fatal("ReadAt hangs on a stalled server")
		}
		within(t, start)
		if !errors.Is(err, ErrStalled) || !strings.Contains(err.Error(), "the stalled server") {
			t.Fatalf("err = %v", err)
		}
		// The connection is given up: later requests fail at once.
		start = time.Now()
		if _, err := c.ReadAt(make([]byte, 512), 0); !errors.Is(err, ErrStalled) || time.Since(start) > time.Second {
			t.Fatalf("later ReadAt: %v after %v", err, time.Since(start))
		}
		closed := make(chan error, 1)
		go func() { closed <- c.Close() }()
		select {
		case <-closed:
		case <-time.After(5 * time.Second):
			t.Fatal("Close hangs")
		}
	})

	t.Run("slow but alive", func(t *testing.T) {
		data := make([]byte, 512)
		rand.Read(data)
		payload := binary.BigEndian.AppendUint64(nil, 0)
		reply := chunk(replyFlagDone, replyOffsetData, 1, append(payload, data...))
		a, b := net.Pipe()
		// 19 pieces 100 ms apart: the reply takes ~6 timeouts, but bytes
		// keep coming.
		go fakeServerOpts(b, reply, fakeOpts{pace: timeout / 3})
		c, err := NewClient(a, "", "the slow server", timeout)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		time.Sleep(2 * timeout) // idle: nothing is waiting, so no stall
		start := time.Now()
		p := make([]byte, 512)
		if n, err := c.ReadAt(p, 0); n != 512 || err != nil {
			t.Fatalf("ReadAt = %d, %v", n, err)
		}
		if !bytes.Equal(p, data) {
			t.Fatal("wrong data")
		}
		if d := time.Since(start); d < 2*timeout {
			t.Fatalf("the reply took only %v: the test proves nothing", d)
		}
		if _, err := c.ReadAt(p, 0); err == nil || errors.Is(err, ErrStalled) {
			// The server hung up after its one reply.
			t.Fatalf("second ReadAt: %v", err)
		}
	})
}
