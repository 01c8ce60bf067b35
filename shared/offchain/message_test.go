package offchain

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"math/rand"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/blockcast/beacon/shared/identity"
)

type sdkVector struct {
	Name       string   `json:"name"`
	Layout     string   `json:"layout"`
	Body       string   `json:"body"`
	Format     Format   `json:"format"`
	Signers    []string `json:"signers"`
	Serialized []byte   `json:"-"`
	RawBytes   []int    `json:"serialized"`
	Hash       string   `json:"hash"`
}

func loadSDKVectors(t testing.TB) []sdkVector {
	t.Helper()
	data, err := os.ReadFile("testdata/solana-sdk.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct{ Vectors []sdkVector }
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Vectors) == 0 {
		t.Fatal("no vectors")
	}
	for i := range doc.Vectors {
		v := &doc.Vectors[i]
		for _, n := range v.RawBytes {
			v.Serialized = append(v.Serialized, byte(n))
		}
	}
	return doc.Vectors
}

func parseLayout(t testing.TB, s string) Layout {
	switch s {
	case "v0":
		return LayoutV0
	case "legacy":
		return LayoutLegacy
	}
	t.Fatalf("layout %q", s)
	return 0
}

// The encoder reproduces the Rust implementation's serialized bytes and
// hashes, and the decoder reads them back.
func TestSolanaSDKVectors(t *testing.T) {
	for _, v := range loadSDKVectors(t) {
		layout := parseLayout(t, v.Layout)
		var signers []identity.PublicKey
		for _, s := range v.Signers {
			k, err := identity.ParsePublicKey(s)
			if err != nil {
				t.Fatal(err)
			}
			signers = append(signers, k)
		}
		m, err := NewMessage(layout, []byte(v.Body), signers...)
		if err != nil {
			t.Errorf("%s: NewMessage: %v", v.Name, err)
			continue
		}
		if m.Format != v.Format {
			t.Errorf("%s: format %d, Rust picks %d", v.Name, m.Format, v.Format)
		}
		got, err := Encode(m)
		if err != nil {
			t.Errorf("%s: Encode: %v", v.Name, err)
			continue
		}
		if !bytes.Equal(got, v.Serialized) {
			t.Errorf("%s: Encode = %v\nwant %v", v.Name, got, v.Serialized)
		}
		if v.Hash != "" {
			sum := sha256.Sum256(got)
			if h := identity.EncodeBase58(sum[:]); h != v.Hash {
				t.Errorf("%s: hash %s, want %s", v.Name, h, v.Hash)
			}
		}
		back, err := Decode(v.Serialized)
		if err != nil {
			t.Errorf("%s: Decode: %v", v.Name, err)
			continue
		}
		if !reflect.DeepEqual(back, m) {
			t.Errorf("%s: Decode = %+v, want %+v", v.Name, back, m)
		}
	}
}

