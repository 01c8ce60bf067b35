package dtlschan

import (
	"container/list"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/ratelimit"
	"github.com/pion/dtls/v2"
)

// Errors of the listener's refusals, wrapped in what it logs.
var (
	// ErrUnregistered: the peer's key is valid but Accept refused its node ID.
	ErrUnregistered = errors.New("dtlschan: node not registered")
	// errNotVerified: a handshake finished without the certificate check
	// having run (it cannot with our config; this keeps it so).
	errNotVerified = errors.New("dtlschan: peer certificate not verified")

	// Why the listener gave up on a handshake before it finished.
	errNoEcho  = errors.New("dtlschan: the peer did not echo the hello cookie in time")
	errEvicted = errors.New("dtlschan: evicted by newer hellos while waiting for the cookie echo")
)

// ListenConfig holds the listener's limits; the zero value uses defaults.
type ListenConfig struct {
	MTU              int           // largest UDP payload sent; default DefaultMTU
	HandshakeTimeout time.Duration // default DefaultHandshakeTimeout
	IdleTimeout      time.Duration // default DefaultIdleTimeout; <0: never
	MaxHandshakes    int           // handshakes past the cookie echo at once; default 64
	MaxUnverified    int           // handshakes waiting for the cookie echo; default 1024
	HelloTimeout     time.Duration // to echo the cookie; default 3 s
	MaxPerAddr       int           // handshakes at once from one address (IPv6: /64); default 4
	HandshakeRate    float64       // new handshakes a second per address; default 1
	HandshakeBurst   int           // ... and at once; default 4
	MaxSessions      int           // sessions at once; default 10000
	// SendRate is each node's budget for WriteLimited, bytes a second
	// (castd's --repair-rate); 0 means unlimited. SendBurst is what may go
	// at once, at least one datagram; default a quarter second's worth.
	SendRate  float64
	SendBurst int
}

