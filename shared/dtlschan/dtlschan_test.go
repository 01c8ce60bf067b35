package dtlschan

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/blockcast/beacon/shared/identity"
	"github.com/pion/dtls/v2"
)

func newKey(t testing.TB) *identity.Keypair {
	t.Helper()
	k, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// logBuf collects log output for assertions.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// registry is the accept function of a castd with these nodes registered.
func registry(ids ...string) func(string) bool {
	set := map[string]bool{}
	for _, id := range ids {
		set[id] = true
	}
	return func(id string) bool { return set[id] }
}

type server struct {
	*Server
	key  *identity.Keypair
	logs *logBuf
}

func startServer(t *testing.T, lc ListenConfig, accept func(string) bool) *server {
	t.Helper()
	key := newKey(t)
	logs := &logBuf{}
	s, err := lc.Listen(context.Background(), "127.0.0.1:0", key, accept,
		slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return &server{s, key, logs}
}

func (s *server) addr() string { return s.Addr().String() }

func dial(t *testing.T, d Dialer, addr string, key *identity.Keypair, cast identity.PublicKey) (*Session, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sess, err := d.Dial(ctx, addr, key, cast)
	if err == nil {
		t.Cleanup(func() { sess.Close() })
	}
	return sess, err
}

func accept(t *testing.T, s *server) *Session {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sess, err := s.Accept(ctx)
	if err != nil {
		t.Fatalf("accept: %v", err)
	}
	return sess
}

// waitFor polls cond for up to 5 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestSessionDatagrams(t *testing.T) {
	node := newKey(t)
	s := startServer(t, ListenConfig{}, registry(node.ID()))
	c, err := dial(t, Dialer{}, s.addr(), node, s.key.Public())
	if err != nil {
		t.Fatal(err)
	}
	sc := accept(t, s)
	if sc.NodeID() != node.ID() {
		t.Fatalf("server sees node %s, want %s", sc.NodeID(), node.ID())
	}
	if c.NodeID() != s.key.ID() {
		t.Fatalf("client sees node %s, want the CAST key %s", c.NodeID(), s.key.ID())
	}
	if c.MaxPayload() != DefaultMTU-recordOverhead || sc.MaxPayload() != c.MaxPayload() {
		t.Fatalf("MaxPayload %d/%d, want %d", c.MaxPayload(), sc.MaxPayload(), DefaultMTU-recordOverhead)
	}
	// Whole datagrams both ways, the largest included; one Write is one Read.
	for _, size := range []int{1, 100, c.MaxPayload()} {
		for _, dir := range []struct {
			name     string
			from, to *Session
		}{{"beacon->castd", c, sc}, {"castd->beacon", sc, c}} {
			msg := make([]byte, size)
			rand.Read(msg)
			if _, err := dir.from.Write(msg); err != nil {
				t.Fatalf("%s %d bytes: %v", dir.name, size, err)
			}
			buf := make([]byte, dir.to.MaxPayload())
			dir.to.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, addr, err := dir.to.ReadFrom(buf)
			if err != nil || !bytes.Equal(buf[:n], msg) {
				t.Fatalf("%s %d bytes: read %d, %v", dir.name, size, n, err)
			}
			if addr.String() != dir.from.LocalAddr().String() && dir.to == c {
				t.Fatalf("ReadFrom says %s, peer is %s", addr, dir.from.LocalAddr())
			}
		}
	}
	// Too large for the path: refused, not fragmented or cut.
	if _, err := c.Write(make([]byte, c.MaxPayload()+1)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversized write: %v, want ErrTooLarge", err)
	}
	// A buffer too small for the datagram is an error, not a truncation.
	sc.Write(make([]byte, 500))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(make([]byte, 10)); err == nil {
		t.Fatalf("read of a 500-byte datagram into 10 bytes returned %d, no error", n)
	}
	if _, err := c.WriteTo([]byte("x"), &net.UDPAddr{IP: net.IPv4(127, 0, 0, 9), Port: 1}); !errors.Is(err, ErrWrongAddr) {
		t.Fatalf("WriteTo another address: %v", err)
	}
	if st := s.Stats(); st.Handshakes != 1 || st.Sessions != 1 {
		t.Fatalf("stats %+v", st)
	}
	// Clean close: the peer's read ends.
	c.Close()
	sc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := sc.Read(make([]byte, 2000)); !errors.Is(err, ErrPeerClosed) {
		t.Fatalf("read after the peer closed: %v, want ErrPeerClosed", err)
	}
	if !errors.Is(sc.Err(), ErrPeerClosed) || s.Sessions() != 0 {
		t.Fatalf("session not ended by the peer's close: %v, %d open", sc.Err(), s.Sessions())
	}
}

func TestUnregisteredRefused(t *testing.T) {
	node, stranger := newKey(t), newKey(t)
	s := startServer(t, ListenConfig{}, registry(node.ID()))
	if _, err := dial(t, Dialer{}, s.addr(), stranger, s.key.Public()); err == nil {
		t.Fatal("an unregistered node got a session")
	}
	waitFor(t, "the refusal counted", func() bool { return s.Stats().Unregistered == 1 })
	if s.Sessions() != 0 || s.Stats().Sessions != 0 {
		t.Fatalf("sessions after a refusal: %+v", s.Stats())
	}
	// The count comes just before the log line: wait for the line.
	waitFor(t, "the refusal logged with the node ID", func() bool {
		return strings.Contains(s.logs.String(), stranger.ID()) && strings.Contains(s.logs.String(), "not registered")
	})
	// The registered node still gets in.
	if _, err := dial(t, Dialer{}, s.addr(), node, s.key.Public()); err != nil {
		t.Fatal(err)
	}
	if sc := accept(t, s); sc.NodeID() != node.ID() {
		t.Fatalf("accepted %s", sc.NodeID())
	}
}

// forgedCert makes a certificate naming cn, holding pub, signed by signer.
func forgedCert(t *testing.T, cn string, pub ed25519.PublicKey, signer ed25519.PrivateKey) []byte {
	return forgedCertTB(t, cn, pub, signer)
}

func forgedCertTB(t testing.TB, cn string, pub ed25519.PublicKey, signer ed25519.PrivateKey) []byte {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, signer)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// rawDial runs a pion client with whatever certificate and key it is given:
// the attacker's side.
func rawDial(t *testing.T, addr string, der []byte, priv ed25519.PrivateKey) error {
	t.Helper()
	ua, _ := net.ResolveUDPAddr("udp", addr)
	udp, err := net.DialUDP("udp", nil, ua)
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	cfg := &dtls.Config{
		Certificates:         []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: priv}},
		CipherSuites:         []dtls.CipherSuiteID{cipherSuite},
		InsecureSkipVerify:   true,
		ExtendedMasterSecret: dtls.RequireExtendedMasterSecret,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := dtls.ClientWithContext(ctx, udp, cfg)
	if err != nil {
		return err
	}
	conn.Close()
	return nil
}

