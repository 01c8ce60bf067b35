package dtlschan

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/blockcast/beacon/shared/identity"
	"github.com/pion/dtls/v2"
)

// ErrWrongPeer: the server's certificate is a valid wallet-key certificate,
// but not of the pinned CAST key.
var ErrWrongPeer = errors.New("dtlschan: server is not the pinned CAST key")

// Dialer holds the client's settings; the zero value uses defaults.
type Dialer struct {
	MTU              int           // default DefaultMTU
	HandshakeTimeout time.Duration // used when ctx has no deadline; default DefaultHandshakeTimeout
	IdleTimeout      time.Duration // default DefaultIdleTimeout; <0: never
	Logger           *slog.Logger
	LocalAddr        string // local UDP address (host:port) to send from; default any
}

// Dial is Dialer{}.Dial.
func Dial(ctx context.Context, addr string, key *identity.Keypair, castKey identity.PublicKey) (*Session, error) {
	var d Dialer
	return d.Dial(ctx, addr, key, castKey)
}

// Dial opens a session to the castd at addr (host:port, UDP), presenting
// key's certificate and accepting only a server whose key is castKey.
func (d Dialer) Dial(ctx context.Context, addr string, key *identity.Keypair, castKey identity.PublicKey) (*Session, error) {
	if castKey.IsZero() {
		return nil, errors.New("dtlschan: Dial needs the CAST key to pin")
	}
	mtu := d.MTU
	if mtu == 0 {
		mtu = DefaultMTU
	}
	if mtu < minMTU {
		return nil, fmt.Errorf("dtlschan: MTU %d is less than %d", mtu, minMTU)
	}
	log := d.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	cert, err := Certificate(key)
	if err != nil {
		return nil, err
	}
	if _, ok := ctx.Deadline(); !ok {
		timeout := d.HandshakeTimeout
		if timeout <= 0 {
			timeout = DefaultHandshakeTimeout
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	var (
		mu      sync.Mutex
		gotOK   bool
		refusal error
	)
	verify := func(raw [][]byte) error {
		k, err := PeerKey(raw)
		if err == nil && k != castKey {
			err = fmt.Errorf("%w: server key %s, pinned %s", ErrWrongPeer, k, castKey)
		}
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			refusal = err
			return err
		}
		gotOK = true
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
	var nd net.Dialer
	if d.LocalAddr != "" {
		la, err := net.ResolveUDPAddr("udp", d.LocalAddr)
		if err != nil {
			return nil, fmt.Errorf("dtlschan: local address: %w", err)
		}
		nd.LocalAddr = la
	}
	udp, err := nd.DialContext(ctx, "udp", addr)
	if err != nil {
		return nil, fmt.Errorf("dtlschan: dial %s: %w", addr, err)
	}
	conn, err := dtls.ClientWithContext(ctx, udp, dtlsConfig(cert, mtu, log, verify, done))
	if err != nil {
		udp.Close()
		mu.Lock()
		if refusal != nil {
			err = refusal
		}
		mu.Unlock()
		return nil, fmt.Errorf("dtlschan: handshake with %s: %w", addr, err)
	}
	idle := d.IdleTimeout
	if idle == 0 {
		idle = DefaultIdleTimeout
	}
	return newSession(conn, castKey, mtu, max(idle, 0), nil, func(*Session, error) { udp.Close() }), nil
}
