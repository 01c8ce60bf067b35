// Package connguard bounds what slow or hostile HTTP clients can hold: the
// time to send a request body, writes to a client that stops reading, and
// (on a router with few file descriptors) the number of open connections.
// It is stdlib only: the beacon imports it.
//
// A total WriteTimeout would cut long downloads of big objects, and
// http.Server's ReadTimeout also cancels a long response's context once it
// passes, so neither is used: a write fails only when it makes no progress
// for WriteStall (the deadline moves on with every byte accepted), and only
// the reading of a request body is bounded in time.
package connguard

import (
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults.
const (
	DefaultWriteStall  = 30 * time.Second
	DefaultBodyTimeout = 30 * time.Second
)

// ErrBodyTimeout is what a handler reading a body gets once BodyTimeout has
// passed (wrapped together with the connection's timeout error).
var ErrBodyTimeout = errors.New("connguard: request body not received in time")

// Listener wraps ln so that a write to an accepted connection that makes no
// progress for stall fails (0: DefaultWriteStall), and, when maxConns > 0,
// at most maxConns connections are open at once: Accept waits for a slot,
// and later clients wait in the kernel's backlog until one frees.
func Listener(ln net.Listener, stall time.Duration, maxConns int) net.Listener {
	if stall <= 0 {
		stall = DefaultWriteStall
	}
	l := &listener{Listener: ln, stall: stall, closed: make(chan struct{})}
	if maxConns > 0 {
		l.slots = make(chan struct{}, maxConns)
	}
	return l
}

type listener struct {
	net.Listener
	stall     time.Duration
	slots     chan struct{} // nil: no cap
	closed    chan struct{}
	closeOnce sync.Once
	stalls    atomic.Int64 // writes failed for lack of progress
	open      atomic.Int64 // accepted connections not yet closed
}

func (l *listener) Accept() (net.Conn, error) {
	if l.slots != nil {
		select {
		case l.slots <- struct{}{}:
		case <-l.closed:
			return nil, net.ErrClosed
		}
	}
	c, err := l.Listener.Accept()
	if err != nil {
		if l.slots != nil {
			<-l.slots
		}
		return nil, err
	}
	l.open.Add(1)
	return &conn{Conn: c, l: l}, nil
}

func (l *listener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

// InUse is the number of connections accepted from ln and not yet closed.
func InUse(ln net.Listener) int {
	if l, ok := ln.(*listener); ok {
		return int(l.open.Load())
	}
	return 0
}

// Stalls is how many writes to ln's connections failed because the client
// accepted nothing for the stall period.
func Stalls(ln net.Listener) int64 {
	if l, ok := ln.(*listener); ok {
		return l.stalls.Load()
	}
	return 0
}

type conn struct {
	net.Conn
	l       *listener
	release sync.Once
}

func (c *conn) Close() error {
	err := c.Conn.Close()
	c.release.Do(func() {
		c.l.open.Add(-1)
		if c.l.slots != nil {
			<-c.l.slots
		}
	})
	return err
}

// Write writes p, failing only when no byte goes out for stall.
func (c *conn) Write(p []byte) (int, error) {
	var total int
	for {
		c.Conn.SetWriteDeadline(time.Now().Add(c.l.stall))
		n, err := c.Conn.Write(p)
		total += n
		p = p[n:]
		if err == nil || !progressed(n, err) {
			c.stalled(err)
			return total, err
		}
	}
}

// ReadFrom keeps the connection's own ReadFrom (sendfile(2) for a file body)
// with the same progress rule.
func (c *conn) ReadFrom(r io.Reader) (int64, error) {
	rf, ok := c.Conn.(io.ReaderFrom)
	if !ok {
		return io.Copy(writerOnly{c}, r)
	}
	var total int64
	for {
		c.Conn.SetWriteDeadline(time.Now().Add(c.l.stall))
		n, err := rf.ReadFrom(r)
		total += n
		if err == nil || !progressed(int(min(n, 1)), err) {
			c.stalled(err)
			return total, err
		}
	}
}

func (c *conn) stalled(err error) {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		c.l.stalls.Add(1)
	}
}

// progressed: the write timed out after sending something, so the client
// is reading, only slowly: the deadline moves on.
func progressed(n int, err error) bool {
	return n > 0 && errors.Is(err, os.ErrDeadlineExceeded)
}

type writerOnly struct{ io.Writer }

// Body bounds the time a request's body may take to arrive (0:
// DefaultBodyTimeout). The deadline is lifted once the body has been read,
// so a long response is not affected.
func Body(h http.Handler, timeout time.Duration) http.Handler {
	if timeout <= 0 {
		timeout = DefaultBodyTimeout
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
			h.ServeHTTP(w, r)
			return
		}
		rc := http.NewResponseController(w)
		if err := rc.SetReadDeadline(time.Now().Add(timeout)); err != nil {
			// Not a real connection (a test recorder): nothing to bound.
			h.ServeHTTP(w, r)
			return
		}
		// Lifted at the body's end only: a body left unread keeps the
		// deadline, which then bounds the server's discarding of it too.
		r.Body = &body{ReadCloser: r.Body, rc: rc}
		h.ServeHTTP(w, r)
	})
}

type body struct {
	io.ReadCloser
	rc   *http.ResponseController
	once sync.Once
}

func (b *body) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	switch {
	case err == io.EOF:
		b.done()
	case err != nil && errors.Is(err, os.ErrDeadlineExceeded):
		err = errors.Join(ErrBodyTimeout, err)
	}
	return n, err
}

// done lifts the read deadline (the server sets its own for the next request).
func (b *body) done() {
	b.once.Do(func() { b.rc.SetReadDeadline(time.Time{}) })
}

// net/http sends file bodies with sendfile only through an io.ReaderFrom.
var _ io.ReaderFrom = (*conn)(nil)

// CloseWrite half-closes a TCP connection, as net/http does before closing
// one it has answered with an error.
func (c *conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
