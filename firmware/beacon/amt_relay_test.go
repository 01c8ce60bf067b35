package beacon

import (
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
)

func TestParseRelayTarget(t *testing.T) {
	tests := []struct {
		in   string
		addr string // want an address
		host string // or a name
		port uint16
		err  string // or an error containing this
	}{
		{in: "192.0.2.1", addr: "192.0.2.1:2268"},
		{in: "192.0.2.1:3000", addr: "192.0.2.1:3000"},
		{in: "2001:db8::1", addr: "[2001:db8::1]:2268"},
		{in: "[2001:db8::1]", addr: "[2001:db8::1]:2268"},
		{in: "[2001:db8::1]:3000", addr: "[2001:db8::1]:3000"},
		{in: "::ffff:192.0.2.1", addr: "192.0.2.1:2268"},
		{in: "amt-relay.example.net", host: "amt-relay.example.net", port: 2268},
		{in: "amt-relay.example.net.", host: "amt-relay.example.net.", port: 2268},
		{in: "relay:2269", host: "relay", port: 2269},
		{in: "", err: "empty"},
		{in: "relay:", err: "port"},
		{in: "relay:0", err: "port"},
		{in: "relay:65536", err: "port"},
		{in: "relay:22:68", err: "port"},
		{in: "[relay]:2268", err: "IPv6"},
		{in: "[192.0.2.1]", err: "IPv6"},
		{in: "[2001:db8::1", err: "bracket"},
		{in: "[2001:db8::1]x", err: "junk"},
		{in: "1.2.3", err: "neither"},
		{in: "-relay.example", err: "not a host name"},
		{in: "relay..example", err: "not a host name"},
		{in: "relay_1.example", err: "not a host name"},
		{in: "http://relay.example", err: "port"},
		{in: "relay example", err: "not a host name"},
		{in: strings.Repeat("a", 64) + ".example", err: "not a host name"},
		{in: "0.0.0.0", err: "not a unicast"},
		{in: "232.1.1.1:2268", err: "not a unicast"},
		{in: "fe80::1%eth0", err: "not a unicast"},
	}
	for _, tt := range tests {
		got, err := parseRelayTarget(tt.in)
		switch {
		case tt.err != "":
			if err == nil || !strings.Contains(err.Error(), tt.err) || !strings.Contains(err.Error(), "want HOST") && !strings.Contains(err.Error(), "unicast") {
				t.Errorf("parseRelayTarget(%q) = %+v, %v; want an error about %q", tt.in, got, err, tt.err)
			}
		case err != nil:
			t.Errorf("parseRelayTarget(%q): %v", tt.in, err)
		case tt.addr != "" && got.addr != netip.MustParseAddrPort(tt.addr):
			t.Errorf("parseRelayTarget(%q) = %+v, want address %s", tt.in, got, tt.addr)
		case tt.host != "" && (got.host != tt.host || got.port != tt.port || got.addr.IsValid()):
			t.Errorf("parseRelayTarget(%q) = %+v, want host %s port %d", tt.in, got, tt.host, tt.port)
		}
	}
	// A join's relay= is used as given: a name there is refused, clearly.
	if _, err := ParseChannelSpec("192.0.2.10@232.1.1.1 relay=amt-relay.example.net"); err == nil || !strings.Contains(err.Error(), "--amt-relay") {
		t.Errorf("relay=NAME in a join: %v", err)
	}
}

// TestGatewayRelayName: the relay of the shipped UCI example, a host name,
// starts the gateway (it used to stop the beacon with "want ADDR or
// ADDR:PORT"); nothing is resolved until a channel is joined. Junk is
// refused with an error naming the flag.
func TestGatewayRelayName(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, relay := range []string{"amt-relay.example.net", "amt-relay.example.net:2269", "192.0.2.1"} {
		b := &Beacon{opts: Options{AMTRelay: relay, AMTDRIAD: true}, log: log}
		if _, err := b.newGateway(); err != nil {
			t.Errorf("--amt-relay %s: %v", relay, err)
		}
	}
	b := &Beacon{opts: Options{AMTRelay: "amt relay!"}, log: log}
	if _, err := b.newGateway(); err == nil || !strings.HasPrefix(err.Error(), "--amt-relay: ") {
		t.Errorf("--amt-relay junk: %v", err)
	}
}

// FuzzParseChannelSpec: join specs arrive from castd's commands and the
// local API. Whatever the input, parsing ends in a usable spec or an error,
// and a relay, given, is a unicast address with a port.
func FuzzParseChannelSpec(f *testing.F) {
	for _, s := range []string{
		"192.0.2.10@232.1.1.1",
		"192.0.2.10@232.1.1.1 relay=198.51.100.1 reemit",
		"2001:db8::10@ff3e::8000:1 relay=[2001:db8::1]:3000",
		"192.0.2.10@232.1.1.1 relay=amt-relay.example.net",
		"192.0.2.10@232.1.1.1 relay=[::1",
		"192.0.2.10@224.0.0.1",
		"@",
		"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		spec, err := ParseChannelSpec(s)
		if err != nil {
			return
		}
		if !spec.Channel.Source.IsValid() || !spec.Channel.Group.IsMulticast() {
			t.Fatalf("%q: accepted channel %v", s, spec.Channel)
		}
		if r := spec.Relay; r.IsValid() && (r.Port() == 0 || r.Addr().IsUnspecified() || r.Addr().IsMulticast()) {
			t.Fatalf("%q: accepted relay %v", s, r)
		}
	})
}

// FuzzParseRelayTarget: --amt-relay comes from a config file. An accepted
// relay is an address or a host name, never both, never neither.
func FuzzParseRelayTarget(f *testing.F) {
	for _, s := range []string{"amt-relay.example.net", "relay:2269", "[2001:db8::1]:3000", "192.0.2.1", "1.2.3", "-x", "a..b", "[", "x:"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := parseRelayTarget(s)
		if err != nil {
			return
		}
		if r.addr.IsValid() == (r.host != "") || r.port == 0 {
			t.Fatalf("%q: %+v", s, r)
		}
		if r.host != "" && checkHostName(r.host) != nil {
			t.Fatalf("%q: accepted host %q", s, r.host)
		}
	})
}