func (lc ListenConfig) withDefaults() ListenConfig {
	if lc.MTU == 0 {
		lc.MTU = DefaultMTU
	}
	if lc.HandshakeTimeout <= 0 {
		lc.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if lc.IdleTimeout == 0 {
		lc.IdleTimeout = DefaultIdleTimeout
	}
	if lc.MaxHandshakes <= 0 {
		lc.MaxHandshakes = 64
	}
	if lc.MaxUnverified <= 0 {
		lc.MaxUnverified = 1024
	}
	if lc.HelloTimeout <= 0 {
		lc.HelloTimeout = 3 * time.Second
	}
	if lc.MaxPerAddr <= 0 {
		lc.MaxPerAddr = 4
	}
	if lc.HandshakeRate <= 0 {
		lc.HandshakeRate = 1
	}
	if lc.HandshakeBurst <= 0 {
		lc.HandshakeBurst = 4
	}
	if lc.MaxSessions <= 0 {
		lc.MaxSessions = 10000
	}
	if lc.SendRate > 0 && lc.SendBurst <= 0 {
		lc.SendBurst = int(lc.SendRate / 4)
	}
	if lc.SendRate > 0 {
		lc.SendBurst = max(lc.SendBurst, maxPayload(lc.MTU))
	}
	return lc
}

// Stats counts what the listener did since it started.
type Stats struct {
	Handshakes   uint64 // handshakes started
	Sessions     uint64 // handshakes completed and accepted
	Unregistered uint64 // refused: valid key, node not registered
	BadCert      uint64 // refused: certificate not a wallet-key certificate
	Failed       uint64 // handshakes failed otherwise (bad messages, timeouts)
	Unverified   uint64 // handshakes dropped before the cookie echo (forged addresses)
	RateLimited  uint64 // new handshakes dropped by the per-address limits
	Busy         uint64 // new handshakes or sessions dropped by the global bounds
	Dropped      uint64 // datagrams dropped: not a ClientHello from a new address, or a full queue
	IdleClosed   uint64 // sessions closed for idleness
	SendLimited  uint64 // WriteLimited calls refused by a node's send budget

	Waiting     int // handshakes waiting for the cookie echo, now
	InHandshake int // handshakes holding a slot, now
}

type counters struct {
	handshakes, sessions, unregistered, badCert, failed, unverified, rateLimited,
	busy, dropped, idleClosed, sendLimited atomic.Uint64
}

// Server accepts DTLS sessions from registered nodes on one UDP socket.
type Server struct {
	lc     ListenConfig
	accept func(nodeID string) bool
	log    *slog.Logger
	cert   tls.Certificate
	sock   *net.UDPConn

	perAddr *ratelimit.PerAddr
	slots   *ratelimit.Slots
	hsSem   chan struct{} // verified handshakes

	mu       sync.Mutex
	peers    map[netip.AddrPort]*peerConn
	waiting  *list.List          // of *peerConn still to echo the cookie, oldest first
	sessions map[string]*Session // by node ID: one per node
	budgets  map[string]*ratelimit.Bucket
	closed   bool

	ready  chan *Session
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	c      counters
}

// Listen is ListenConfig{}.Listen.
func Listen(ctx context.Context, addr string, key *identity.Keypair,
	accept func(nodeID string) bool, log *slog.Logger) (*Server, error) {
	var lc ListenConfig
	return lc.Listen(ctx, addr, key, accept, log)
}

// Listen opens a UDP socket on addr and accepts handshakes from nodes whose
// wallet-key certificate checks out and whose node ID accept approves. The
// server stops when ctx ends or Close is called.
func (lc ListenConfig) Listen(ctx context.Context, addr string, key *identity.Keypair,
	accept func(nodeID string) bool, log *slog.Logger) (*Server, error) {
	if accept == nil {
		return nil, errors.New("dtlschan: Listen needs an accept function")
	}
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	lc = lc.withDefaults()
	if lc.MTU < minMTU {
		return nil, fmt.Errorf("dtlschan: MTU %d is less than %d", lc.MTU, minMTU)
	}
	cert, err := Certificate(key)
	if err != nil {
		return nil, err
	}
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("dtlschan: listen address: %w", err)
	}
	sock, err := net.ListenUDP("udp", ua)
	if err != nil {
		return nil, fmt.Errorf("dtlschan: listen: %w", err)
	}
	s := &Server{
		lc: lc, accept: accept, log: log, cert: cert, sock: sock,
		perAddr:  ratelimit.NewPerAddr(lc.HandshakeRate, lc.HandshakeBurst),
		slots:    ratelimit.NewSlots(lc.MaxPerAddr),
		hsSem:    make(chan struct{}, lc.MaxHandshakes),
		peers:    make(map[netip.AddrPort]*peerConn),
		waiting:  list.New(),
		sessions: make(map[string]*Session),
		budgets:  make(map[string]*ratelimit.Bucket),
		ready:    make(chan *Session, 64),
	}
	s.ctx, s.cancel = context.WithCancel(ctx)
	s.wg.Add(2)
	go s.readLoop()
	go func() {
		defer s.wg.Done()
		<-s.ctx.Done()
		s.shutdown()
	}()
	return s, nil
}

// Addr is the UDP address the server listens on.
func (s *Server) Addr() net.Addr { return s.sock.LocalAddr() }

// Stats returns the counters.
func (s *Server) Stats() Stats {
	return Stats{
		Handshakes: s.c.handshakes.Load(), Sessions: s.c.sessions.Load(),
		Unregistered: s.c.unregistered.Load(), BadCert: s.c.badCert.Load(),
		Failed: s.c.failed.Load(), Unverified: s.c.unverified.Load(), RateLimited: s.c.rateLimited.Load(),
		Busy: s.c.busy.Load(), Dropped: s.c.dropped.Load(),
		IdleClosed: s.c.idleClosed.Load(), SendLimited: s.c.sendLimited.Load(),
		Waiting: s.waitingLen(), InHandshake: len(s.hsSem),
	}
}

func (s *Server) waitingLen() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.waiting.Len()
}

// Sessions is the number of open sessions.
func (s *Server) Sessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}

// Session returns the open session of a node, if any.
func (s *Server) Session(nodeID string) (*Session, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sess, ok := s.sessions[nodeID]
	return sess, ok
}

// Accept waits for the next authenticated session.
func (s *Server) Accept(ctx context.Context) (*Session, error) {
	select {
	case sess := <-s.ready:
		return sess, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-s.ctx.Done():
		// Prefer a session already waiting over the close.
		select {
		case sess := <-s.ready:
			return sess, nil
		default:
			return nil, ErrClosed
		}
	}
}

// Close stops the server: the socket, every handshake and every session.
// It returns once all of its goroutines have ended.
func (s *Server) Close() error {
	s.cancel()
	s.wg.Wait()
	return nil
}