func TestNewMessageFormat(t *testing.T) {
	one := []identity.PublicKey{{1}}
	ascii := func(n int) []byte { return bytes.Repeat([]byte{'a'}, n) }
	tests := []struct {
		name    string
		layout  Layout
		body    []byte
		signers []identity.PublicKey
		format  Format
		err     error
	}{
		{"ascii", LayoutLegacy, []byte("hello world"), nil, FormatRestrictedASCII, nil},
		{"newline is not restricted ASCII", LayoutLegacy, []byte("a\nb"), nil, FormatLimitedUTF8, nil},
		{"tab", LayoutV0, []byte("a\tb"), one, FormatLimitedUTF8, nil},
		{"DEL", LayoutV0, []byte("a\x7fb"), one, FormatLimitedUTF8, nil},
		{"utf8", LayoutV0, []byte("héllo"), one, FormatLimitedUTF8, nil},
		{"not utf8", LayoutV0, []byte{0xff, 0xfe}, one, 0, ErrFormat},
		{"surrogate", LayoutLegacy, []byte("\xed\xa0\x80"), nil, 0, ErrFormat},
		{"empty", LayoutLegacy, nil, nil, 0, ErrMalformed},
		{"no signers", LayoutV0, []byte("x"), nil, 0, ErrMalformed},
		{"signers in legacy", LayoutLegacy, []byte("x"), one, 0, ErrMalformed},
		{"zero key among two", LayoutV0, []byte("x"), []identity.PublicKey{{1}, {}}, 0, ErrMalformed},
		{"lone zero key", LayoutV0, []byte("x"), []identity.PublicKey{{}}, FormatRestrictedASCII, nil},
		{"256 signers", LayoutV0, []byte("x"), make([]identity.PublicKey, 256), 0, ErrMalformed},
		{"unknown layout", Layout(9), []byte("x"), nil, 0, ErrMalformed},

		// Boundaries, as the Rust constants: legacy MAX_LEN_LEDGER 1212 and
		// MAX_LEN 65515; v0 with one signer 1232-85 and 65535-85.
		{"legacy ledger max", LayoutLegacy, ascii(1212), nil, FormatRestrictedASCII, nil},
		{"legacy over ledger", LayoutLegacy, ascii(1213), nil, FormatExtendedUTF8, nil},
		{"legacy max", LayoutLegacy, ascii(65515), nil, FormatExtendedUTF8, nil},
		{"legacy too long", LayoutLegacy, ascii(65516), nil, 0, ErrTooLong},
		{"v0 ledger max", LayoutV0, ascii(1147), one, FormatRestrictedASCII, nil},
		{"v0 over ledger", LayoutV0, ascii(1148), one, FormatExtendedUTF8, nil},
		{"v0 two signers ledger max", LayoutV0, ascii(1115), []identity.PublicKey{{1}, {2}}, FormatRestrictedASCII, nil},
		{"v0 two signers over ledger", LayoutV0, ascii(1116), []identity.PublicKey{{1}, {2}}, FormatExtendedUTF8, nil},
		{"v0 max", LayoutV0, ascii(65450), one, FormatExtendedUTF8, nil},
		{"v0 too long", LayoutV0, ascii(65451), one, 0, ErrTooLong},
		{"long not utf8", LayoutV0, append(ascii(2000), 0xff), one, 0, ErrFormat},
	}
	for _, tt := range tests {
		m, err := NewMessage(tt.layout, tt.body, tt.signers...)
		if !errors.Is(err, tt.err) {
			t.Errorf("%s: error = %v, want %v", tt.name, err, tt.err)
			continue
		}
		if err != nil {
			continue
		}
		if m.Format != tt.format {
			t.Errorf("%s: format %d, want %d", tt.name, m.Format, tt.format)
		}
		b, err := Encode(m)
		if err != nil {
			t.Errorf("%s: Encode: %v", tt.name, err)
			continue
		}
		back, err := Decode(b)
		if err != nil {
			t.Errorf("%s: Decode: %v", tt.name, err)
			continue
		}
		if !reflect.DeepEqual(back, m) {
			t.Errorf("%s: round trip changed the message", tt.name)
		}
	}
}

