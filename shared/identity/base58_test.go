package identity

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"math/rand"
	"os"
	"strings"
	"testing"

	"github.com/mr-tron/base58"
)

func loadBase58Vectors(t testing.TB) [][2]string {
	t.Helper()
	b, err := os.ReadFile("testdata/base58.json")
	if err != nil {
		t.Fatal(err)
	}
	var v struct{ Vectors [][2]string }
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	if len(v.Vectors) == 0 {
		t.Fatal("no vectors")
	}
	return v.Vectors
}

func TestBase58Vectors(t *testing.T) {
	for _, v := range loadBase58Vectors(t) {
		raw, err := hex.DecodeString(v[0])
		if err != nil {
			t.Fatal(err)
		}
		if got := EncodeBase58(raw); got != v[1] {
			t.Errorf("EncodeBase58(%s) = %q, want %q", v[0], got, v[1])
		}
		got, err := DecodeBase58(v[1])
		if err != nil {
			t.Errorf("DecodeBase58(%q): %v", v[1], err)
			continue
		}
		if !bytes.Equal(got, raw) {
			t.Errorf("DecodeBase58(%q) = %x, want %s", v[1], got, v[0])
		}
	}
}

// TestBase58MatchesReference cross-checks random inputs, with and without
// leading zeros, against the base58 package solana-go uses.
func TestBase58MatchesReference(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for i := 0; i < 2000; i++ {
		b := make([]byte, rng.Intn(80))
		rng.Read(b)
		for z := rng.Intn(4); z > 0 && len(b) > 0; z-- {
			b[rng.Intn(len(b))] = 0
		}
		if rng.Intn(3) == 0 {
			b = append(make([]byte, rng.Intn(5)), b...)
		}
		want := base58.Encode(b)
		got := EncodeBase58(b)
		if got != want {
			t.Fatalf("EncodeBase58(%x) = %q, reference %q", b, got, want)
		}
		dec, err := DecodeBase58(got)
		if err != nil || !bytes.Equal(dec, b) {
			t.Fatalf("DecodeBase58(%q) = %x, %v; want %x", got, dec, err, b)
		}
	}
}

func TestDecodeBase58Errors(t *testing.T) {
	for _, s := range []string{
		"0", "O", "I", "l", // not in the Bitcoin alphabet
		"abc def", " 2g", "2g\n", "2g=", "+/", "é", "\x00",
		strings.Repeat("2", MaxBase58Len+1),
	} {
		if _, err := DecodeBase58(s); !errors.Is(err, ErrBase58) {
			t.Errorf("DecodeBase58(%q) error = %v, want ErrBase58", s, err)
		}
	}
	if _, err := DecodeBase58(strings.Repeat("z", MaxBase58Len)); err != nil {
		t.Errorf("DecodeBase58 of MaxBase58Len characters: %v", err)
	}
}

func FuzzDecodeBase58(f *testing.F) {
	for _, v := range loadBase58Vectors(f) {
		f.Add(v[1])
	}
	f.Add("0OIl")
	f.Add("1111")
	f.Fuzz(func(t *testing.T, s string) {
		got, err := DecodeBase58(s)
		ref, referr := base58.Decode(s)
		if len(s) > MaxBase58Len {
			if err == nil {
				t.Fatal("accepted an over-long input")
			}
			return
		}
		if s == "" { // the reference refuses it; it is the empty byte string
			if err != nil || len(got) != 0 {
				t.Fatalf("DecodeBase58(\"\") = %x, %v", got, err)
			}
			return
		}
		if (err == nil) != (referr == nil) {
			t.Fatalf("DecodeBase58(%q) error %v, reference error %v", s, err, referr)
		}
		if err != nil {
			return
		}
		if !bytes.Equal(got, ref) {
			t.Fatalf("DecodeBase58(%q) = %x, reference %x", s, got, ref)
		}
		// Base58 is a bijection: decoding is canonical.
		if back := EncodeBase58(got); back != s {
			t.Fatalf("EncodeBase58(DecodeBase58(%q)) = %q", s, back)
		}
	})
}

func BenchmarkEncodeBase58PublicKey(b *testing.B) {
	k, _ := FromSeed(make([]byte, SeedSize))
	pub := k.Public()
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		_ = EncodeBase58(pub[:])
	}
}

func BenchmarkDecodeBase58PublicKey(b *testing.B) {
	k, _ := FromSeed(make([]byte, SeedSize))
	id := k.ID()
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := ParsePublicKey(id); err != nil {
			b.Fatal(err)
		}
	}
}
