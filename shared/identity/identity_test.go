package identity

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
)

// RFC 8032 section 7.1, TEST 1.
const (
	rfcSeed = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"
	rfcPub  = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
	rfcSig  = "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065" +
		"224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
)

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRFC8032KeyFile(t *testing.T) {
	k, err := LoadFile("testdata/rfc8032-test1.json")
	if err != nil {
		t.Fatal(err)
	}
	pub := k.Public()
	if got := hex.EncodeToString(pub[:]); got != rfcPub {
		t.Errorf("public key %s, want %s", got, rfcPub)
	}
	if got := hex.EncodeToString(k.Sign(nil)); got != rfcSig {
		t.Errorf("signature of the empty message %s, want %s", got, rfcSig)
	}
	if !pub.Verify(nil, mustHex(t, rfcSig)) {
		t.Error("RFC signature does not verify")
	}
	// The file is in the compact form we write ourselves.
	file, err := os.ReadFile("testdata/rfc8032-test1.json")
	if err != nil {
		t.Fatal(err)
	}
	if got := k.MarshalSolana(); !bytes.Equal(got, file) {
		t.Errorf("MarshalSolana = %s\nwant %s", got, file)
	}
}

func TestFromSeed(t *testing.T) {
	k, err := FromSeed(mustHex(t, rfcSeed))
	if err != nil {
		t.Fatal(err)
	}
	if got := k.Public(); hex.EncodeToString(got[:]) != rfcPub {
		t.Errorf("public key %x", got)
	}
	for _, n := range []int{0, 31, 33, 64} {
		if _, err := FromSeed(make([]byte, n)); !errors.Is(err, ErrMalformedKey) {
			t.Errorf("FromSeed(%d bytes) error = %v, want ErrMalformedKey", n, err)
		}
	}
}

func TestGenerateSignVerify(t *testing.T) {
	a, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	b, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	if a.Public() == b.Public() {
		t.Fatal("two generated keys are equal")
	}
	msg := []byte("hello")
	sig := a.Sign(msg)
	tests := []struct {
		name string
		pub  PublicKey
		msg  []byte
		sig  []byte
		want bool
	}{
		{"valid", a.Public(), msg, sig, true},
		{"other key", b.Public(), msg, sig, false},
		{"other message", a.Public(), []byte("hellO"), sig, false},
		{"short signature", a.Public(), msg, sig[:63], false},
		{"long signature", a.Public(), msg, append(append([]byte(nil), sig...), 0), false},
		{"nil signature", a.Public(), msg, nil, false},
		{"flipped bit", a.Public(), msg, flip(sig, 10), false},
	}
	for _, tt := range tests {
		if got := tt.pub.Verify(tt.msg, tt.sig); got != tt.want {
			t.Errorf("%s: Verify = %v, want %v", tt.name, got, tt.want)
		}
	}
	// PrivateKey is a usable copy.
	priv := a.PrivateKey()
	if !bytes.Equal(ed25519.Sign(priv, msg), sig) {
		t.Error("PrivateKey signs differently")
	}
	priv[0] ^= 1
	if !bytes.Equal(a.Sign(msg), sig) {
		t.Error("PrivateKey is not a copy")
	}
}

func flip(b []byte, i int) []byte {
	c := append([]byte(nil), b...)
	c[i] ^= 1
	return c
}

func TestKeypairDoesNotPrintSecret(t *testing.T) {
	k, err := FromSeed(mustHex(t, rfcSeed))
	if err != nil {
		t.Fatal(err)
	}
	out := fmt.Sprintf("%v %+v %#v %s %v", k, k, k, k, *k)
	for _, secret := range []string{
		rfcSeed, "157,97,177", "157 97 177", EncodeBase58(k.priv), EncodeBase58(k.priv[:32]),
	} {
		if strings.Contains(out, secret) {
			t.Errorf("formatted keypair leaks %q: %s", secret, out)
		}
	}
	if !strings.Contains(out, k.ID()) {
		t.Errorf("formatted keypair does not name its ID: %s", out)
	}
}

