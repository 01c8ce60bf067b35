package contracts

import (
	"bytes"
	"errors"
	"flag"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/offchain"
)

var update = flag.Bool("update", false, "rewrite testdata golden files")

func seedKey(t testing.TB, b byte) *identity.Keypair {
	t.Helper()
	k, err := identity.FromSeed(bytes.Repeat([]byte{b}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

var t0 = time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)

func testOffer(owner, node, cast identity.PublicKey) Offer {
	return Offer{Owner: owner, Node: node, Cast: cast, BandwidthMbps: 100, AvailabilityHours: 648, StorageGB: 64,
		Start: t0, End: t0.Add(30 * 24 * time.Hour)}
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from golden:\n got %s\nwant %s", name, got, want)
	}
}

// TestGolden pins the wire format: the offer text, the signed contract
// record, and that the record decodes and verifies.
func TestGolden(t *testing.T) {
	owner, node, cast := seedKey(t, 1), seedKey(t, 2), seedKey(t, 3)
	o := testOffer(owner.Public(), node.Public(), cast.Public())
	golden(t, "offer.txt", []byte(o.Text()+"\n"))
	msg, sig, err := offchain.SignText(owner, o.Text())
	if err != nil {
		t.Fatal(err)
	}
	c, err := Accept(cast, owner.Public(), o.Text(), msg, sig, t0)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := Encode(c)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "contract.json", append(rec, '\n'))
	raw, _ := os.ReadFile("testdata/contract.json")
	back, err := Decode(bytes.TrimSpace(raw))
	if err != nil {
		t.Fatalf("golden contract does not decode: %v", err)
	}
	if back.ID != c.ID || back.Offer != c.Offer {
		t.Fatalf("round trip: %+v", back)
	}
}

func TestAcceptRefuses(t *testing.T) {
	owner, node, cast, other := seedKey(t, 1), seedKey(t, 2), seedKey(t, 3), seedKey(t, 4)
	sign := func(k *identity.Keypair, text string) (string, string) {
		m, s, err := offchain.SignText(k, text)
		if err != nil {
			t.Fatal(err)
		}
		return m, s
	}
	good := testOffer(owner.Public(), node.Public(), cast.Public())
	for _, tc := range []struct {
		name string
		run  func() error
		want error
	}{
		{"signed by another key", func() error {
			m, s := sign(other, good.Text())
			_, err := Accept(cast, owner.Public(), good.Text(), m, s, t0)
			return err
		}, offchain.ErrBadSignature},
		{"another key claims the owner's offer", func() error {
			m, s := sign(other, good.Text())
			_, err := Accept(cast, other.Public(), good.Text(), m, s, t0)
			return err
		}, ErrTerms},
		{"offer for another castd", func() error {
			o := good
			o.Cast = other.Public()
			m, s := sign(owner, o.Text())
			_, err := Accept(cast, owner.Public(), o.Text(), m, s, t0)
			return err
		}, ErrWrongCast},
		{"backdated", func() error {
			m, s := sign(owner, good.Text())
			_, err := Accept(cast, owner.Public(), good.Text(), m, s, t0.Add(2*time.Hour))
			return err
		}, ErrTerms},
		{"more hours than the period has", func() error {
			o := good
			o.AvailabilityHours = 30*24 + 1
			m, s := sign(owner, o.Text())
			_, err := Accept(cast, owner.Public(), o.Text(), m, s, t0)
			return err
		}, ErrTerms},
		{"end before start", func() error {
			o := good
			o.End = o.Start.Add(-time.Hour)
			m, s := sign(owner, o.Text())
			_, err := Accept(cast, owner.Public(), o.Text(), m, s, t0)
			return err
		}, ErrTerms},
		{"non-canonical text", func() error {
			text := strings.Replace(good.Text(), "storage_gb: 64", "storage_gb: 064", 1)
			m, s := sign(owner, text)
			_, err := Accept(cast, owner.Public(), text, m, s, t0)
			return err
		}, ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.run(); !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestTamperedContract(t *testing.T) {
	owner, node, cast := seedKey(t, 1), seedKey(t, 2), seedKey(t, 3)
	o := testOffer(owner.Public(), node.Public(), cast.Public())
	m, s, _ := offchain.SignText(owner, o.Text())
	c, err := Accept(cast, owner.Public(), o.Text(), m, s, t0)
	if err != nil {
		t.Fatal(err)
	}
	for name, tamper := range map[string]func(*Contract){
		"terms raised":     func(c *Contract) { c.Offer.AvailabilityHours = 1 },
		"accepted changed": func(c *Contract) { c.Accepted = c.Accepted.Add(time.Hour) },
		"id changed":       func(c *Contract) { c.ID = strings.Repeat("0", 64) },
		"cast sig swapped": func(c *Contract) { c.Cast.Signature = c.Owner.Signature },
		"version":          func(c *Contract) { c.Version = 2 },
	} {
		bad := c
		tamper(&bad)
		if err := bad.Verify(); !errors.Is(err, ErrBadContract) {
			t.Errorf("%s: Verify = %v", name, err)
		}
	}
}

func TestStore(t *testing.T) {
	owner, node, cast := seedKey(t, 1), seedKey(t, 2), seedKey(t, 3)
	path := filepath.Join(t.TempDir(), "contracts.db")
	st, err := Open(path, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	accept := func(o Offer) Contract {
		m, s, _ := offchain.SignText(owner, o.Text())
		c, err := Accept(cast, owner.Public(), o.Text(), m, s, t0)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	o := testOffer(owner.Public(), node.Public(), cast.Public())
	c := accept(o)
	if _, err := st.Put(c); err != nil {
		t.Fatal(err)
	}
	if again, err := st.Put(c); err != nil || again.ID != c.ID {
		t.Fatalf("same contract again: %v", err)
	}
	o2 := o
	o2.Start, o2.End, o2.AvailabilityHours = o.End.Add(-time.Hour), o.End.Add(24*time.Hour), 20
	if _, err := st.Put(accept(o2)); !errors.Is(err, ErrOverlap) {
		t.Fatalf("overlapping contract: %v", err)
	}
	o2.Start = o.End
	if _, err := st.Put(accept(o2)); err != nil {
		t.Fatalf("next period: %v", err)
	}
	bad := c
	bad.Offer.StorageGB = 1
	if _, err := st.Put(bad); !errors.Is(err, ErrBadContract) {
		t.Fatalf("tampered contract stored: %v", err)
	}
	st.Close()
	st, err = Open(path, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if got := st.List(nil); len(got) != 2 || got[0].ID != c.ID {
		t.Fatalf("after reopen: %d contracts", len(got))
	}
}

func FuzzParseOffer(f *testing.F) {
	owner, node, cast := seedKey(f, 1), seedKey(f, 2), seedKey(f, 3)
	f.Add(testOffer(owner.Public(), node.Public(), cast.Public()).Text())
	f.Add("Blockcast capacity offer v1; owner: 1")
	f.Fuzz(func(t *testing.T, text string) {
		o, err := ParseOffer(text)
		if err == nil && (o.Text() != text || o.CheckTerms() != nil) {
			t.Fatalf("accepted %q", text)
		}
	})
}

func FuzzDecode(f *testing.F) {
	raw, err := os.ReadFile("testdata/contract.json")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(raw)
	f.Add([]byte(`{"version":1}`))
	f.Add([]byte(`{"version":1,"offer":{"owner":"x"}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Decode(b)
		if err == nil {
			if err := c.Verify(); err != nil {
				t.Fatalf("decoded a contract that does not verify: %v", err)
			}
		}
	})
}
