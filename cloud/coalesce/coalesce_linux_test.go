package coalesce

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/nettest"
)

func newPoller(t testing.TB, interval time.Duration) *Poller {
	t.Helper()
	p, err := New(interval, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// pipe is a loopback TCP connection with both ends wrapped.
func pipe(p *Poller) (c1, c2 net.Conn, stop func(), err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, nil, err
	}
	defer ln.Close()
	type res struct {
		c   net.Conn
		err error
	}
	acc := make(chan res, 1)
	go func() {
		c, err := ln.Accept()
		acc <- res{c, err}
	}()
	d, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		return nil, nil, nil, err
	}
	r := <-acc
	if r.err != nil {
		d.Close()
		return nil, nil, nil, r.err
	}
	if c1, err = p.Wrap(r.c); err != nil {
		d.Close()
		return nil, nil, nil, err
	}
	if c2, err = p.Wrap(d); err != nil {
		c1.Close()
		return nil, nil, nil, err
	}
	return c1, c2, func() { c1.Close(); c2.Close() }, nil
}

// TestConnConformance runs x/net's net.Conn conformance suite (I/O,
// deadlines past, present and future, Close racing I/O, concurrent
// methods) on wrapped connections.
func TestConnConformance(t *testing.T) {
	for _, iv := range []time.Duration{time.Millisecond, 4 * time.Millisecond} {
		t.Run(iv.String(), func(t *testing.T) {
			p := newPoller(t, iv)
			nettest.TestConn(t, func() (net.Conn, net.Conn, func(), error) { return pipe(p) })
		})
	}
}

func TestWrapErrors(t *testing.T) {
	p := newPoller(t, time.Millisecond)
	// Not a socket: left alone.
	a, b := net.Pipe()
	defer b.Close()
	if c, err := p.Wrap(a); err != nil || c != a {
		t.Fatalf("Wrap(net.Pipe) = %v, %v; want it back unchanged", c, err)
	}
	if _, err := New(0, nil); err == nil {
		t.Fatal("New(0) succeeded")
	}
	// After Close: refused, and the connection is closed.
	c1, c2, stop, err := pipe(p)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		if c, err := ln.Accept(); err == nil {
			defer c.Close()
			io.Copy(io.Discard, c)
		}
	}()
	d, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Wrap(d); !errors.Is(err, ErrClosed) {
		t.Fatalf("Wrap after Close: %v, want ErrClosed", err)
	}
	// Close also closed the connections it served.
	if _, err := c1.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read after poller Close: %v", err)
	}
	if _, err := c2.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after poller Close: %v", err)
	}
}

// TestBulk moves more than the socket buffers hold each way at once, so
// that writers meet EAGAIN and wait for the poller.
func TestBulk(t *testing.T) {
	p := newPoller(t, 5*time.Millisecond)
	c1, c2, stop, err := pipe(p)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	data := make([]byte, 16<<20)
	rand.Read(data)
	var wg sync.WaitGroup
	got := make([][]byte, 2)
	for i, pair := range [][2]net.Conn{{c1, c2}, {c2, c1}} {
		wg.Add(2)
		go func() {
			defer wg.Done()
			if n, err := pair[0].Write(data); err != nil || n != len(data) {
				t.Errorf("write: %d, %v", n, err)
			}
		}()
		go func() {
			defer wg.Done()
			buf := make([]byte, len(data))
			if _, err := io.ReadFull(pair[1], buf); err != nil {
				t.Errorf("read: %v", err)
			}
			got[i] = buf
		}()
	}
	wg.Wait()
	for i := range got {
		if !bytes.Equal(got[i], data) {
			t.Fatalf("direction %d: data differ", i)
		}
	}
}

