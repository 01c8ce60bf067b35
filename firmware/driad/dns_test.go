package driad

import (
	"encoding/hex"
	"errors"
	"math"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestReverseName(t *testing.T) {
	tests := []struct{ addr, want string }{
		// Both examples are RFC 8777 §2.2's.
		{"198.51.100.12", "12.100.51.198.in-addr.arpa."},
		{"2001:db8::a", "a.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa."},
		{"::ffff:10.1.2.3", "3.2.1.10.in-addr.arpa."},
		{"fe80::1%eth0", "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.e.f.ip6.arpa."},
	}
	for _, tt := range tests {
		if got := ReverseName(netip.MustParseAddr(tt.addr)); got != tt.want {
			t.Errorf("ReverseName(%s) = %q, want %q", tt.addr, got, tt.want)
		}
	}
	if got := ReverseName(netip.Addr{}); got != "" {
		t.Errorf("ReverseName(invalid) = %q", got)
	}
}

func TestNameRoundTrip(t *testing.T) {
	for _, name := range []string{
		".",
		"example.",
		"a.b.c.example.com.",
		`we\.ird\\name.example.`,
		`\000\255x.example.`,
		strings.Repeat("a", 63) + ".example.",
		ReverseName(netip.MustParseAddr("2001:db8::a")),
	} {
		w, err := appendName(nil, name)
		if err != nil {
			t.Fatalf("appendName(%q): %v", name, err)
		}
		got, off, err := readName(w, 0, false)
		if err != nil || got != name || off != len(w) {
			t.Errorf("readName(appendName(%q)) = %q, %d, %v", name, got, off, err)
		}
	}
	// Without the trailing dot, a name is taken as absolute all the same.
	w1, _ := appendName(nil, "relay.example")
	w2, _ := appendName(nil, "relay.example.")
	if string(w1) != string(w2) {
		t.Errorf("relay.example encodes as %x, relay.example. as %x", w1, w2)
	}
}

func TestReadName(t *testing.T) {
	// A message fragment: "example." at 0, "www" + pointer to 0 at 9.
	msg, _ := hex.DecodeString("076578616d706c6500" + "03777777c000")
	tests := []struct {
		name    string
		msg     []byte
		off     int
		ptr     bool
		want    string
		wantOff int
		err     bool
	}{
		{"plain", msg, 0, false, "example.", 9, false},
		{"pointer", msg, 9, true, "www.example.", 15, false},
		{"pointer refused", msg, 9, false, "", 0, true},
		{"pointer to itself", []byte{0xc0, 0x00}, 0, true, "", 0, true},
		{"forward pointer", []byte{0xc0, 0x02, 0x00}, 0, true, "", 0, true},
		{"pointer loop", []byte{0x01, 'a', 0xc0, 0x00}, 2, true, "", 0, true},
		{"truncated pointer", []byte{0xc0}, 0, true, "", 0, true},
		{"no terminator", []byte{0x01, 'a'}, 0, false, "", 0, true},
		{"label type 0x80", []byte{0x80, 0x00}, 0, false, "", 0, true},
		{"empty input", nil, 0, false, "", 0, true},
	}
	for _, tt := range tests {
		got, off, err := readName(tt.msg, tt.off, tt.ptr)
		if (err != nil) != tt.err || got != tt.want || off != tt.wantOff {
			t.Errorf("%s: readName = %q, %d, %v", tt.name, got, off, err)
		}
		if err != nil && !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: error %v does not wrap ErrMalformed", tt.name, err)
		}
	}
	// 128 one-byte labels are 256 bytes of wire name: one too many.
	long := strings.Repeat("\x01a", 127) + "\x00"
	if _, _, err := readName([]byte(long), 0, false); err != nil {
		t.Errorf("255-byte name refused: %v", err)
	}
	long = strings.Repeat("\x01a", 128) + "\x00"
	if _, _, err := readName([]byte(long), 0, false); !errors.Is(err, ErrMalformed) {
		t.Errorf("256-byte name: %v", err)
	}
	// Pointers cannot stretch a name past 255 bytes either.
	chain := []byte(strings.Repeat("\x01a", 100) + "\x00")
	chain = append(chain, []byte(strings.Repeat("\x01b", 30))...)
	chain = append(chain, 0xc0, 0x00)
	if _, _, err := readName(chain, 201, true); !errors.Is(err, ErrMalformed) {
		t.Errorf("pointer to a long name: %v", err)
	}
}