func (s *Server) shutdown() {
	s.mu.Lock()
	s.closed = true
	peers := make([]*peerConn, 0, len(s.peers))
	for _, p := range s.peers {
		peers = append(peers, p)
	}
	sessions := make([]*Session, 0, len(s.sessions))
	for _, sess := range s.sessions {
		sessions = append(sessions, sess)
	}
	s.mu.Unlock()
	for _, sess := range sessions {
		sess.Close()
	}
	for _, p := range peers {
		p.Close()
	}
	s.sock.Close()
	// Sessions handed to Accept's queue but never taken.
	for {
		select {
		case sess := <-s.ready:
			sess.Close()
		default:
			return
		}
	}
}

func (s *Server) readLoop() {
	defer s.wg.Done()
	buf := make([]byte, receiveMTU)
	for {
		n, from, err := s.sock.ReadFromUDPAddrPort(buf)
		if err != nil {
			if s.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Warn("dtls channel: read", "err", err)
			continue
		}
		s.dispatch(netip.AddrPortFrom(from.Addr().Unmap(), from.Port()), buf[:n])
	}
}

// dispatch hands a datagram to its peer, or starts a handshake for a new
// address if the limits allow. Only a ClientHello makes state, and only
// within the per-address rate and bound. A new peer first waits, cheaply, to
// echo the cookie pion sends it; the oldest waiting peer makes room for a
// new one, so that hellos from forged addresses cannot lock honest ones out.
// Only an echo earns one of the MaxHandshakes slots for the public-key work.
func (s *Server) dispatch(from netip.AddrPort, b []byte) {
	s.mu.Lock()
	p, ok := s.peers[from]
	if ok {
		if p.unverified != nil && p.echoes(b) {
			s.promote(p)
		}
		s.mu.Unlock()
		if !p.deliver(append([]byte(nil), b...)) {
			s.c.dropped.Add(1)
		}
		return
	}
	if s.closed || !isClientHello(b) {
		s.mu.Unlock()
		s.c.dropped.Add(1)
		return
	}
	if !s.perAddr.Allow(from.Addr(), time.Now()) || !s.slots.Acquire(from.Addr()) {
		s.mu.Unlock()
		s.c.rateLimited.Add(1)
		return
	}
	if len(s.peers) >= s.lc.MaxSessions+s.lc.MaxHandshakes+s.lc.MaxUnverified {
		s.mu.Unlock()
		s.slots.Release(from.Addr())
		s.c.busy.Add(1)
		return
	}
	if s.waiting.Len() >= s.lc.MaxUnverified {
		s.drop(s.waiting.Front().Value.(*peerConn), errEvicted)
	}
	p = newPeerConn(s.sock, from, s.forget)
	var ctx context.Context
	ctx, p.cancel = context.WithTimeout(s.ctx, s.lc.HandshakeTimeout)
	p.unverified = s.waiting.PushBack(p)
	s.peers[from] = p
	s.mu.Unlock()
	p.deliver(append([]byte(nil), b...))
	s.c.handshakes.Add(1)
	s.wg.Add(1)
	go s.handshake(ctx, p)
}

// promote moves a peer that echoed its cookie to a handshake slot, or drops
// it if there is none. Called with s.mu held.
func (s *Server) promote(p *peerConn) {
	s.waiting.Remove(p.unverified)
	p.unverified = nil
	select {
	case s.hsSem <- struct{}{}:
		p.slot = true
	default:
		p.evicted = true
		s.c.busy.Add(1)
		s.log.Debug("dtls channel: handshake dropped", "addr", p.raddr, "err", "all handshake slots taken")
		p.cancel()
	}
}

// drop ends a handshake still waiting for its cookie echo. Called with
// s.mu held.
func (s *Server) drop(p *peerConn, why error) {
	if p.unverified == nil {
		return
	}
	s.waiting.Remove(p.unverified)
	p.unverified = nil
	p.evicted = true
	s.c.unverified.Add(1)
	s.log.Debug("dtls channel: handshake dropped", "addr", p.raddr, "err", why)
	p.cancel()
}

// forget drops a closed peer from the table, so the address may start over.
func (s *Server) forget(p *peerConn) {
	s.mu.Lock()
	if s.peers[p.raddr] == p {
		delete(s.peers, p.raddr)
	}
	s.mu.Unlock()
}