// TestImpersonationRefused: certificates whose key is not what they claim.
func TestImpersonationRefused(t *testing.T) {
	victim, attacker := newKey(t), newKey(t)
	s := startServer(t, ListenConfig{}, registry(victim.ID()))
	tests := []struct {
		name string
		der  []byte
		priv ed25519.PrivateKey
	}{
		// Names the registered victim, holds (and proves) the attacker's key.
		{"victim's name, attacker's key",
			forgedCert(t, victim.ID(), pub(attacker), attacker.PrivateKey()), attacker.PrivateKey()},
		// Holds the victim's public key but the attacker signs everything:
		// neither the self-signature nor CertificateVerify checks out.
		{"victim's key, attacker's signatures",
			forgedCert(t, victim.ID(), pub(victim), attacker.PrivateKey()), attacker.PrivateKey()},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := rawDial(t, s.addr(), tt.der, tt.priv); err == nil {
				t.Fatal("handshake succeeded")
			}
			waitFor(t, "the refusal counted", func() bool {
				st := s.Stats()
				return st.BadCert+st.Failed == uint64(i+1)
			})
			if st := s.Stats(); st.Sessions != 0 || s.Sessions() != 0 {
				t.Fatalf("an impersonator got a session: %+v", st)
			}
		})
	}
	if s.Stats().BadCert < 1 {
		t.Fatalf("the name/key mismatch was not counted as a bad certificate: %+v", s.Stats())
	}
}