func TestAppendNameRefuses(t *testing.T) {
	for _, name := range []string{
		"a..b.",
		".a.",
		`a\`,
		`a\25`,
		`a\256.`,
		strings.Repeat("a", 64) + ".",
		strings.Repeat("abcdefg.", 32) + "x.",
	} {
		if w, err := appendName(nil, name); !errors.Is(err, ErrMalformed) || len(w) != 0 {
			t.Errorf("appendName(%q) = %x, %v; want ErrMalformed", name, w, err)
		}
	}
}

func TestNames(t *testing.T) {
	if !equalName("Relay.EXAMPLE.", "relay.example") {
		t.Error("names differing in case and trailing dot are equal")
	}
	if equalName(`a\.b.`, "a.b.") {
		t.Error(`a\.b. (one label) equals a.b. (two labels)`)
	}
	tests := []struct{ name, owner, target, want string }{
		{"12.100.51.198.in-addr.arpa.", "100.51.198.in-addr.arpa.", "relays.example.", "12.relays.example."},
		{"a.b.Example.", "example.", "x.y.", "a.b.x.y."},
		{"example.", "example.", "x.", ""},                                                 // DNAME does not apply to its owner
		{"ab.example.", "b.example.", "x.", ""},                                            // not on a label boundary
		{"a.other.", "example.", "x.", ""},                                                 // not below the owner
		{`a\.example.`, "example.", "x.", ""},                                              // one label, not below
		{"a.example.", "example.", "a..bad.", ""},                                          // bad target
		{strings.Repeat("a.", 120) + "example.", "example.", strings.Repeat("b.", 10), ""}, // too long
	}
	for _, tt := range tests {
		got, ok := dnameTarget(tt.name, tt.owner, tt.target)
		if got != tt.want || ok != (tt.want != "") {
			t.Errorf("dnameTarget(%q, %q, %q) = %q, %v; want %q", tt.name, tt.owner, tt.target, got, ok, tt.want)
		}
	}
}

func TestParseResponseRefuses(t *testing.T) {
	q, err := appendQuery(nil, 0x1234, "example.", TypeAMTRELAY)
	if err != nil {
		t.Fatal(err)
	}
	resp := append([]byte(nil), q...)
	resp[2] |= 0x80 // QR
	if _, err := parseResponse(resp); err != nil {
		t.Fatalf("a query turned response does not parse: %v", err)
	}
	tests := map[string]func([]byte) []byte{
		"short":          func(b []byte) []byte { return b[:11] },
		"query":          func(b []byte) []byte { b[2] &^= 0x80; return b },
		"opcode":         func(b []byte) []byte { b[2] |= 0x08; return b },
		"two questions":  func(b []byte) []byte { b[5] = 2; return b },
		"no question":    func(b []byte) []byte { b[5] = 0; return b },
		"question cut":   func(b []byte) []byte { return b[:len(b)-13] },
		"answer missing": func(b []byte) []byte { b[7] = 1; return b[:len(b)-11] },
		"answer past end": func(b []byte) []byte {
			b[7] = 1
			b = b[:len(b)-11]
			return append(b, 0, 1, 4, 0, 1, 0, 0, 0, 0, 0, 9, 1, 2)
		},
		"many answers": func(b []byte) []byte { b[6] = 0xff; return b },
	}
	for name, mutate := range tests {
		b := mutate(append([]byte(nil), resp...))
		if r, err := parseResponse(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: parseResponse = %+v, %v; want ErrMalformed", name, r, err)
		}
	}
}

func TestParseResolvConf(t *testing.T) {
	rc, err := parseResolvConf(strings.NewReader(`
# OpenWrt's, more or less
search lan
nameserver 127.0.0.1
nameserver ::1 ; trailing comment
nameserver fe80::1%br-lan
nameserver not-an-address
options ndots:2 timeout:3 attempts:4 rotate
`))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"127.0.0.1:53", "[::1]:53", "[fe80::1%br-lan]:53"}
	if len(rc.servers) != len(want) {
		t.Fatalf("servers = %v, want %v", rc.servers, want)
	}
	for i, s := range rc.servers {
		if s.String() != want[i] {
			t.Errorf("server %d = %v, want %s", i, s, want[i])
		}
	}
	if rc.timeout != 3*time.Second || rc.attempts != 4 {
		t.Errorf("timeout %v attempts %d, want 3s and 4", rc.timeout, rc.attempts)
	}
	r, err := New(Config{ResolvConf: "/nonexistent/resolv.conf"})
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Nameservers(); len(got) != 2 || got[0].String() != "127.0.0.1:53" {
		t.Errorf("no resolv.conf: nameservers %v, want localhost", got)
	}
}

// TestOrder checks precedence order and that equal precedences come out in
// every order about equally often (a χ² test over the 6 permutations of 3
// relays; the 0.1% critical value for 5 degrees of freedom is 20.5).
func TestOrder(t *testing.T) {
	a := Relay{Precedence: 10, Type: RelayIPv4, Addr: netip.MustParseAddr("192.0.2.1")}
	b := Relay{Precedence: 10, Type: RelayIPv4, Addr: netip.MustParseAddr("192.0.2.2")}
	c := Relay{Precedence: 10, Type: RelayIPv4, Addr: netip.MustParseAddr("192.0.2.3")}
	first := Relay{Precedence: 1, Type: RelayIPv6, Addr: netip.MustParseAddr("2001:db8::1")}
	last := Relay{Precedence: 200, Type: RelayName, Name: "x.example."}
	const n = 6000
	counts := map[string]int{}
	for i := 0; i < n; i++ {
		rs := []Relay{last, a, b, first, c}
		Order(rs)
		if rs[0] != first || rs[4] != last {
			t.Fatalf("order %v: precedence not honoured", rs)
		}
		counts[rs[1].Addr.String()+rs[2].Addr.String()+rs[3].Addr.String()]++
	}
	if len(counts) != 6 {
		t.Fatalf("saw %d of the 6 orders of equal-precedence relays: %v", len(counts), counts)
	}
	var chi2 float64
	for _, c := range counts {
		d := float64(c) - n/6.0
		chi2 += d * d / (n / 6.0)
	}
	if chi2 > 20.5 || math.IsNaN(chi2) {
		t.Errorf("χ² = %.1f over %v: equal precedences are not shuffled uniformly", chi2, counts)
	}
}

func TestAttemptTimeout(t *testing.T) {
	r, err := New(Config{Nameservers: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:53")}, Timeout: time.Second, MaxTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	for n := 0; n < 6; n++ {
		hi := min(time.Second<<n, 5*time.Second)
		var sawHigh bool
		for i := 0; i < 200; i++ {
			d := r.attemptTimeout(n)
			if d < time.Second || d > hi {
				t.Fatalf("attempt %d: %v outside [1s, %v]", n, d, hi)
			}
			sawHigh = sawHigh || d > time.Second+(hi-time.Second)/2
		}
		if n > 0 && !sawHigh {
			t.Errorf("attempt %d: never waited in the upper half of [1s, %v]", n, hi)
		}
	}
}
