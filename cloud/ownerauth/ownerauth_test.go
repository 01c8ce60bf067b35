package ownerauth

import (
	"errors"
	"testing"
	"time"

	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/offchain"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func setup(t *testing.T) (*Auth, *clock, *identity.Keypair, *identity.Keypair) {
	t.Helper()
	cast, _ := identity.Generate()
	owner, _ := identity.Generate()
	clk := &clock{t: time.Date(2026, 12, 5, 1, 0, 0, 0, time.UTC)}
	return New(Options{Cast: cast.Public(), Now: clk.now, MaxSessionsPerOwner: 2, MaxSessions: 3}), clk, cast, owner
}

// sign answers text as the solana CLI (Agave 3.x) does.
func sign(t *testing.T, k *identity.Keypair, text string) (string, string) {
	t.Helper()
	msg, sig, err := offchain.SignText(k, text)
	if err != nil {
		t.Fatal(err)
	}
	return msg, sig
}

func TestSignIn(t *testing.T) {
	a, _, _, owner := setup(t)
	c, err := a.Challenge(owner.Public(), "castd.example:8080")
	if err != nil {
		t.Fatal(err)
	}
	msg, sig := sign(t, owner, c.Text())
	s, err := a.SignIn(owner.Public(), c.Text(), msg, sig)
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := a.Lookup(s.Token); !ok || got != owner.Public() {
		t.Fatalf("Lookup = %v %v", got, ok)
	}
	// The CLI's way: only the base58 signature, no message (legacy layout too).
	c2, _ := a.Challenge(owner.Public(), "castd.example")
	m, _ := offchain.NewMessage(offchain.LayoutLegacy, []byte(c2.Text()))
	raw, _ := offchain.Encode(m)
	if _, err := a.SignIn(owner.Public(), c2.Text(), "", identity.EncodeBase58(owner.Sign(raw))); err != nil {
		t.Fatalf("legacy-layout CLI signature: %v", err)
	}
	if !a.SignOut(s.Token) {
		t.Fatal("SignOut found no session")
	}
	if _, ok := a.Lookup(s.Token); ok {
		t.Fatal("token works after sign-out")
	}
}

func TestSignInAttacks(t *testing.T) {
	for _, tc := range []struct {
		name   string
		attack func(t *testing.T, a *Auth, clk *clock, cast, owner *identity.Keypair) error
		want   error
	}{
		{"replayed challenge", func(t *testing.T, a *Auth, _ *clock, _, owner *identity.Keypair) error {
			c, _ := a.Challenge(owner.Public(), "h")
			msg, sig := sign(t, owner, c.Text())
			if _, err := a.SignIn(owner.Public(), c.Text(), msg, sig); err != nil {
				t.Fatal(err)
			}
			_, err := a.SignIn(owner.Public(), c.Text(), msg, sig)
			return err
		}, ErrUnknownChallenge},
		{"expired challenge", func(t *testing.T, a *Auth, clk *clock, _, owner *identity.Keypair) error {
			c, _ := a.Challenge(owner.Public(), "h")
			msg, sig := sign(t, owner, c.Text())
			clk.t = clk.t.Add(DefaultChallengeTTL + time.Second)
			_, err := a.SignIn(owner.Public(), c.Text(), msg, sig)
			return err
		}, ErrExpired},
		{"signed by another key", func(t *testing.T, a *Auth, _ *clock, _, owner *identity.Keypair) error {
			other, _ := identity.Generate()
			c, _ := a.Challenge(owner.Public(), "h")
			_, sig := sign(t, other, c.Text())
			_, err := a.SignIn(owner.Public(), c.Text(), "", sig)
			return err
		}, offchain.ErrBadSignature},
		{"another key signs in as itself with the owner's challenge", func(t *testing.T, a *Auth, _ *clock, _, owner *identity.Keypair) error {
			other, _ := identity.Generate()
			c, _ := a.Challenge(owner.Public(), "h")
			msg, sig := sign(t, other, c.Text())
			_, err := a.SignIn(other.Public(), c.Text(), msg, sig)
			return err
		}, ErrWrongOwner},
		{"challenge of another castd", func(t *testing.T, a *Auth, clk *clock, _, owner *identity.Keypair) error {
			otherCast, _ := identity.Generate()
			b := New(Options{Cast: otherCast.Public(), Now: clk.now})
			c, _ := b.Challenge(owner.Public(), "h")
			msg, sig := sign(t, owner, c.Text())
			_, err := a.SignIn(owner.Public(), c.Text(), msg, sig)
			return err
		}, ErrWrongCast},
		{"forged challenge (never issued)", func(t *testing.T, a *Auth, _ *clock, cast, owner *identity.Keypair) error {
			c := Challenge{Domain: "h", Cast: cast.Public(), Owner: owner.Public(), Nonce: "00112233445566778899aabbccddeeff", Expires: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
			msg, sig := sign(t, owner, c.Text())
			_, err := a.SignIn(owner.Public(), c.Text(), msg, sig)
			return err
		}, ErrUnknownChallenge},
		{"issued challenge with a later expiry", func(t *testing.T, a *Auth, _ *clock, _, owner *identity.Keypair) error {
			c, _ := a.Challenge(owner.Public(), "h")
			c.Expires = c.Expires.Add(24 * time.Hour)
			msg, sig := sign(t, owner, c.Text())
			_, err := a.SignIn(owner.Public(), c.Text(), msg, sig)
			return err
		}, ErrUnknownChallenge},
		{"message whose body is another text", func(t *testing.T, a *Auth, _ *clock, _, owner *identity.Keypair) error {
			c, _ := a.Challenge(owner.Public(), "h")
			msg, sig := sign(t, owner, "something else")
			_, err := a.SignIn(owner.Public(), c.Text(), msg, sig)
			return err
		}, offchain.ErrBadSignedText},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, clk, cast, owner := setup(t)
			err := tc.attack(t, a, clk, cast, owner)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if _, s := a.Len(); s > 1 {
				t.Fatalf("%d sessions after the attack", s)
			}
		})
	}
}

