package dtlschan

import (
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

// isClientHello reports whether a datagram from an unknown address starts
// with a DTLS ClientHello: a handshake record (type 22) of a DTLS version
// (major 0xfe) in epoch 0 whose first message is a client_hello (type 1).
// Anything else from an unknown address cannot start a session, so it is
// dropped before any state is made for it.
func isClientHello(b []byte) bool {
	const recordHeader = 13
	if len(b) < recordHeader+12 {
		return false
	}
	return b[0] == 22 && b[1] == 0xfe && b[3] == 0 && b[4] == 0 && b[recordHeader] == 1
}