func TestParsePublicKey(t *testing.T) {
	k, _ := FromSeed(mustHex(t, rfcSeed))
	id := k.ID()
	p, err := ParsePublicKey(id)
	if err != nil || p != k.Public() {
		t.Fatalf("ParsePublicKey(%q) = %v, %v", id, p, err)
	}
	var zero PublicKey
	if got := zero.String(); got != strings.Repeat("1", 32) {
		t.Errorf("zero key = %q", got)
	}
	if p, err := ParsePublicKey(zero.String()); err != nil || !p.IsZero() {
		t.Errorf("zero key round trip: %v, %v", p, err)
	}
	bad := []string{
		"",
		id[:20],                     // too short
		id + "1",                    // too long
		"1" + id,                    // leading zero byte: 33 bytes
		strings.Repeat("1", 31),     // 31 zero bytes
		strings.Repeat("z", 45),     // too long to be 32 bytes
		strings.Repeat("z", 44),     // more than 2^256
		"0" + id[1:],                // bad character
		" " + id,                    // whitespace
		id[:20] + "\x00" + id[21:],  // NUL
		strings.Repeat("2", 10_000), // huge
		"11111111111111111111111111111111111111111111111111111111111",
	}
	for _, s := range bad {
		if _, err := ParsePublicKey(s); !errors.Is(err, ErrBadPublicKey) {
			t.Errorf("ParsePublicKey(%.60q) error = %v, want ErrBadPublicKey", s, err)
		}
	}
}

