package dtlschan

import (
	"bytes"
	"container/list"
	"context"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/pion/transport/v2/deadline"
)

// peerQueue bounds the datagrams waiting for one peer's reader; past it they
// are dropped, as a full socket buffer would.
const peerQueue = 64

// receiveMTU is the read buffer of the shared socket: more than any datagram
// a peer with our MTU sends, so that nothing is truncated.
const receiveMTU = 8192

// peerConn is the net.Conn pion runs one server-side handshake and session
// on: the datagrams the listener's socket received from one address, and
// writes to that address.
type peerConn struct {
	sock  *net.UDPConn
	raddr netip.AddrPort
	in    chan []byte
	rdl   *deadline.Deadline

	closeOnce sync.Once
	done      chan struct{}
	onClose   func(*peerConn)

	// Set up by the Server, guarded by its mu: the handshake's cancel
	// (to evict or time out the peer), its place among the peers still to
	// echo a cookie, and whether it holds a verified handshake slot.
	cancel     context.CancelFunc
	unverified *list.Element
	slot       bool
	evicted    bool

	cookieMu sync.Mutex
	cookie   []byte // what pion's HelloVerifyRequest sent this address
}

// sentCookie records the cookie of an outgoing HelloVerifyRequest.
func (c *peerConn) sentCookie(p []byte) {
	if ck, ok := helloVerifyCookie(p); ok {
		c.cookieMu.Lock()
		c.cookie = append(c.cookie[:0], ck...)
		c.cookieMu.Unlock()
	}
}

// echoes reports whether datagram b is a ClientHello carrying the cookie
// sent to this address.
func (c *peerConn) echoes(b []byte) bool {
	ck, ok := clientHelloCookie(b)
	if !ok || len(ck) == 0 {
		return false
	}
	c.cookieMu.Lock()
	defer c.cookieMu.Unlock()
	return len(c.cookie) > 0 && bytes.Equal(ck, c.cookie)
}

func newPeerConn(sock *net.UDPConn, raddr netip.AddrPort, onClose func(*peerConn)) *peerConn {
	return &peerConn{
		sock: sock, raddr: raddr, in: make(chan []byte, peerQueue),
		rdl: deadline.New(), done: make(chan struct{}), onClose: onClose,
	}
}

// deliver queues a datagram; false if the queue is full and it was dropped.
func (c *peerConn) deliver(b []byte) bool {
	select {
	case c.in <- b:
		return true
	default:
		return false
	}
}

func (c *peerConn) Read(p []byte) (int, error) {
	select {
	case b := <-c.in:
		if len(b) > len(p) {
			return 0, io.ErrShortBuffer
		}
		return copy(p, b), nil
	case <-c.done:
		return 0, net.ErrClosed
	case <-c.rdl.Done():
		return 0, errTimeout{}
	}
}

func (c *peerConn) Write(p []byte) (int, error) {
	select {
	case <-c.done:
		return 0, net.ErrClosed
	default:
	}
	c.sentCookie(p)
	return c.sock.WriteToUDPAddrPort(p, c.raddr)
}

func (c *peerConn) Close() error {
	c.closeOnce.Do(func() {
		close(c.done)
		if c.onClose != nil {
			c.onClose(c)
		}
	})
	return nil
}

func (c *peerConn) LocalAddr() net.Addr  { return c.sock.LocalAddr() }
func (c *peerConn) RemoteAddr() net.Addr { return net.UDPAddrFromAddrPort(c.raddr) }

func (c *peerConn) SetDeadline(t time.Time) error     { return c.SetReadDeadline(t) }
func (c *peerConn) SetReadDeadline(t time.Time) error { c.rdl.Set(t); return nil }

// SetWriteDeadline does nothing: a UDP send does not wait for the peer.
func (c *peerConn) SetWriteDeadline(time.Time) error { return nil }

// errTimeout is the net.Error of a passed read deadline.
type errTimeout struct{}

func (errTimeout) Error() string   { return "dtlschan: read deadline exceeded" }
func (errTimeout) Timeout() bool   { return true }
func (errTimeout) Temporary() bool { return true }
