// Package ownerauth signs node owners in with their wallet: castd hands out
// a one-line challenge (its own CAST key, the domain the owner reached it
// at, the owner, a random nonce and an expiry), the wallet signs it as a
// Solana off-chain message, and a good answer to a live challenge buys a
// random session token scoped to that owner. Challenges are single-use and
// both tables are bounded.
package ownerauth

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/offchain"
)

// Defaults of Options.
const (
	DefaultChallengeTTL        = 5 * time.Minute
	DefaultSessionTTL          = 12 * time.Hour
	DefaultMaxChallenges       = 4096
	DefaultMaxSessions         = 10000
	DefaultMaxSessionsPerOwner = 16
)

// Sentinel errors; castd maps them to statuses.
var (
	ErrMalformed        = errors.New("ownerauth: not a sign-in challenge text")
	ErrBadDomain        = errors.New("ownerauth: unusable domain")
	ErrWrongCast        = errors.New("ownerauth: challenge is for another castd")
	ErrWrongOwner       = errors.New("ownerauth: challenge names another owner")
	ErrExpired          = errors.New("ownerauth: challenge expired")
	ErrUnknownChallenge = errors.New("ownerauth: challenge unknown or already used")
	ErrBusy             = errors.New("ownerauth: too many open challenges")
)

const title = "Blockcast owner sign-in v1"

// Options configure an Auth.
type Options struct {
	Cast                identity.PublicKey // this castd's CAST key, named in every challenge
	ChallengeTTL        time.Duration
	SessionTTL          time.Duration
	MaxChallenges       int // open challenges at most; more are refused (ErrBusy)
	MaxSessions         int // sessions at most; the one nearest expiry gives way
	MaxSessionsPerOwner int // per owner; the owner's oldest gives way
	Now                 func() time.Time
}

func (o *Options) ensureDefaults() {
	if o.ChallengeTTL <= 0 {
		o.ChallengeTTL = DefaultChallengeTTL
	}
	if o.SessionTTL <= 0 {
		o.SessionTTL = DefaultSessionTTL
	}
	if o.MaxChallenges <= 0 {
		o.MaxChallenges = DefaultMaxChallenges
	}
	if o.MaxSessions <= 0 {
		o.MaxSessions = DefaultMaxSessions
	}
	if o.MaxSessionsPerOwner <= 0 {
		o.MaxSessionsPerOwner = DefaultMaxSessionsPerOwner
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// Challenge is one issued challenge.
type Challenge struct {
	Domain  string
	Cast    identity.PublicKey
	Owner   identity.PublicKey
	Nonce   string // 32 hex digits
	Expires time.Time
}

// Text is the canonical one-line body the wallet signs (printable ASCII:
// off-chain message format 0, shown in full on a Ledger).
func (c Challenge) Text() string {
	return title + "; domain: " + c.Domain + "; cast: " + c.Cast.String() + "; owner: " + c.Owner.String() +
		"; nonce: " + c.Nonce + "; expires: " + c.Expires.UTC().Format(time.RFC3339)
}

// ParseText parses a Text, refusing any other spelling of it.
func ParseText(text string) (Challenge, error) {
	fail := func(f string, a ...any) (Challenge, error) {
		return Challenge{}, fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(f, a...))
	}
	if len(text) > 1024 {
		return fail("%d bytes", len(text))
	}
	parts := strings.Split(text, "; ")
	if len(parts) != 6 || parts[0] != title {
		return fail("not a %q text", title)
	}
	var vals [5]string
	for i, name := range []string{"domain", "cast", "owner", "nonce", "expires"} {
		v, ok := strings.CutPrefix(parts[i+1], name+": ")
		if !ok {
			return fail("field %d is not %s", i+1, name)
		}
		vals[i] = v
	}
	var c Challenge
	var err error
	c.Domain = vals[0]
	if err := checkDomain(c.Domain); err != nil {
		return fail("%v", err)
	}
	if c.Cast, err = identity.ParsePublicKey(vals[1]); err != nil {
		return fail("cast: %v", err)
	}
	if c.Owner, err = identity.ParsePublicKey(vals[2]); err != nil {
		return fail("owner: %v", err)
	}
	c.Nonce = vals[3]
	if b, err := hex.DecodeString(c.Nonce); err != nil || len(b) != 16 || strings.ToLower(c.Nonce) != c.Nonce {
		return fail("nonce is not 32 lower-case hex digits")
	}
	if c.Expires, err = time.Parse(time.RFC3339, vals[4]); err != nil {
		return fail("expires: %v", err)
	}
	c.Expires = c.Expires.UTC()
	if c.Text() != text {
		return fail("not in canonical form (UTC, whole seconds)")
	}
	return c, nil
}

// checkDomain accepts a host[:port] as a browser sends it in Host.
func checkDomain(d string) error {
	if d == "" || len(d) > 255 {
		return fmt.Errorf("%w: %d bytes", ErrBadDomain, len(d))
	}
	for _, c := range d {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune(".-:[]_", c)
		if !ok {
			return fmt.Errorf("%w: character %q", ErrBadDomain, c)
		}
	}
	return nil
}

// Session is a signed-in owner.
type Session struct {
	Token   string
	Owner   identity.PublicKey
	Expires time.Time
}

type session struct {
	owner   identity.PublicKey
	created time.Time
	expires time.Time
}

// Auth holds the open challenges and the sessions (in memory: a castd
// restart signs owners out, which costs them one signature).
type Auth struct {
	opts Options

	mu         sync.Mutex
	challenges map[string]Challenge  // by nonce
	sessions   map[[32]byte]*session // by SHA-256 of the token
	byOwner    map[identity.PublicKey]int
}

// New returns an Auth for opts.Cast.
func New(opts Options) *Auth {
	opts.ensureDefaults()
	return &Auth{opts: opts, challenges: map[string]Challenge{}, sessions: map[[32]byte]*session{}, byOwner: map[identity.PublicKey]int{}}
}

// Challenge issues a challenge for owner, reached at domain.
func (a *Auth) Challenge(owner identity.PublicKey, domain string) (Challenge, error) {
	if err := checkDomain(domain); err != nil {
		return Challenge{}, err
	}
	if owner.IsZero() {
		return Challenge{}, fmt.Errorf("%w: zero owner key", ErrMalformed)
	}
	var nonce [16]byte
	rand.Read(nonce[:])
	now := a.opts.Now()
	c := Challenge{Domain: domain, Cast: a.opts.Cast, Owner: owner, Nonce: hex.EncodeToString(nonce[:]),
		Expires: now.Add(a.opts.ChallengeTTL).UTC().Truncate(time.Second)}
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.challenges) >= a.opts.MaxChallenges {
		for n, old := range a.challenges {
			if !now.Before(old.Expires) {
				delete(a.challenges, n)
			}
		}
		if len(a.challenges) >= a.opts.MaxChallenges {
			return Challenge{}, ErrBusy
		}
	}
	a.challenges[c.Nonce] = c
	return c, nil
}