func TestPeerKey(t *testing.T) {
	k, other := newKey(t), newKey(t)
	good, err := Certificate(k)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		raw  [][]byte
		want error
	}{
		{"own certificate", good.Certificate, nil},
		{"no name", [][]byte{forgedCert(t, "", pub(k), k.PrivateKey())}, nil},
		{"none", nil, ErrCertificate},
		{"two", [][]byte{good.Certificate[0], good.Certificate[0]}, ErrCertificate},
		{"garbage", [][]byte{[]byte("not a certificate")}, ErrCertificate},
		{"too big", [][]byte{make([]byte, maxCertSize+1)}, ErrCertificate},
		{"other's name", [][]byte{forgedCert(t, other.ID(), pub(k), k.PrivateKey())}, ErrClaimMismatch},
		{"signed by another key", [][]byte{forgedCert(t, k.ID(), pub(k), other.PrivateKey())}, ErrCertificate},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := PeerKey(tt.raw)
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("err %v, want %v", err, tt.want)
			}
			if err == nil && got != k.Public() {
				t.Fatalf("key %s, want %s", got, k.Public())
			}
		})
	}
}

func TestWrongCASTPinRefused(t *testing.T) {
	node := newKey(t)
	s := startServer(t, ListenConfig{}, registry(node.ID()))
	_, err := dial(t, Dialer{}, s.addr(), node, newKey(t).Public())
	if !errors.Is(err, ErrWrongPeer) {
		t.Fatalf("dial to a server with another key: %v, want ErrWrongPeer", err)
	}
	waitFor(t, "the server to see the failure", func() bool { return s.Stats().Failed == 1 })
	if s.Sessions() != 0 {
		t.Fatal("the server kept a session the client refused")
	}
}

// stallConn is a client's UDP conn that records what the client sends and,
// past the first max datagrams, sends nothing more: a handshake that stalls
// where the test wants it.
type stallConn struct {
	net.Conn
	max  int
	mu   sync.Mutex
	sent [][]byte
	stop func() // ends the client and waits for it
}

func (c *stallConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.sent = append(c.sent, append([]byte(nil), p...))
	n := len(c.sent)
	c.mu.Unlock()
	if n > c.max {
		return len(p), nil
	}
	return c.Conn.Write(p)
}

func (c *stallConn) datagram(i int) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	if i < len(c.sent) {
		return c.sent[i]
	}
	return nil
}

// stallDial starts a pion client from local to addr that sends only its
// first max datagrams; it gives up after timeout.
func stallDial(t testing.TB, local, addr string, max int, timeout time.Duration) *stallConn {
	t.Helper()
	la, _ := net.ResolveUDPAddr("udp", local)
	ra, _ := net.ResolveUDPAddr("udp", addr)
	udp, err := net.DialUDP("udp", la, ra)
	if err != nil {
		t.Fatal(err)
	}
	key := newKey(t)
	cert, err := Certificate(key)
	if err != nil {
		t.Fatal(err)
	}
	sc := &stallConn{Conn: udp, max: max}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer cancel()
		cfg := dtlsConfig(cert, DefaultMTU, slog.New(slog.NewTextHandler(io.Discard, nil)),
			func([][]byte) error { return nil }, nil)
		if c, err := dtls.ClientWithContext(ctx, sc, cfg); err == nil {
			c.Close()
		}
		udp.Close()
	}()
	sc.stop = func() { cancel(); <-done }
	t.Cleanup(sc.stop)
	return sc
}

