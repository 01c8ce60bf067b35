package dtlschan

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/ratelimit"
	"github.com/pion/dtls/v2"
	"github.com/pion/dtls/v2/pkg/crypto/elliptic"
)

// Errors a Session returns; callers branch on them with errors.Is.
var (
	// ErrTooLarge: a datagram longer than MaxPayload; nothing was sent.
	ErrTooLarge = errors.New("dtlschan: datagram larger than the path allows")
	// ErrRateLimited: WriteLimited found the node's send budget spent;
	// nothing was sent.
	ErrRateLimited = errors.New("dtlschan: send rate limit reached")
	// ErrIdle: the session saw no traffic for its idle timeout.
	ErrIdle = errors.New("dtlschan: session idle")
	// ErrReplaced: the same node completed a newer handshake.
	ErrReplaced = errors.New("dtlschan: session replaced by a newer one of the same node")
	// ErrClosed: the session or its listener was closed.
	ErrClosed = errors.New("dtlschan: closed")
	// ErrPeerClosed: the peer ended the session.
	ErrPeerClosed = errors.New("dtlschan: peer closed the session")
	// ErrWrongAddr: WriteTo named an address that is not the peer's.
	ErrWrongAddr = errors.New("dtlschan: not this session's peer")
)

const (
	// DefaultMTU is the largest UDP payload sent: a 1500-byte path less an
	// IPv6 and a UDP header, so the channel works over either family.
	DefaultMTU = 1500 - 40 - 8
	// minMTU keeps MaxPayload useful and the handshake fragmentable.
	minMTU = 576 - 40 - 8
	// recordOverhead is what TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 adds to
	// an application datagram: a 13-byte record header, the 8-byte explicit
	// nonce and the 16-byte tag.
	recordOverhead = 13 + 8 + 16
	// DefaultIdleTimeout closes a session that sent and received nothing.
	DefaultIdleTimeout = 2 * time.Minute
	// DefaultHandshakeTimeout bounds one handshake.
	DefaultHandshakeTimeout = 10 * time.Second
)

// cipherSuite is the only suite offered or accepted: ECDHE key exchange
// signed by the Ed25519 certificate key, and AES-128-GCM, which routers'
// CPUs without AES instructions still run fastest of pion's suites.
const cipherSuite = dtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256

// dtlsConfig is the configuration both ends share; verify checks the peer's
// certificate chain and done the finished handshake (see VerifyConnection).
func dtlsConfig(cert tls.Certificate, mtu int, log *slog.Logger,
	verify func([][]byte) error, done func(*dtls.State) error) *dtls.Config {
	return &dtls.Config{
		Certificates:         []tls.Certificate{cert},
		CipherSuites:         []dtls.CipherSuiteID{cipherSuite},
		SignatureSchemes:     []tls.SignatureScheme{tls.Ed25519},
		EllipticCurves:       []elliptic.Curve{elliptic.X25519},
		ExtendedMasterSecret: dtls.RequireExtendedMasterSecret,
		MTU:                  mtu,
		LoggerFactory:        pionLogs{log},
		// No CA: the peer is checked by its key in verify. For the
		// server, RequireAnyClientCert has pion check the client's
		// CertificateVerify (possession of the key) and call verify.
		InsecureSkipVerify: true,
		ClientAuth:         dtls.RequireAnyClientCert,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			return verify(raw)
		},
		VerifyConnection: done,
	}
}

// MaxPayload is the largest datagram a session with this MTU carries.
func maxPayload(mtu int) int { return mtu - recordOverhead }

// Session is one authenticated channel to one peer. It is a connected
// datagram conn: each Write is one datagram to the peer and each Read one
// datagram from it. It also implements net.PacketConn, so code reading
// multicast sockets reads it the same way. Safe for concurrent use.
type Session struct {
	conn       *dtls.Conn
	peer       identity.PublicKey
	id         string
	maxPayload int
	send       *ratelimit.Bucket // nil: WriteLimited is unlimited
	limited    *atomic.Uint64    // counts WriteLimited refusals; may be nil

	idle    time.Duration
	last    atomic.Int64 // unix nanoseconds of the last datagram either way
	timer   *time.Timer
	onClose func(*Session, error)

	closeOnce sync.Once
	done      chan struct{}
	err       error // why it closed; set before done is closed
}

func newSession(conn *dtls.Conn, peer identity.PublicKey, mtu int, idle time.Duration,
	send *ratelimit.Bucket, onClose func(*Session, error)) *Session {
	s := &Session{
		conn: conn, peer: peer, id: peer.String(), maxPayload: maxPayload(mtu),
		send: send, idle: idle, onClose: onClose, done: make(chan struct{}),
	}
	s.touch()
	if idle > 0 {
		s.timer = time.AfterFunc(idle, s.checkIdle)
	}
	return s
}

