package signedreq

import (
	"container/heap"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/blockcast/beacon/shared/identity"
)

// Options configures a Verifier.
type Options struct {
	// Window is how far a request timestamp may be from the verifier's
	// clock, past or future (DefaultWindow).
	Window time.Duration
	// MaxNonces bounds the remembered nonces (about 150 bytes each, so the
	// default holds the table near 15 MB). When it is full of unexpired
	// nonces, Verify fails with ErrBusy (DefaultMaxNonces).
	MaxNonces int
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Verifier checks signed requests. It is safe for concurrent use.
type Verifier struct {
	window time.Duration
	max    int
	now    func() time.Time

	mu   sync.Mutex
	seen map[nonceKey]struct{}
	exp  expiryHeap // the same keys, ordered by when they can be forgotten
}

var sigBase64Len = base64.StdEncoding.EncodedLen(identity.SignatureSize)

type nonceKey struct {
	node  identity.PublicKey
	nonce [NonceSize]byte
}

// Defaults of Options.
const (
	DefaultWindow    = 60 * time.Second
	DefaultMaxNonces = 100000
)

// ensureDefaults gives every zero (or negative: neither can be turned off)
// field its default.
func (o *Options) ensureDefaults() {
	if o.Window <= 0 {
		o.Window = DefaultWindow
	}
	if o.MaxNonces <= 0 {
		o.MaxNonces = DefaultMaxNonces
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// NewVerifier returns a Verifier with opts, defaults filled in.
func NewVerifier(opts Options) *Verifier {
	opts.ensureDefaults()
	return &Verifier{
		window: opts.Window,
		max:    opts.MaxNonces,
		now:    opts.Now,
		seen:   make(map[nonceKey]struct{}),
	}
}

// Verify checks the signature headers of r, a request received with body
// (the exact bytes, e.g. from ReadBody), and returns the signing node's key.
// The request URI is taken from r.URL.RequestURI(), so call it before any
// handler rewrites r.URL (http.StripPrefix does).
func (v *Verifier) Verify(r *http.Request, body []byte) (identity.PublicKey, error) {
	var none identity.PublicKey
	if r.URL == nil {
		return none, fmt.Errorf("%w: request has no URL", ErrMalformed)
	}
	nodeH, err := header(r, HeaderNode)
	if err != nil {
		return none, err
	}
	tsH, err := header(r, HeaderTimestamp)
	if err != nil {
		return none, err
	}
	nonceH, err := header(r, HeaderNonce)
	if err != nil {
		return none, err
	}
	sigH, err := header(r, HeaderSignature)
	if err != nil {
		return none, err
	}

	node, err := identity.ParsePublicKey(nodeH)
	if err != nil {
		return none, fmt.Errorf("%w: %s: %w", ErrMalformed, HeaderNode, err)
	}
	ts, err := parseTimestamp(tsH)
	if err != nil {
		return none, err
	}
	var key nonceKey
	key.node = node
	if len(nonceH) != 2*NonceSize || !isLowerHex(nonceH) {
		return none, fmt.Errorf("%w: %s must be %d lowercase hex digits", ErrMalformed, HeaderNonce, 2*NonceSize)
	}
	hex.Decode(key.nonce[:], []byte(nonceH))
	// The length check also refuses CR and LF, which the decoder skips.
	sig, err := base64.StdEncoding.Strict().DecodeString(sigH)
	if err != nil || len(sig) != identity.SignatureSize || len(sigH) != sigBase64Len {
		return none, fmt.Errorf("%w: %s must be the standard base64 of %d bytes", ErrMalformed, HeaderSignature, identity.SignatureSize)
	}

	// Cheap refusal of stale requests before any signature work.
	now := v.now()
	stamp := time.Unix(ts, 0)
	if d := now.Sub(stamp); d > v.window || d < -v.window {
		return none, fmt.Errorf("%w: timestamp %s is %s from now (window %s)", ErrStale, tsH, d.Round(time.Second), v.window)
	}

	sum := sha256.Sum256(body)
	if !node.Verify(signedBytes(r.Method, r.URL.RequestURI(), tsH, nonceH, nodeH, &sum), sig) {
		return none, ErrBadSignature
	}

	if err := v.remember(key, stamp.Add(v.window).UnixNano()); err != nil {
		return none, err
	}
	return node, nil
}

// remember records key until expiry (unix ns), or reports it as a replay.
func (v *Verifier) remember(key nonceKey, expiry int64) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	// The clock is read again under the lock: sweeps then happen in clock
	// order, so no sweep can have forgotten a nonce that this request's
	// timestamp still keeps in the window.
	now := v.now().UnixNano()
	if expiry < now {
		return fmt.Errorf("%w: timestamp left the window during verification", ErrStale)
	}
	// Forget nonces whose timestamps have left the window: a replay of
	// them is refused as stale.
	for len(v.exp) > 0 && v.exp[0].expiry < now {
		delete(v.seen, v.exp[0].key)
		heap.Pop(&v.exp)
	}
	if _, ok := v.seen[key]; ok {
		return ErrReplay
	}
	if len(v.seen) >= v.max {
		return fmt.Errorf("%w: %d nonces in the last %s", ErrBusy, len(v.seen), 2*v.window)
	}
	v.seen[key] = struct{}{}
	heap.Push(&v.exp, expiryEntry{expiry: expiry, key: key})
	return nil
}

// header returns the single value of a signature header.
func header(r *http.Request, name string) (string, error) {
	vals := r.Header.Values(name)
	switch {
	case len(vals) == 0 || (len(vals) == 1 && vals[0] == ""):
		return "", fmt.Errorf("%w: no %s header", ErrUnsigned, name)
	case len(vals) > 1:
		return "", fmt.Errorf("%w: %d %s headers", ErrMalformed, len(vals), name)
	}
	return vals[0], nil
}

// parseTimestamp accepts only the canonical decimal form, so that one
// signed timestamp has one spelling.
func parseTimestamp(s string) (int64, error) {
	bad := len(s) == 0 || len(s) > 18 || (len(s) > 1 && s[0] == '0')
	for i := 0; i < len(s) && !bad; i++ {
		bad = s[i] < '0' || s[i] > '9'
	}
	if bad {
		return 0, fmt.Errorf("%w: %s must be decimal unix seconds", ErrMalformed, HeaderTimestamp)
	}
	ts, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: %s: %w", ErrMalformed, HeaderTimestamp, err)
	}
	return ts, nil
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

type expiryEntry struct {
	expiry int64 // unix ns
	key    nonceKey
}

type expiryHeap []expiryEntry

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].expiry < h[j].expiry }
func (h expiryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *expiryHeap) Push(x any)        { *h = append(*h, x.(expiryEntry)) }
func (h *expiryHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}