// clientHello is a first ClientHello (no cookie) as pion's client sends it.
func clientHello(t testing.TB) []byte {
	t.Helper()
	l, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	sc := stallDial(t, "127.0.0.1:0", l.LocalAddr().String(), 1, time.Second)
	defer sc.stop()
	buf := make([]byte, 2048)
	l.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, _, err := l.ReadFrom(buf)
	if err != nil {
		t.Fatal(err)
	}
	return buf[:n]
}

// TestHandshakeFlood: one address sending ClientHellos from many ports gets
// the burst of handshakes and no more, and another address still gets in.
func TestHandshakeFlood(t *testing.T) {
	node := newKey(t)
	lc := ListenConfig{HandshakeRate: 0.1, HandshakeBurst: 3, MaxPerAddr: 2, HandshakeTimeout: 3 * time.Second}
	s := startServer(t, lc, registry(node.ID()))
	ua, _ := net.ResolveUDPAddr("udp", s.addr())
	const flood = 200
	hello := clientHello(t)
	for i := 0; i < flood; i++ {
		c, err := net.DialUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2)}, ua)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		for j := 0; j < 3; j++ {
			c.Write(hello)
		}
	}
	waitFor(t, "the flood to be read", func() bool {
		st := s.Stats()
		return st.Handshakes+st.RateLimited >= flood
	})
	st := s.Stats()
	// At most MaxPerAddr at once, within the burst.
	if st.Handshakes > 2 {
		t.Fatalf("%d handshakes started from one address, bound is 2: %+v", st.Handshakes, st)
	}
	if st.RateLimited < flood-2 {
		t.Fatalf("only %d of %d flood handshakes refused: %+v", st.RateLimited, flood, st)
	}
	// An honest node on another address is not held up by the flood.
	if _, err := dial(t, Dialer{LocalAddr: "127.0.0.3:0"}, s.addr(), node, s.key.Public()); err != nil {
		t.Fatalf("honest node during the flood: %v", err)
	}
	accept(t, s)
}

// TestVerifiedHandshakeBound: peers that echo their cookie (real
// addresses) get at most MaxHandshakes slots for the public-key work.
func TestVerifiedHandshakeBound(t *testing.T) {
	s := startServer(t, ListenConfig{MaxHandshakes: 3, HandshakeTimeout: 3 * time.Second}, registry())
	const hosts = 6
	for i := 0; i < hosts; i++ {
		// Hello, cookie echo, then silence: each stalls holding a slot.
		stallDial(t, net.IPv4(127, 0, 1, byte(10+i)).String()+":0", s.addr(), 2, 3*time.Second)
	}
	waitFor(t, "the cookie echoes", func() bool { return s.Stats().Busy == hosts-3 })
	if st := s.Stats(); st.Handshakes != hosts || st.Unverified != 0 {
		t.Fatalf("want %d handshakes, 3 in slots and %d busy: %+v", hosts, hosts-3, st)
	}
}

// TestForgedHelloFlood: ClientHellos from addresses that never answer (as
// from forged sources) fill only the cheap waiting pool, and do not keep an
// honest node out: it echoes its cookie before the flood pushes it out.
func TestForgedHelloFlood(t *testing.T) {
	node := newKey(t)
	lc := ListenConfig{MaxUnverified: 64, HelloTimeout: 10 * time.Second, HandshakeTimeout: 10 * time.Second,
		HandshakeRate: 1000, HandshakeBurst: 1000}
	s := startServer(t, lc, registry(node.ID()))
	ua, _ := net.ResolveUDPAddr("udp", s.addr())
	ch := clientHello(t)
	stop := make(chan struct{})
	flooded := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			c, err := net.DialUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 2, byte(1+i%250))}, ua)
			if err == nil {
				c.Write(ch)
				c.Close()
			}
			if i == 2*lc.MaxUnverified {
				close(flooded)
			}
			time.Sleep(time.Millisecond)
		}
	}()
	defer func() { close(stop); wg.Wait() }()
	<-flooded
	waitFor(t, "the pool to fill", func() bool { return s.Stats().Unverified > 0 })
	if _, err := dial(t, Dialer{LocalAddr: "127.0.0.3:0"}, s.addr(), node, s.key.Public()); err != nil {
		t.Fatalf("honest node during a flood of forged hellos: %v (stats %+v)", err, s.Stats())
	}
	accept(t, s)
	if st := s.Stats(); st.Busy != 0 {
		t.Fatalf("unanswered hellos took handshake slots: %+v", st)
	}
}

