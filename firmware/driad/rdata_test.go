package driad

import (
	"bytes"
	"encoding/hex"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/blockcast/beacon/shared/goldenhex"
)

// rdataFixtures are AMTRELAY records covering every relay type and both
// values of the D bit; TestGolden pins their wire form.
var rdataFixtures = []struct {
	name string
	r    Relay
}{
	{"rdata_none", Relay{Precedence: 0, Type: RelayNone}},
	{"rdata_ipv4", Relay{Precedence: 10, Type: RelayIPv4, Addr: netip.MustParseAddr("203.0.113.15")}},
	{"rdata_ipv4_d", Relay{Precedence: 10, DiscoveryOptional: true, Type: RelayIPv4, Addr: netip.MustParseAddr("198.51.100.1")}},
	{"rdata_ipv6", Relay{Precedence: 10, Type: RelayIPv6, Addr: netip.MustParseAddr("2001:db8::15")}},
	{"rdata_name_d", Relay{Precedence: 128, DiscoveryOptional: true, Type: RelayName, Name: "amtrelays.example.com."}},
	{"rdata_name", Relay{Precedence: 255, Type: RelayName, Name: "relay-1.example."}},
}

// TestRDATAByHand checks the encoder against bytes written from RFC 8777
// §4.2 by hand, so the goldens cannot drift with the code.
func TestRDATAByHand(t *testing.T) {
	tests := []struct {
		r   Relay
		hex string
	}{
		// precedence 10, D=0 type 1, 203.0.113.15 = cb 00 71 0f
		{Relay{Precedence: 10, Type: RelayIPv4, Addr: netip.MustParseAddr("203.0.113.15")}, "0a01cb00710f"},
		// precedence 10, D=0 type 2, 2001:db8::15 (0x15, not the RFC
		// example's 0x0f, which is 2001:db8::f)
		{Relay{Precedence: 10, Type: RelayIPv6, Addr: netip.MustParseAddr("2001:db8::15")}, "0a0220010db8000000000000000000000015"},
		// precedence 128, D=1 type 3 (0x83), the RFC's name with its
		// terminating root label (the RFC text omits it: erratum 6155)
		{Relay{Precedence: 128, DiscoveryOptional: true, Type: RelayName, Name: "amtrelays.example.com."},
			"8083" + "09616d7472656c617973076578616d706c6503636f6d00"},
		{Relay{Precedence: 1, Type: RelayNone}, "0100"},
	}
	for _, tt := range tests {
		got, err := tt.r.AppendRDATA(nil)
		if err != nil {
			t.Fatalf("%v: %v", tt.r, err)
		}
		if h := hex.EncodeToString(got); h != tt.hex {
			t.Errorf("%v: %s, want %s", tt.r, h, tt.hex)
		}
		back, err := ParseRDATA(got)
		if err != nil || back != tt.r {
			t.Errorf("ParseRDATA(%s) = %v, %v; want %v", tt.hex, back, err, tt.r)
		}
	}
}

func TestGolden(t *testing.T) {
	for _, fx := range rdataFixtures {
		t.Run(fx.name, func(t *testing.T) {
			got, err := fx.r.AppendRDATA(nil)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", fx.name+".hex")
			if *goldenhex.Update {
				if err := os.WriteFile(path, goldenhex.Format("AMTRELAY RDATA "+fx.r.String(), got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			raw, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create)", err)
			}
			want, err := goldenhex.Parse(raw)
			if err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("encoding differs from %s:\ngot  %x\nwant %x", path, got, want)
			}
			back, err := ParseRDATA(want)
			if err != nil {
				t.Fatal(err)
			}
			if back != fx.r {
				t.Errorf("ParseRDATA(golden) = %+v, want %+v", back, fx.r)
			}
		})
	}
}

func TestParseRDATARefuses(t *testing.T) {
	tests := []struct {
		name string
		hex  string
		want error
	}{
		{"empty", "", ErrMalformed},
		{"one byte", "0a", ErrMalformed},
		{"type 0 with data", "0a0001", ErrMalformed},
		{"type 1 short", "0a01cb0071", ErrMalformed},
		{"type 1 long", "0a01cb00710f00", ErrMalformed},
		{"type 2 short", "0a0220010db8", ErrMalformed},
		{"type 3 without root label (RFC 8777 erratum)", "800309616d7472656c617973076578616d706c6503636f6d", ErrMalformed},
		{"type 3 trailing bytes", "8003037777770000", ErrMalformed},
		{"type 3 root name", "800300", ErrMalformed},
		{"type 3 compressed", "8003c000", ErrMalformed},
		{"type 3 label past end", "8003057777770000", ErrMalformed},
		{"type 3 extended label", "80034100", ErrMalformed},
		{"type 4", "0a04", ErrUnknownType},
		{"type 127 with D", "0aff01020304", ErrUnknownType},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := hex.DecodeString(tt.hex)
			if err != nil {
				t.Fatal(err)
			}
			r, err := ParseRDATA(b)
			if !errors.Is(err, tt.want) {
				t.Fatalf("ParseRDATA(%s) = %+v, %v; want %v", tt.hex, r, err, tt.want)
			}
		})
	}
}

func TestAppendRDATARefuses(t *testing.T) {
	for _, r := range []Relay{
		{Type: RelayIPv4, Addr: netip.MustParseAddr("2001:db8::1")},
		{Type: RelayIPv4},
		{Type: RelayIPv6, Addr: netip.MustParseAddr("192.0.2.1")},
		{Type: RelayName},
		{Type: RelayName, Name: "."},
		{Type: RelayName, Name: "a..b."},
		{Type: RelayName, Name: strings.Repeat("a", 64) + ".example."},
		{Type: RelayName, Name: strings.Repeat("abcdefghi.", 26)},
		{Type: 9},
		{Type: 200},
	} {
		if b, err := r.AppendRDATA([]byte{0xee}); err == nil || !bytes.Equal(b, []byte{0xee}) {
			t.Errorf("AppendRDATA(%+v) = %x, %v; want an error and dst unchanged", r, b, err)
		}
	}
}

// A type 2 record holding an IPv4-mapped address (found by FuzzParseRDATA)
// is a 16-octet IPv6 address as RFC 8777 says: parsing keeps it as
// published and encoding writes it back unchanged.
func TestRDATAMappedIPv6(t *testing.T) {
	in := []byte{0x30, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0x30, 0x30, 0x30, 0x30}
	r, err := ParseRDATA(in)
	if err != nil {
		t.Fatal(err)
	}
	if r.Type != RelayIPv6 || r.Addr != netip.MustParseAddr("::ffff:48.48.48.48") {
		t.Fatalf("parsed %+v", r)
	}
	out, err := r.AppendRDATA(nil)
	if err != nil {
		t.Fatalf("encoding what was parsed: %v", err)
	}
	if !bytes.Equal(out, in) {
		t.Fatalf("re-encoded %x, want %x", out, in)
	}
	// An IPv4 address is still not a type 2 relay.
	if _, err := (Relay{Type: RelayIPv6, Addr: netip.MustParseAddr("48.48.48.48")}).AppendRDATA(nil); !errors.Is(err, ErrMalformed) {
		t.Fatalf("IPv4 address as type 2: %v", err)
	}
}
