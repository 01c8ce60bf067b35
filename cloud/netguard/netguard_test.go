package netguard

import (
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestCheck(t *testing.T) {
	tests := []struct {
		addr string
		want Kind // "" = allowed
	}{
		{"8.8.8.8", ""},
		{"1.1.1.1", ""},
		{"2606:4700:4700::1111", ""},
		{"::ffff:8.8.8.8", ""},
		{"64:ff9b::808:808", ""}, // NAT64 of 8.8.8.8
		{"2002:808:808::1", ""},  // 6to4 of 8.8.8.8
		{"0.0.0.0", Unspecified},
		{"0.1.2.3", Unspecified},
		{"::", Unspecified},
		{"127.0.0.1", Loopback},
		{"127.255.0.9", Loopback},
		{"::1", Loopback},
		{"10.1.2.3", Private},
		{"172.16.0.1", Private},
		{"172.31.255.255", Private},
		{"192.168.1.1", Private},
		{"fc00::1", Private},
		{"fd12:3456::1", Private},
		{"fec0::1", Private},
		{"100.64.0.1", SharedCGNAT},
		{"100.127.255.254", SharedCGNAT},
		{"169.254.169.254", LinkLocal}, // cloud metadata service
		{"fe80::1", LinkLocal},
		{"fe80::1%eth0", LinkLocal},
		{"224.0.0.1", Multicast},
		{"239.1.1.1", Multicast},
		{"ff02::1", Multicast},
		{"255.255.255.255", Broadcast},
		{"240.0.0.1", Reserved},
		{"198.18.0.1", Reserved},
		{"2001:db8::1", Reserved},
		{"64:ff9b:1::a00:1", Reserved},
		// Embedded IPv4 forms of forbidden addresses.
		{"::ffff:127.0.0.1", Loopback},
		{"::ffff:10.0.0.1", Private},
		{"::ffff:169.254.169.254", LinkLocal},
		{"::ffff:0:127.0.0.1", Loopback}, // IPv4-translated
		{"::127.0.0.1", Loopback},        // IPv4-compatible
		{"64:ff9b::7f00:1", Loopback},    // NAT64
		{"64:ff9b::a9fe:a9fe", LinkLocal},
		{"2002:7f00:1::1", Loopback},              // 6to4
		{"2001:0:7f00:1::1", Loopback},            // Teredo server
		{"2001:0:808:808:0:0:f5ff:fffe", Private}, // Teredo client 10.0.0.1, inverted
		{"2001:0:808:808:0:0:f7f7:f7f7", ""},      // Teredo client 8.8.8.8
		{"::ffff:100.64.1.1", SharedCGNAT},
		{"::ffff:224.0.0.1", Multicast},
	}
	for _, tc := range tests {
		a := netip.MustParseAddr(tc.addr)
		err := Check(a)
		if tc.want == "" {
			if err != nil {
				t.Errorf("%s refused: %v", tc.addr, err)
			}
			continue
		}
		var e *Error
		if !errors.As(err, &e) || e.Kind != tc.want || !errors.Is(err, ErrForbidden) {
			t.Errorf("%s: got %v, want a %s refusal", tc.addr, err, tc.want)
		}
	}
	if Check(netip.Addr{}) == nil {
		t.Error("the zero address allowed")
	}
}

func TestCheckHost(t *testing.T) {
	for host, bad := range map[string]bool{
		"relay.example.net":    false,
		"8.8.8.8":              false,
		"[2606:4700::1]":       false,
		"localhost":            false, // judged when dialed
		"127.0.0.1":            true,
		"[::1]":                true,
		"[::ffff:127.0.0.1]":   true,
		"[fe80::1%eth0]":       true,
		"10.0.0.1":             true,
		"notlocalhost.example": false,
	} {
		if err := CheckHost(host); (err != nil) != bad {
			t.Errorf("CheckHost(%q) = %v, want refused %v", host, err, bad)
		}
	}
}

// TestControlRefusesResolvedLoopback dials through Control: a name that
// resolves to loopback is refused on the resolved address, and the
// listener never sees a connection.
func TestControlRefusesResolvedLoopback(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { hits.Add(1) }))
	defer srv.Close()
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	d := &net.Dialer{Timeout: time.Second, Control: Control}
	for _, host := range []string{"localhost", "127.0.0.1", "::ffff:127.0.0.1"} {
		c, err := d.Dial("tcp", net.JoinHostPort(host, port))
		if err == nil {
			c.Close()
			t.Errorf("%s: dialed", host)
			continue
		}
		if !errors.Is(err, ErrForbidden) {
			t.Errorf("%s: %v, want ErrForbidden", host, err)
		}
		if !strings.Contains(err.Error(), "loopback") {
			t.Errorf("%s: error %q does not say why", host, err)
		}
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("listener got %d requests", n)
	}
}

// FuzzCheckHost: no input panics, and an address's embedded forms are
// judged as the address.
func FuzzCheckHost(f *testing.F) {
	for _, s := range []string{"localhost", "127.0.0.1", "[::ffff:127.0.0.1]", "[fe80::1%eth0]", "relay.example",
		"8.8.8.8", "[2002:7f00:1::1]", "[", "]", "[]", "0", "2130706433", "[::]"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, host string) {
		err := CheckHost(host)
		if err != nil && !errors.Is(err, ErrForbidden) {
			t.Fatalf("%q: %v does not wrap ErrForbidden", host, err)
		}
		a, perr := netip.ParseAddr(strings.Trim(host, "[]"))
		if perr != nil {
			return
		}
		if a.Is4() {
			b := a.As4()
			bad := Check(a) != nil
			for _, form := range []netip.Addr{
				netip.AddrFrom16([16]byte{10: 0xff, 11: 0xff, 12: b[0], 13: b[1], 14: b[2], 15: b[3]}),
				netip.AddrFrom16([16]byte{8: 0xff, 9: 0xff, 12: b[0], 13: b[1], 14: b[2], 15: b[3]}),
				netip.AddrFrom16([16]byte{0: 0, 1: 0x64, 2: 0xff, 3: 0x9b, 12: b[0], 13: b[1], 14: b[2], 15: b[3]}),
				netip.AddrFrom16([16]byte{0: 0x20, 1: 0x02, 2: b[0], 3: b[1], 4: b[2], 5: b[3], 15: 1}),
			} {
				if (Check(form) != nil) != bad {
					t.Fatalf("%s refused=%v but %s refused=%v", a, bad, form, !bad)
				}
			}
		}
	})
}