func TestBounds(t *testing.T) {
	a, clk, _, owner := setup(t)
	var toks []string
	for range 3 {
		c, _ := a.Challenge(owner.Public(), "h")
		msg, sig := sign(t, owner, c.Text())
		s, err := a.SignIn(owner.Public(), c.Text(), msg, sig)
		if err != nil {
			t.Fatal(err)
		}
		toks = append(toks, s.Token)
		clk.t = clk.t.Add(time.Second)
	}
	if _, ok := a.Lookup(toks[0]); ok {
		t.Error("owner's oldest session survived past MaxSessionsPerOwner")
	}
	if _, s := a.Len(); s != 2 {
		t.Errorf("%d sessions, want 2", s)
	}
	clk.t = clk.t.Add(DefaultSessionTTL)
	if _, ok := a.Lookup(toks[2]); ok {
		t.Error("expired session accepted")
	}
	b := New(Options{MaxChallenges: 2, Now: clk.now})
	for i := range 3 {
		_, err := b.Challenge(owner.Public(), "h")
		if i == 2 && !errors.Is(err, ErrBusy) {
			t.Fatalf("third open challenge: %v, want ErrBusy", err)
		}
	}
	clk.t = clk.t.Add(DefaultChallengeTTL)
	if _, err := b.Challenge(owner.Public(), "h"); err != nil {
		t.Fatalf("after the others expired: %v", err)
	}
	if _, err := b.Challenge(owner.Public(), "evil.example/\npath"); !errors.Is(err, ErrBadDomain) {
		t.Fatalf("bad domain: %v", err)
	}
}

func FuzzParseText(f *testing.F) {
	cast, _ := identity.FromSeed(make([]byte, 32))
	c := Challenge{Domain: "castd.example:8080", Cast: cast.Public(), Owner: cast.Public(), Nonce: "00112233445566778899aabbccddeeff", Expires: time.Date(2026, 12, 5, 1, 0, 0, 0, time.UTC)}
	f.Add(c.Text())
	f.Add("Blockcast owner sign-in v1; domain: ; cast: x")
	f.Add("")
	f.Fuzz(func(t *testing.T, text string) {
		c, err := ParseText(text)
		if err == nil && c.Text() != text {
			t.Fatalf("accepted a non-canonical text %q", text)
		}
	})
}