// TestBlindCookie: a hello carrying a cookie sent to another address does
// not earn a handshake slot, and is refused.
func TestBlindCookie(t *testing.T) {
	s := startServer(t, ListenConfig{HandshakeTimeout: 5 * time.Second}, registry())
	// A real exchange from .4 provides a valid-looking hello with a cookie.
	honest := stallDial(t, "127.0.0.4:0", s.addr(), 2, 5*time.Second)
	waitFor(t, "the second hello", func() bool { return honest.datagram(1) != nil })
	waitFor(t, "the honest hello in a slot", func() bool { return s.Stats().InHandshake == 1 })
	ua, _ := net.ResolveUDPAddr("udp", s.addr())
	c, err := net.DialUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 5)}, ua)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write(honest.datagram(0)) // first hello: gets its own cookie, unread
	waitFor(t, "the blind hello waiting", func() bool { return s.Stats().Waiting == 1 })
	c.Write(honest.datagram(1)) // the cookie sent to .4, from .5
	waitFor(t, "the blind hello refused", func() bool { return s.Stats().Failed == 1 })
	if st := s.Stats(); st.Handshakes != 2 || st.Busy != 0 || st.InHandshake != 1 || st.Waiting != 0 {
		t.Fatalf("stats %+v", st)
	}
	waitFor(t, "the refusal logged", func() bool { return strings.Contains(s.logs.String(), "127.0.0.5") })
}

func TestIdleExpiry(t *testing.T) {
	node := newKey(t)
	s := startServer(t, ListenConfig{IdleTimeout: 300 * time.Millisecond}, registry(node.ID()))
	c, err := dial(t, Dialer{IdleTimeout: -1}, s.addr(), node, s.key.Public())
	if err != nil {
		t.Fatal(err)
	}
	sc := accept(t, s)
	// Traffic keeps it open past the timeout.
	for i := 0; i < 5; i++ {
		time.Sleep(100 * time.Millisecond)
		if _, err := c.Write([]byte("nack")); err != nil {
			t.Fatal(err)
		}
		sc.SetReadDeadline(time.Now().Add(time.Second))
		if _, err := sc.Read(make([]byte, 2000)); err != nil {
			t.Fatalf("read %d: %v", i, err)
		}
	}
	select {
	case <-sc.Done():
		t.Fatal("a busy session was closed as idle")
	default:
	}
	select {
	case <-sc.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("idle session not closed")
	}
	if !errors.Is(sc.Err(), ErrIdle) || s.Stats().IdleClosed != 1 {
		t.Fatalf("closed with %v, stats %+v", sc.Err(), s.Stats())
	}
	waitFor(t, "the session forgotten", func() bool { return s.Sessions() == 0 })
	// The beacon learns it (close_notify) and can dial again.
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 2000)); err == nil {
		t.Fatal("client read after the server's idle close did not fail")
	}
	if _, err := dial(t, Dialer{}, s.addr(), node, s.key.Public()); err != nil {
		t.Fatal(err)
	}
	accept(t, s)
}

func TestReplacedSession(t *testing.T) {
	node := newKey(t)
	s := startServer(t, ListenConfig{}, registry(node.ID()))
	if _, err := dial(t, Dialer{}, s.addr(), node, s.key.Public()); err != nil {
		t.Fatal(err)
	}
	first := accept(t, s)
	if _, err := dial(t, Dialer{}, s.addr(), node, s.key.Public()); err != nil {
		t.Fatal(err)
	}
	second := accept(t, s)
	<-first.Done()
	if !errors.Is(first.Err(), ErrReplaced) {
		t.Fatalf("first session ended with %v", first.Err())
	}
	if got, _ := s.Session(node.ID()); got != second || s.Sessions() != 1 {
		t.Fatal("the node's session is not the newest")
	}
}

