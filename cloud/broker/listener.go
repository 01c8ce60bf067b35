package broker

import (
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mochi-mqtt/server/v2/listeners"

	"github.com/blockcast/beacon/cloud/coalesce"
)

// listener is a mochi TCP listener that also bounds the handshake: mochi
// sets no deadline until CONNECT has been read and counts a client against
// MaximumClients only after it authenticates, so without this a peer could
// hold any number of silent connections open. Each new connection must pass
// the gate (a per-address connection rate, a per-address and a global
// handshake slot; otherwise it is closed at once) and send CONNECT within
// the timeout; mochi's first SetDeadline, made once CONNECT is read, gives
// the slots back. One address can so hold only its own few slots, never
// the ones every other node needs to reconnect.
type listener struct {
	id      string
	addr    string
	tlsConf *tls.Config
	timeout time.Duration
	gate    *gate
	log     *slog.Logger
	batch   time.Duration // coalesce reads; <= 0: off

	mu     sync.Mutex
	ln     net.Listener
	poller *coalesce.Poller
	closed atomic.Bool
}

var _ listeners.Listener = (*listener)(nil)

func (l *listener) ID() string       { return l.id }
func (l *listener) Protocol() string { return "tcp" }

func (l *listener) Address() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ln != nil {
		return l.ln.Addr().String()
	}
	return l.addr
}

func (l *listener) Init(_ *slog.Logger) error {
	ln, err := net.Listen("tcp", l.addr)
	if err != nil {
		return err
	}
	var poller *coalesce.Poller
	if l.batch > 0 {
		if poller, err = coalesce.New(l.batch, l.log); err != nil {
			ln.Close()
			return err
		}
	}
	l.mu.Lock()
	l.ln, l.poller = ln, poller
	l.mu.Unlock()
	return nil
}

func (l *listener) Serve(establish listeners.EstablishFn) {
	var backoff time.Duration
	for {
		conn, err := l.ln.Accept()
		if err != nil {
			if l.closed.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: wait, do not spin.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			l.log.Warn("mqtt accept", "err", err, "retry_in", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		src := remoteAddr(conn)
		if !l.gate.admit(src, time.Now()) {
			conn.Close() // counted, and logged in summary: a flood makes no log flood
			continue
		}
		if l.poller != nil {
			if conn, err = l.poller.Wrap(conn); err != nil {
				l.gate.release(src)
				if !l.closed.Load() {
					l.log.Warn("mqtt: cannot coalesce a connection's reads; closed it", "err", err)
				}
				continue
			}
		}
		if l.tlsConf != nil {
			conn = tls.Server(conn, l.tlsConf)
		}
		_ = conn.SetDeadline(time.Now().Add(l.timeout))
		hc := &handshakeConn{Conn: conn, gate: l.gate, src: src}
		go func() {
			err := establish(l.id, hc)
			if hc.release() && isTimeout(err) {
				// Still in the handshake when the deadline struck: a
				// silent or slow peer holding a slot.
				l.gate.count(shedTimeout, src, time.Now())
			}
			if err != nil {
				l.log.Debug("mqtt connection ended", "remote", conn.RemoteAddr(), "err", err)
			}
		}()
	}
}

// rounds is how often the poller has read clients' packets (0 if reads are
// not coalesced).
func (l *listener) rounds() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.poller == nil {
		return 0
	}
	return l.poller.Rounds()
}

func (l *listener) Close(closeClients listeners.CloseFn) {
	if !l.closed.CompareAndSwap(false, true) {
		return
	}
	closeClients(l.id)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ln != nil {
		_ = l.ln.Close()
	}
	if l.poller != nil {
		_ = l.poller.Close()
	}
}

// handshakeConn gives its slots back on the first deadline mochi sets
// (CONNECT has been read) or when the connection ends.
type handshakeConn struct {
	net.Conn
	gate *gate
	src  netip.Addr
	done atomic.Bool
}

// release gives the slots back; it reports whether this call did (the
// connection was still in its handshake).
func (c *handshakeConn) release() bool {
	if !c.done.CompareAndSwap(false, true) {
		return false
	}
	c.gate.release(c.src)
	return true
}

// isTimeout reports whether err is a deadline expiring (plain or inside
// TLS or mochi's wrapping).
func isTimeout(err error) bool {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// restPad is how much deeper Read makes a connection goroutine rest.
const restPad = 3 << 10

// Read keeps the connection's goroutine resting at over a quarter of its
// working stack. mochi handles each packet on the goroutine that reads the
// connection, in frames that add up to over 16 KiB, so the stack grows to
// 32 KiB; between packets the goroutine rests about 6 KiB deep, in this
// Read, and the runtime halves a stack that is less than a quarter used at
// every GC, only for the next packet to grow it back (a copy and fresh
// pages). With 10,000 nodes reporting that churn cost castd more CPU than
// the broker's own work; resting 3 KiB deeper costs no memory a reporting
// node does not already hold between GCs.
//
//go:noinline
func (c *handshakeConn) Read(p []byte) (int, error) {
	var pad [restPad]byte
	pad[len(p)%restPad] = 1
	n, err := c.Conn.Read(p)
	if pad[uint(n)%restPad] == 2 { // never, but it keeps pad in the frame
		return 0, errors.ErrUnsupported
	}
	return n, err
}

func (c *handshakeConn) SetDeadline(t time.Time) error {
	c.release()
	return c.Conn.SetDeadline(t)
}