func TestEOFAndDeadline(t *testing.T) {
	p := newPoller(t, 10*time.Millisecond)
	c1, c2, stop, err := pipe(p)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	// A deadline moved closer while a Read waits ends that Read.
	errc := make(chan error, 1)
	go func() {
		_, err := c1.Read(make([]byte, 8))
		errc <- err
	}()
	time.Sleep(20 * time.Millisecond)
	start := time.Now()
	c1.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
	select {
	case err := <-errc:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("read: %v, want deadline exceeded", err)
		}
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("%v is not a timeout net.Error", err)
		}
		if d := time.Since(start); d < 25*time.Millisecond {
			t.Fatalf("read ended after %v, before its deadline", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("read did not end at its deadline")
	}
	// The peer's close is EOF after the data it sent.
	c1.SetReadDeadline(time.Time{})
	if _, err := c2.Write([]byte("bye")); err != nil {
		t.Fatal(err)
	}
	c2.Close()
	b, err := io.ReadAll(c1)
	if err != nil || string(b) != "bye" {
		t.Fatalf("ReadAll = %q, %v", b, err)
	}
}

// TestEOFWithLastData: the peer's last bytes and its FIN come in one event
// while the poller sleeps; after reading the bytes, Read must see the end
// rather than wait for another event.
func TestEOFWithLastData(t *testing.T) {
	p := newPoller(t, 200*time.Millisecond)
	for i := 0; i < 5; i++ {
		c1, c2, stop, err := pipe(p)
		if err != nil {
			t.Fatal(err)
		}
		// A first byte starts a round; the poller then sleeps 200 ms.
		if _, err := c2.Write([]byte{1}); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c1, make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
		// The reader waits before the last bytes and the end arrive.
		c1.SetReadDeadline(time.Now().Add(3 * time.Second))
		buf := make([]byte, 64)
		type res struct {
			n   int
			err error
		}
		first := make(chan res, 1)
		go func() {
			n, err := c1.Read(buf)
			first <- res{n, err}
		}()
		time.Sleep(20 * time.Millisecond)
		if _, err := c2.Write([]byte("last")); err != nil {
			t.Fatal(err)
		}
		c2.Close()
		r := <-first
		if r.err != nil || string(buf[:r.n]) != "last" {
			t.Fatalf("read = %q, %v", buf[:r.n], r.err)
		}
		if n, err := c1.Read(buf); err != io.EOF {
			t.Fatalf("after the last data: %d, %v; want EOF", n, err)
		}
		stop()
	}
}

// TestCoalesces checks the point of the package: many connections sending
// one message each, spread over time, cost the poller far fewer rounds
// than messages, and every message arrives.
func TestCoalesces(t *testing.T) {
	const (
		conns    = 50
		interval = 20 * time.Millisecond
	)
	p := newPoller(t, interval)
	var (
		servers, clients []net.Conn
		wg               sync.WaitGroup
	)
	got := make(chan time.Duration, conns)
	for i := 0; i < conns; i++ {
		c1, c2, stop, err := pipe(p)
		if err != nil {
			t.Fatal(err)
		}
		defer stop()
		servers, clients = append(servers, c1), append(clients, c2)
	}
	sent := make([]time.Time, conns)
	for i, s := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 16)
			if _, err := io.ReadFull(s, buf[:5]); err != nil {
				t.Error(err)
				return
			}
			got <- time.Since(sent[i])
		}()
	}
	r0 := p.Rounds()
	for i, c := range clients {
		sent[i] = time.Now()
		if _, err := c.Write([]byte("hello")); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
	}
	wg.Wait()
	close(got)
	var worst time.Duration
	for d := range got {
		worst = max(worst, d)
	}
	rounds := p.Rounds() - r0
	t.Logf("%d messages over ~%v: %d poll rounds, slowest delivery %v", conns, time.Duration(conns)*time.Millisecond, rounds, worst)
	if rounds > conns/3 {
		t.Errorf("%d rounds for %d messages sent 1 ms apart with a %v interval: not coalesced", rounds, conns, interval)
	}
}