// SignIn checks the owner's signed answer to a challenge (see
// offchain.VerifyText for message and signature) and opens a session.
// The challenge is used up by a good answer.
func (a *Auth) SignIn(owner identity.PublicKey, text, message, signature string) (Session, error) {
	c, err := ParseText(text)
	if err != nil {
		return Session{}, err
	}
	if c.Cast != a.opts.Cast {
		return Session{}, fmt.Errorf("%w: it names %s, this is %s", ErrWrongCast, c.Cast, a.opts.Cast)
	}
	if c.Owner != owner {
		return Session{}, fmt.Errorf("%w: %s, signer is %s", ErrWrongOwner, c.Owner, owner)
	}
	if _, err := offchain.VerifyText(owner, text, message, signature); err != nil {
		return Session{}, err
	}
	now := a.opts.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	issued, ok := a.challenges[c.Nonce]
	if !ok || issued != c {
		return Session{}, ErrUnknownChallenge
	}
	delete(a.challenges, c.Nonce)
	if !now.Before(c.Expires) {
		return Session{}, fmt.Errorf("%w at %s", ErrExpired, c.Expires.Format(time.RFC3339))
	}
	return a.openLocked(owner, now), nil
}

func (a *Auth) openLocked(owner identity.PublicKey, now time.Time) Session {
	a.evictLocked(now, func() bool { return a.byOwner[owner] >= a.opts.MaxSessionsPerOwner },
		func(s *session) bool { return s.owner == owner })
	a.evictLocked(now, func() bool { return len(a.sessions) >= a.opts.MaxSessions },
		func(*session) bool { return true })
	var raw [32]byte
	rand.Read(raw[:])
	tok := "bco_" + base64.RawURLEncoding.EncodeToString(raw[:])
	s := &session{owner: owner, created: now, expires: now.Add(a.opts.SessionTTL)}
	a.sessions[sha256.Sum256([]byte(tok))] = s
	a.byOwner[owner]++
	return Session{Token: tok, Owner: owner, Expires: s.expires.UTC()}
}

// evictLocked makes room while full says there is none: expired sessions
// go first, then the oldest session that match selects.
func (a *Auth) evictLocked(now time.Time, full func() bool, match func(*session) bool) {
	if !full() {
		return
	}
	for k, s := range a.sessions {
		if !now.Before(s.expires) {
			a.dropLocked(k, s)
		}
	}
	for full() {
		var oldest [32]byte
		var os *session
		for k, s := range a.sessions {
			if match(s) && (os == nil || s.created.Before(os.created)) {
				oldest, os = k, s
			}
		}
		if os == nil {
			return
		}
		a.dropLocked(oldest, os)
	}
}

func (a *Auth) dropLocked(k [32]byte, s *session) {
	delete(a.sessions, k)
	if a.byOwner[s.owner]--; a.byOwner[s.owner] <= 0 {
		delete(a.byOwner, s.owner)
	}
}

// Lookup returns the owner of a live session token.
func (a *Auth) Lookup(token string) (identity.PublicKey, bool) {
	if !strings.HasPrefix(token, "bco_") || len(token) > 64 {
		return identity.PublicKey{}, false
	}
	k := sha256.Sum256([]byte(token))
	now := a.opts.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	s, ok := a.sessions[k]
	if !ok {
		return identity.PublicKey{}, false
	}
	if !now.Before(s.expires) {
		a.dropLocked(k, s)
		return identity.PublicKey{}, false
	}
	return s.owner, true
}

// SignOut ends a session; it reports whether there was one.
func (a *Auth) SignOut(token string) bool {
	k := sha256.Sum256([]byte(token))
	a.mu.Lock()
	defer a.mu.Unlock()
	s, ok := a.sessions[k]
	if ok {
		a.dropLocked(k, s)
	}
	return ok
}

// Len returns the open challenges and the sessions.
func (a *Auth) Len() (challenges, sessions int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.challenges), len(a.sessions)
}