func (s *Server) handshake(ctx context.Context, p *peerConn) {
	defer s.wg.Done()
	addr := p.raddr.Addr()
	hello := time.AfterFunc(s.lc.HelloTimeout, func() {
		s.mu.Lock()
		s.drop(p, errNoEcho)
		s.mu.Unlock()
	})
	// Set by pion's handshake goroutine, which may outlive a timed-out
	// ServerWithContext by a moment, hence the lock.
	var (
		mu      sync.Mutex
		gotPeer identity.PublicKey
		gotOK   bool
		gotErr  error
	)
	verify := func(raw [][]byte) error {
		k, err := PeerKey(raw)
		if err == nil && !s.accept(k.String()) {
			err = fmt.Errorf("%w: %s", ErrUnregistered, k)
		}
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			gotErr = err
			return err
		}
		gotPeer, gotOK = k, true
		return nil
	}
	done := func(*dtls.State) error {
		mu.Lock()
		defer mu.Unlock()
		if !gotOK {
			return errNotVerified
		}
		return nil
	}
	cfg := dtlsConfig(s.cert, s.lc.MTU, s.log, verify, done)
	conn, err := dtls.ServerWithContext(ctx, p, cfg)
	hello.Stop()
	p.cancel()
	s.mu.Lock()
	if p.unverified != nil {
		s.waiting.Remove(p.unverified)
		p.unverified = nil
	}
	slot, evicted := p.slot, p.evicted
	p.slot = false
	s.mu.Unlock()
	if slot {
		<-s.hsSem
	}
	s.slots.Release(addr)
	if err == nil && !slot {
		// Cannot happen while pion insists on the cookie exchange; if it
		// ever did not, the handshake skipped the slot bound.
		conn.Close()
		err = errors.New("dtlschan: handshake finished without a cookie echo")
	}
	mu.Lock()
	peer, verified, refusal := gotPeer, gotOK, gotErr
	mu.Unlock()
	if err == nil && !verified {
		conn.Close()
		err = errNotVerified
	}
	if err != nil {
		p.Close()
		if s.ctx.Err() != nil || evicted {
			return // counted and logged by drop or promote
		}
		switch {
		case errors.Is(refusal, ErrUnregistered):
			s.c.unregistered.Add(1)
			err = refusal
		case refusal != nil:
			s.c.badCert.Add(1)
			err = refusal
		default:
			s.c.failed.Add(1)
		}
		s.log.Info("dtls channel: handshake refused", "addr", p.raddr, "err", err)
		return
	}
	s.register(conn, p, peer)
}

// register makes the session of a finished handshake, closing any older
// session of the same node, and queues it for Accept.
func (s *Server) register(conn *dtls.Conn, p *peerConn, peer identity.PublicKey) {
	id := peer.String()
	s.mu.Lock()
	if s.closed || (len(s.sessions) >= s.lc.MaxSessions && s.sessions[id] == nil) {
		s.mu.Unlock()
		conn.Close()
		p.Close()
		s.c.busy.Add(1)
		return
	}
	var budget *ratelimit.Bucket
	if s.lc.SendRate > 0 {
		// Kept per node across sessions: reconnecting does not refill it.
		now := time.Now()
		if budget = s.budgets[id]; budget == nil {
			for k, b := range s.budgets {
				if s.sessions[k] == nil && b.Full(now) {
					delete(s.budgets, k) // forgetting a full bucket gives nothing away
				}
			}
			budget = ratelimit.NewBucket(s.lc.SendRate, s.lc.SendBurst, now)
			s.budgets[id] = budget
		}
	}
	idle := max(s.lc.IdleTimeout, 0)
	sess := newSession(conn, peer, s.lc.MTU, idle, budget, func(sess *Session, reason error) {
		p.Close()
		s.mu.Lock()
		if s.sessions[id] == sess {
			delete(s.sessions, id)
		}
		s.mu.Unlock()
		switch {
		case errors.Is(reason, ErrIdle):
			s.c.idleClosed.Add(1)
			s.log.Info("dtls channel: session idle, closed", "node", id, "addr", p.raddr)
		case errors.Is(reason, ErrReplaced):
			s.log.Info("dtls channel: session replaced", "node", id, "addr", p.raddr)
		}
	})
	sess.limited = &s.c.sendLimited
	old := s.sessions[id]
	s.sessions[id] = sess
	s.mu.Unlock()
	if old != nil {
		old.closeWith(ErrReplaced)
	}
	s.c.sessions.Add(1)
	s.log.Info("dtls channel: session", "node", id, "addr", p.raddr)
	select {
	case s.ready <- sess:
	default:
		// Nobody is accepting; a session nobody reads is a leak.
		sess.Close()
		s.c.busy.Add(1)
	}
}