// NodeID is the peer's node ID (its base58 wallet key), as proven in the
// handshake.
func (s *Session) NodeID() string { return s.id }

// PeerKey is the peer's wallet key.
func (s *Session) PeerKey() identity.PublicKey { return s.peer }

// MaxPayload is the largest datagram Write sends: the MTU less the DTLS
// record's overhead.
func (s *Session) MaxPayload() int { return s.maxPayload }

// Done is closed when the session ends (Close, idle, replaced, listener
// closed, or a Read that found the peer gone); Err then says why.
func (s *Session) Done() <-chan struct{} { return s.done }

// Err is why the session ended (ErrIdle, ErrReplaced, ErrClosed,
// ErrPeerClosed), or nil while it is open.
func (s *Session) Err() error {
	select {
	case <-s.done:
		return s.err
	default:
		return nil
	}
}

func (s *Session) touch() { s.last.Store(time.Now().UnixNano()) }

// checkIdle runs on the idle timer: it closes the session or re-arms the
// timer for what is left of the timeout.
func (s *Session) checkIdle() {
	since := time.Duration(time.Now().UnixNano() - s.last.Load())
	if since >= s.idle {
		s.closeWith(ErrIdle)
		return
	}
	select {
	case <-s.done:
	default:
		s.timer.Reset(s.idle - since)
	}
}

// Read reads one datagram into p, which should hold MaxPayload bytes: a
// datagram longer than p is an error, never silently cut.
func (s *Session) Read(p []byte) (int, error) {
	n, err := s.conn.Read(p)
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
			// The peer said close_notify, or the conn is gone: the session
			// is over, and Done says so.
			s.closeWith(fmt.Errorf("%w: %w", ErrPeerClosed, err))
		}
		return n, s.mapErr(err)
	}
	s.touch()
	return n, nil
}

// Write sends p as one datagram.
func (s *Session) Write(p []byte) (int, error) {
	if len(p) > s.maxPayload {
		return 0, fmt.Errorf("%w: %d bytes, at most %d", ErrTooLarge, len(p), s.maxPayload)
	}
	n, err := s.conn.Write(p)
	if err != nil {
		return n, s.mapErr(err)
	}
	s.touch()
	return n, nil
}

// WriteLimited sends p if the peer's send budget (ListenConfig.SendRate,
// shared by all sessions of one node) has len(p) bytes left, and otherwise
// returns ErrRateLimited having sent nothing. Repairs go through it.
func (s *Session) WriteLimited(p []byte) (int, error) {
	if len(p) > s.maxPayload {
		return 0, fmt.Errorf("%w: %d bytes, at most %d", ErrTooLarge, len(p), s.maxPayload)
	}
	if s.send != nil && !s.send.AllowN(time.Now(), len(p)) {
		if s.limited != nil {
			s.limited.Add(1)
		}
		return 0, ErrRateLimited
	}
	return s.Write(p)
}

// ReadFrom is Read, returning the peer's address.
func (s *Session) ReadFrom(p []byte) (int, net.Addr, error) {
	n, err := s.Read(p)
	return n, s.RemoteAddr(), err
}

// WriteTo is Write; addr must be nil or the peer's address.
func (s *Session) WriteTo(p []byte, addr net.Addr) (int, error) {
	if addr != nil && addr.String() != s.RemoteAddr().String() {
		return 0, fmt.Errorf("%w: %s", ErrWrongAddr, addr)
	}
	return s.Write(p)
}

// mapErr reports a closed session as its reason for closing.
func (s *Session) mapErr(err error) error {
	select {
	case <-s.done:
		return fmt.Errorf("%w (%w)", s.err, err)
	default:
		return err
	}
}

// LocalAddr is the local UDP address.
func (s *Session) LocalAddr() net.Addr { return s.conn.LocalAddr() }

// RemoteAddr is the peer's UDP address.
func (s *Session) RemoteAddr() net.Addr { return s.conn.RemoteAddr() }

// SetDeadline sets the read and write deadlines.
func (s *Session) SetDeadline(t time.Time) error { return s.conn.SetDeadline(t) }

// SetReadDeadline makes a blocked Read return an error at t.
func (s *Session) SetReadDeadline(t time.Time) error { return s.conn.SetReadDeadline(t) }

// SetWriteDeadline makes Write return an error after t.
func (s *Session) SetWriteDeadline(t time.Time) error { return s.conn.SetWriteDeadline(t) }

// Close ends the session, telling the peer (close_notify).
func (s *Session) Close() error { return s.closeWith(ErrClosed) }

func (s *Session) closeWith(reason error) error {
	var err error
	s.closeOnce.Do(func() {
		s.err = reason
		if s.timer != nil {
			s.timer.Stop()
		}
		err = s.conn.Close()
		if s.onClose != nil {
			s.onClose(s, reason)
		}
		// Last, so that whoever waits on Done sees the bookkeeping done.
		close(s.done)
	})
	return err
}