func TestPublicKeyJSON(t *testing.T) {
	k, _ := FromSeed(mustHex(t, rfcSeed))
	type doc struct {
		Node PublicKey  `json:"node"`
		Opt  *PublicKey `json:"opt,omitempty"`
	}
	b, err := json.Marshal(doc{Node: k.Public()})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"node":"` + k.ID() + `"}`; string(b) != want {
		t.Errorf("json = %s, want %s", b, want)
	}
	var d doc
	if err := json.Unmarshal(b, &d); err != nil || d.Node != k.Public() {
		t.Errorf("unmarshal = %v, %v", d.Node, err)
	}
	for _, in := range []string{`{"node":"0abc"}`, `{"node":""}`, `{"node":12}`, `{"node":[1,2]}`} {
		if err := json.Unmarshal([]byte(in), &d); err == nil {
			t.Errorf("unmarshal %s: no error", in)
		}
	}
}

func TestParseSolana(t *testing.T) {
	k, _ := FromSeed(mustHex(t, rfcSeed))
	good := string(k.MarshalSolana())
	nums := strings.Split(strings.Trim(good, "[]"), ",")
	join := func(ns []string) string { return "[" + strings.Join(ns, ",") + "]" }
	with := func(i int, v string) string {
		c := append([]string(nil), nums...)
		c[i] = v
		return join(c)
	}

	accepted := map[string]string{
		"compact":          good,
		"trailing newline": good + "\n",
		"pretty":           "[\n  " + strings.Join(nums, ",\n  ") + "\n]\n",
		"spaces":           " [ " + strings.Join(nums, " , ") + " ] ",
		"tabs and CRLF":    "\t[" + strings.Join(nums, ",\r\n") + "]\r\n",
	}
	for name, in := range accepted {
		got, err := ParseSolana([]byte(in))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if got.Public() != k.Public() {
			t.Errorf("%s: wrong key", name)
		}
	}

	mismatch := with(40, fmt.Sprint((int(k.pub[8])+1)%256))
	if _, err := ParseSolana([]byte(mismatch)); !errors.Is(err, ErrKeyMismatch) {
		t.Errorf("mismatched halves: error = %v, want ErrKeyMismatch", err)
	}

	rejected := map[string]string{
		"empty":            "",
		"whitespace":       " \n",
		"empty array":      "[]",
		"null":             "null",
		"object":           `{"key":[1,2]}`,
		"string":           `"` + good + `"`,
		"63 numbers":       join(nums[:63]),
		"65 numbers":       join(append(append([]string(nil), nums...), "1")),
		"128 numbers":      join(append(append([]string(nil), nums...), nums...)),
		"256":              with(3, "256"),
		"1000":             with(3, "1000"),
		"huge":             with(3, "99999999999999999999"),
		"negative":         with(3, "-1"),
		"minus zero":       with(3, "-0"),
		"plus":             with(3, "+1"),
		"fraction":         with(3, "1.0"),
		"exponent":         with(3, "1e2"),
		"leading zero":     with(3, "01"),
		"quoted number":    with(3, `"1"`),
		"hex":              with(3, "0x1"),
		"nested":           with(3, "[1]"),
		"true":             with(3, "true"),
		"empty element":    strings.Replace(good, ",", ",,", 1),
		"trailing comma":   strings.TrimSuffix(good, "]") + ",]",
		"unterminated":     strings.TrimSuffix(good, "]"),
		"truncated":        good[:len(good)/2],
		"trailing garbage": good + "x",
		"two arrays":       good + good,
		"BOM":              "\xef\xbb\xbf" + good,
		"NUL":              good + "\x00",
		"base58 string":    EncodeBase58(k.priv),
		"seed only":        join(nums[:32]),
	}
	for name, in := range rejected {
		_, err := ParseSolana([]byte(in))
		if !errors.Is(err, ErrMalformedKey) {
			t.Errorf("%s: error = %v, want ErrMalformedKey", name, err)
		}
		if err != nil && strings.Contains(err.Error(), strings.Join(nums[:4], ",")) {
			t.Errorf("%s: error quotes the key: %v", name, err)
		}
	}
}

func TestMarshalSolanaIsJSON(t *testing.T) {
	for i := 0; i < 20; i++ {
		k, err := Generate()
		if err != nil {
			t.Fatal(err)
		}
		var nums []int
		if err := json.Unmarshal(k.MarshalSolana(), &nums); err != nil {
			t.Fatal(err)
		}
		want, _ := json.Marshal(nums) // compact, as serde_json::to_string writes it
		if !bytes.Equal(k.MarshalSolana(), want) {
			t.Fatalf("MarshalSolana = %s, want %s", k.MarshalSolana(), want)
		}
		back, err := ParseSolana(k.MarshalSolana())
		if err != nil || back.Public() != k.Public() || !bytes.Equal(back.priv, k.priv) {
			t.Fatalf("round trip: %v", err)
		}
	}
}

func FuzzParseSolana(f *testing.F) {
	k, _ := FromSeed(make([]byte, SeedSize))
	f.Add(k.MarshalSolana())
	f.Add([]byte("[1,2,3]"))
	f.Add([]byte(" [ 0 , 255 ] "))
	f.Add([]byte("[]"))
	f.Fuzz(func(t *testing.T, data []byte) {
		k, err := ParseSolana(data)
		if err != nil {
			if !errors.Is(err, ErrMalformedKey) && !errors.Is(err, ErrKeyMismatch) {
				t.Fatalf("unexpected error class: %v", err)
			}
			return
		}
		// Anything accepted is valid JSON of 64 bytes that re-encode to the
		// same key, with matching halves.
		var nums []uint8
		if err := json.Unmarshal(data, &nums); err != nil || len(nums) != 64 {
			t.Fatalf("accepted %q, which encoding/json reads as %v, %v", data, nums, err)
		}
		if !bytes.Equal(nums, k.priv) {
			t.Fatalf("accepted %q as a different key", data)
		}
		back, err := ParseSolana(k.MarshalSolana())
		if err != nil || back.Public() != k.Public() {
			t.Fatalf("re-encoded key does not parse: %v", err)
		}
	})
}

func FuzzParsePublicKey(f *testing.F) {
	k, _ := FromSeed(make([]byte, SeedSize))
	f.Add(k.ID())
	f.Add(strings.Repeat("1", 32))
	f.Add(strings.Repeat("z", 44))
	f.Add("0OIl")
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePublicKey(s)
		if err != nil {
			if !errors.Is(err, ErrBadPublicKey) {
				t.Fatalf("unexpected error class: %v", err)
			}
			return
		}
		if p.String() != s {
			t.Fatalf("ParsePublicKey(%q) is not canonical: %q", s, p.String())
		}
	})
}

func BenchmarkSign(b *testing.B) {
	k, _ := FromSeed(make([]byte, SeedSize))
	msg := make([]byte, 256)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		k.Sign(msg)
	}
}

func BenchmarkVerify(b *testing.B) {
	k, _ := FromSeed(make([]byte, SeedSize))
	msg := make([]byte, 256)
	sig := k.Sign(msg)
	pub := k.Public()
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if !pub.Verify(msg, sig) {
			b.Fatal("verify failed")
		}
	}
}

func BenchmarkParseSolana(b *testing.B) {
	k, _ := FromSeed(make([]byte, SeedSize))
	data := k.MarshalSolana()
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := ParseSolana(data); err != nil {
			b.Fatal(err)
		}
	}
}