func mustEncode(t testing.TB, m Message) []byte {
	t.Helper()
	b, err := Encode(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecodeErrors(t *testing.T) {
	v0 := mustEncode(t, Message{Layout: LayoutV0, Signers: []identity.PublicKey{{1}, {2}}, Format: 0, Body: []byte("hello")})
	legacy := mustEncode(t, Message{Layout: LayoutLegacy, Format: 0, Body: []byte("hello")})
	const fmtAt = 49 // format byte in the v0 layout
	edit := func(b []byte, f func([]byte) []byte) []byte { return f(append([]byte(nil), b...)) }
	setLen := func(b []byte, at, n int) []byte {
		return edit(b, func(c []byte) []byte { binary.LittleEndian.PutUint16(c[at:], uint16(n)); return c })
	}
	v0LenAt := len(v0) - 5 - 2
	withBody := func(layout Layout, format Format, body []byte, signers ...identity.PublicKey) []byte {
		// Build bytes by hand: Encode would refuse these.
		var b []byte
		b = append(b, SigningDomain...)
		b = append(b, 0)
		if layout == LayoutV0 {
			b = append(b, make([]byte, 32)...)
			b = append(b, byte(format), byte(len(signers)))
			for _, s := range signers {
				b = append(b, s[:]...)
			}
		} else {
			b = append(b, byte(format))
		}
		b = binary.LittleEndian.AppendUint16(b, uint16(len(body)))
		return append(b, body...)
	}
	one := identity.PublicKey{1}

	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, ErrSigningDomain},
		{"domain prefix only", []byte(SigningDomain[:8]), ErrSigningDomain},
		{"bad domain", edit(v0, func(c []byte) []byte { c[1] = 'S'; return c }), ErrSigningDomain},
		{"no 0xff", edit(v0, func(c []byte) []byte { c[0] = 0x7f; return c }), ErrSigningDomain},
		{"domain only", []byte(SigningDomain), ErrMalformed},
		{"version 1", edit(v0, func(c []byte) []byte { c[16] = 1; return c }), ErrVersion},
		{"version 255", edit(legacy, func(c []byte) []byte { c[16] = 255; return c }), ErrVersion},
		{"v0 trailing byte", append(append([]byte(nil), v0...), 'x'), ErrMalformed},
		{"v0 missing byte", v0[:len(v0)-1], ErrMalformed},
		{"v0 length +1", setLen(v0, v0LenAt, 6), ErrMalformed},
		{"v0 length -1", setLen(v0, v0LenAt, 4), ErrMalformed},
		{"v0 zero length", withBody(LayoutV0, 0, nil, one), ErrMalformed},
		{"v0 zero signers", edit(v0, func(c []byte) []byte { c[fmtAt+1] = 0; return c }), ErrMalformed},
		{"v0 more signers than bytes", edit(v0, func(c []byte) []byte { c[fmtAt+1] = 200; return c }), ErrMalformed},
		{"v0 zero key among signers", withBody(LayoutV0, 0, []byte("hi"), one, identity.PublicKey{}), ErrMalformed},
		{"v0 format 3", edit(v0, func(c []byte) []byte { c[fmtAt] = 3; return c }), ErrFormat},
		{"v0 format 255", edit(v0, func(c []byte) []byte { c[fmtAt] = 255; return c }), ErrFormat},
		{"v0 newline in format 0", withBody(LayoutV0, 0, []byte("a\nb"), one), ErrFormat},
		{"v0 NUL in format 0", withBody(LayoutV0, 0, []byte("a\x00b"), one), ErrFormat},
		{"v0 high byte in format 0", withBody(LayoutV0, 0, []byte("caf\xc3\xa9"), one), ErrFormat},
		{"v0 bad utf8 in format 1", withBody(LayoutV0, 1, []byte{'a', 0xc3}, one), ErrFormat},
		{"v0 bad utf8 in format 2", withBody(LayoutV0, 2, []byte{0xff}, one), ErrFormat},
		{"v0 format 0 over 1232", withBody(LayoutV0, 0, bytes.Repeat([]byte{'a'}, 1148), one), ErrTooLong},
		{"v0 format 1 over 1232", withBody(LayoutV0, 1, bytes.Repeat([]byte{'a'}, 1148), one), ErrTooLong},
		{"v0 format 2 over 65535", withBody(LayoutV0, 2, bytes.Repeat([]byte{'a'}, 65451), one), ErrTooLong},
		{"legacy trailing byte", append(append([]byte(nil), legacy...), 'x'), ErrMalformed},
		{"legacy missing byte", legacy[:len(legacy)-1], ErrMalformed},
		{"legacy zero length", withBody(LayoutLegacy, 0, nil), ErrMalformed},
		{"legacy format 3", withBody(LayoutLegacy, 3, []byte("hi")), ErrFormat},
		{"legacy newline in format 0", withBody(LayoutLegacy, 0, []byte("a\nb")), ErrFormat},
		{"legacy bad utf8 in format 1", withBody(LayoutLegacy, 1, []byte{0xe2, 0x82}), ErrFormat},
		{"legacy format 0 over 1232", withBody(LayoutLegacy, 0, bytes.Repeat([]byte{'a'}, 1213)), ErrTooLong},
		{"legacy format 2 over 65535", withBody(LayoutLegacy, 2, bytes.Repeat([]byte{'a'}, 65516)), ErrTooLong},
	}
	for _, tt := range tests {
		if _, err := Decode(tt.in); !errors.Is(err, tt.want) {
			t.Errorf("%s: error = %v, want %v", tt.name, err, tt.want)
		}
	}

	// Every proper prefix of a valid message is refused, never a panic.
	for _, b := range [][]byte{v0, legacy} {
		for n := 0; n < len(b); n++ {
			if _, err := Decode(b[:n]); err == nil {
				t.Errorf("prefix of %d bytes accepted", n)
			}
		}
	}

	// Non-canonical formats are accepted (the proposal only requires the
	// body to fit its format), and keep their format.
	for _, in := range [][]byte{
		withBody(LayoutV0, 1, []byte("plain ascii"), one),
		withBody(LayoutV0, 2, []byte("plain ascii"), one),
		withBody(LayoutLegacy, 2, []byte("plain ascii")),
	} {
		m, err := Decode(in)
		if err != nil {
			t.Errorf("non-canonical format: %v", err)
			continue
		}
		if !bytes.Equal(mustEncode(t, m), in) {
			t.Error("non-canonical format does not re-encode to the same bytes")
		}
	}
}