// TestWriteLimited: repairs to one node stay within its byte rate, and a
// new session of the node does not get a fresh budget.
func TestWriteLimited(t *testing.T) {
	node := newKey(t)
	s := startServer(t, ListenConfig{SendRate: 1000, SendBurst: 3000}, registry(node.ID()))
	c, err := dial(t, Dialer{}, s.addr(), node, s.key.Public())
	if err != nil {
		t.Fatal(err)
	}
	sc := accept(t, s)
	pkt := make([]byte, 1400)
	sent := 0
	for i := 0; i < 10; i++ {
		_, err := sc.WriteLimited(pkt)
		if err == nil {
			sent++
		} else if !errors.Is(err, ErrRateLimited) {
			t.Fatal(err)
		}
	}
	if sent != 2 {
		t.Fatalf("%d of 10 1400-byte repairs sent with a 3000-byte burst, want 2", sent)
	}
	if st := s.Stats(); st.SendLimited != 8 {
		t.Fatalf("SendLimited %d, want 8", st.SendLimited)
	}
	// What was sent arrives.
	for i := 0; i < sent; i++ {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := c.Read(make([]byte, 2000)); err != nil || n != 1400 {
			t.Fatalf("read %d, %v", n, err)
		}
	}
	c.Close()
	if _, err := dial(t, Dialer{}, s.addr(), node, s.key.Public()); err != nil {
		t.Fatal(err)
	}
	sc2 := accept(t, s)
	if _, err := sc2.WriteLimited(pkt); !errors.Is(err, ErrRateLimited) {
		t.Fatalf("a reconnect refilled the node's budget: %v", err)
	}
	// Unlimited writes (early media) are not counted against it.
	if _, err := sc2.Write(pkt); err != nil {
		t.Fatal(err)
	}
}

// TestCloseNoLeak: closing the server ends every goroutine it and pion
// started, with sessions open and handshakes pending.
func TestCloseNoLeak(t *testing.T) {
	hello := clientHello(t)
	before := runtime.NumGoroutine()
	node := newKey(t)
	key := newKey(t)
	s, err := ListenConfig{HandshakeTimeout: time.Minute}.Listen(context.Background(), "127.0.0.1:0", key,
		registry(node.ID()), nil)
	if err != nil {
		t.Fatal(err)
	}
	var clients []*Session
	for i := 0; i < 3; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, err := Dial(ctx, s.Addr().String(), node, key.Public())
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
	}
	// A pending handshake that never completes.
	ua, _ := net.ResolveUDPAddr("udp", s.Addr().String())
	u, _ := net.DialUDP("udp", nil, ua)
	u.Write(hello)
	waitFor(t, "the pending handshake", func() bool { return s.Stats().Handshakes == 4 })
	s.Close()
	for _, c := range clients {
		c.Close()
	}
	u.Close()
	if _, err := s.Accept(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Accept after Close: %v", err)
	}
	waitFor(t, "goroutines to end", func() bool { return runtime.NumGoroutine() <= before })
}

func TestListenErrors(t *testing.T) {
	key := newKey(t)
	if _, err := Listen(context.Background(), "127.0.0.1:0", key, nil, nil); err == nil {
		t.Fatal("Listen without an accept function")
	}
	if _, err := (ListenConfig{MTU: 100}).Listen(context.Background(), "127.0.0.1:0", key, registry(), nil); err == nil {
		t.Fatal("Listen with a tiny MTU")
	}
	if _, err := Listen(context.Background(), "nonsense", key, registry(), nil); err == nil {
		t.Fatal("Listen on a bad address")
	}
	if _, err := Dial(context.Background(), "127.0.0.1:9", key, identity.PublicKey{}); err == nil {
		t.Fatal("Dial without a CAST key")
	}
}

func pub(k *identity.Keypair) ed25519.PublicKey { return k.PrivateKey().Public().(ed25519.PublicKey) }