// A message built to be valid in both layouts is refused rather than read
// one way or the other.
func TestDecodeAmbiguous(t *testing.T) {
	body := bytes.Repeat([]byte{'C'}, 65)
	signer := identity.PublicKey{}
	copy(signer[:], bytes.Repeat([]byte{'B'}, 32))
	m := Message{Layout: LayoutV0, Format: FormatLimitedUTF8, Signers: []identity.PublicKey{signer}, Body: body}
	total := 85 + len(body)
	// The application domain is what the legacy layout reads as its format
	// (1), length (total-20) and the start of a UTF-8 body.
	m.AppDomain[0] = 1
	binary.LittleEndian.PutUint16(m.AppDomain[1:], uint16(total-20))
	copy(m.AppDomain[3:], bytes.Repeat([]byte{'A'}, 29))
	b := mustEncode(t, m)
	if _, err := decodeLegacy(b); err != nil {
		t.Fatalf("the test message is not valid legacy: %v", err)
	}
	if _, err := Decode(b); !errors.Is(err, ErrAmbiguous) {
		t.Fatalf("error = %v, want ErrAmbiguous", err)
	}
}

func TestEncodeRefuses(t *testing.T) {
	for _, tt := range []struct {
		name string
		m    Message
		want error
	}{
		{"zero layout", Message{Body: []byte("x")}, ErrMalformed},
		{"legacy with domain", Message{Layout: LayoutLegacy, AppDomain: [32]byte{1}, Body: []byte("x")}, ErrMalformed},
		{"format 0 with newline", Message{Layout: LayoutLegacy, Body: []byte("a\n")}, ErrFormat},
		{"format 7", Message{Layout: LayoutLegacy, Format: 7, Body: []byte("a")}, ErrFormat},
		{"format 1 too long", Message{Layout: LayoutLegacy, Format: 1, Body: make([]byte, 2000)}, ErrTooLong},
	} {
		if _, err := Encode(tt.m); !errors.Is(err, tt.want) {
			t.Errorf("%s: error = %v, want %v", tt.name, err, tt.want)
		}
	}
}

func TestRoundTripRandom(t *testing.T) {
	rng := rand.New(rand.NewSource(2))
	alphabet := []rune("abc XYZ 019 ~!@ é€ 日本 \n\t😀")
	for i := 0; i < 500; i++ {
		var sb strings.Builder
		for n := 1 + rng.Intn(300); n > 0; n-- {
			sb.WriteRune(alphabet[rng.Intn(len(alphabet))])
		}
		layout := LayoutV0
		var signers []identity.PublicKey
		if rng.Intn(2) == 0 {
			layout = LayoutLegacy
		} else {
			for n := 1 + rng.Intn(3); n > 0; n-- {
				var k identity.PublicKey
				rng.Read(k[:])
				signers = append(signers, k)
			}
		}
		m, err := NewMessage(layout, []byte(sb.String()), signers...)
		if err != nil {
			t.Fatal(err)
		}
		if layout == LayoutV0 {
			rng.Read(m.AppDomain[:])
		}
		b := mustEncode(t, m)
		back, err := Decode(b)
		if err != nil {
			t.Fatalf("Decode(%q): %v", b, err)
		}
		if !reflect.DeepEqual(back, m) {
			t.Fatalf("round trip changed %+v to %+v", m, back)
		}
	}
}

func FuzzDecode(f *testing.F) {
	for _, v := range loadSDKVectors(f) {
		f.Add(v.Serialized)
	}
	f.Add(mustEncode(f, Message{Layout: LayoutV0, Signers: []identity.PublicKey{{1}, {2}}, Format: 2, Body: []byte("x")}))
	f.Add([]byte(SigningDomain + "\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Decode(b)
		if err != nil {
			for _, e := range []error{ErrMalformed, ErrSigningDomain, ErrVersion, ErrFormat, ErrTooLong, ErrAmbiguous} {
				if errors.Is(err, e) {
					return
				}
			}
			t.Fatalf("error of no known kind: %v", err)
		}
		// Decoding is exact: the message re-encodes to the same bytes.
		back, err := Encode(m)
		if err != nil {
			t.Fatalf("decoded message does not encode: %v", err)
		}
		if !bytes.Equal(back, b) {
			t.Fatalf("Encode(Decode(%x)) = %x", b, back)
		}
	})
}

func BenchmarkDecode(b *testing.B) {
	k := identity.PublicKey{1}
	m, _ := NewMessage(LayoutV0, []byte(DelegationText(k, k, t0)), k)
	raw := mustEncode(b, m)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := Decode(raw); err != nil {
			b.Fatal(err)
		}
	}
}
