package ctrlmsg

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/blockcast/beacon/shared/amt"
	"github.com/blockcast/beacon/shared/protocol"
)

func TestParseChannelSpec(t *testing.T) {
	tests := []struct {
		in      string
		src     string
		grp     string
		relay   string
		reemit  bool
		wantErr string
	}{
		{in: "198.51.100.1@232.1.1.1", src: "198.51.100.1", grp: "232.1.1.1"},
		{in: " 198.51.100.1@232.1.1.1  reemit ", src: "198.51.100.1", grp: "232.1.1.1", reemit: true},
		{in: "198.51.100.1@232.1.1.1 relay=203.0.113.5", src: "198.51.100.1", grp: "232.1.1.1", relay: "203.0.113.5:2268"},
		{in: "2001:db8::1@ff3e::8000:1 relay=[2001:db8::2]:4000", src: "2001:db8::1", grp: "ff3e::8000:1", relay: "[2001:db8::2]:4000"},
		{in: "", wantErr: "empty"},
		{in: "198.51.100.1", wantErr: "SOURCE@GROUP"},
		{in: "x@232.1.1.1", wantErr: "source"},
		{in: "198.51.100.1@239.1.1.1", wantErr: "not a source-specific"},
		{in: "198.51.100.1@232.1.1.1 loud", wantErr: "unknown option"},
		{in: "198.51.100.1@232.1.1.1 relay=nowhere", wantErr: "relay"},
	}
	for _, tc := range tests {
		spec, err := ParseChannelSpec(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%q: err %v, want %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		if spec.Channel.Source != netip.MustParseAddr(tc.src) || spec.Channel.Group != netip.MustParseAddr(tc.grp) || spec.Reemit != tc.reemit {
			t.Errorf("%q: got %+v", tc.in, spec)
		}
		if (tc.relay == "") != !spec.AMTRelay.IsValid() || (tc.relay != "" && spec.AMTRelay.String() != tc.relay) {
			t.Errorf("%q: relay %v, want %q", tc.in, spec.AMTRelay, tc.relay)
		}
	}
}

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
		got, err := ParseAMTRelayTarget(tt.in)
		switch {
		case tt.err != "":
			if err == nil || !strings.Contains(err.Error(), tt.err) || !strings.Contains(err.Error(), "want HOST") && !strings.Contains(err.Error(), "unicast") {
				t.Errorf("ParseAMTRelayTarget(%q) = %+v, %v; want an error about %q", tt.in, got, err, tt.err)
			}
		case err != nil:
			t.Errorf("ParseAMTRelayTarget(%q): %v", tt.in, err)
		case tt.addr != "" && got.Addr != netip.MustParseAddrPort(tt.addr):
			t.Errorf("ParseAMTRelayTarget(%q) = %+v, want address %s", tt.in, got, tt.addr)
		case tt.host != "" && (got.Host != tt.host || got.Port != tt.port || got.Addr.IsValid()):
			t.Errorf("ParseAMTRelayTarget(%q) = %+v, want host %s port %d", tt.in, got, tt.host, tt.port)
		}
	}
	// A join's relay= is used as given: a name there is refused, clearly.
	if _, err := ParseChannelSpec("192.0.2.10@232.1.1.1 relay=amt-relay.example.net"); err == nil || !strings.Contains(err.Error(), "--amt-relay") {
		t.Errorf("relay=NAME in a join: %v", err)
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
		if r := spec.AMTRelay; r.IsValid() && (r.Port() == 0 || r.Addr().IsUnspecified() || r.Addr().IsMulticast()) {
			t.Fatalf("%q: accepted relay %v", s, r)
		}
	})
}

// FuzzParseAMTRelayTarget: --amt-relay comes from a config file. An accepted
// relay is an address or a host name, never both, never neither.
func FuzzParseAMTRelayTarget(f *testing.F) {
	for _, s := range []string{"amt-relay.example.net", "relay:2269", "[2001:db8::1]:3000", "192.0.2.1", "1.2.3", "-x", "a..b", "[", "x:"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseAMTRelayTarget(s)
		if err != nil {
			return
		}
		if r.Addr.IsValid() == (r.Host != "") || r.Port == 0 {
			t.Fatalf("%q: %+v", s, r)
		}
		if r.Host != "" && CheckHostName(r.Host) != nil {
			t.Fatalf("%q: accepted host %q", s, r.Host)
		}
	})
}

func TestCheckArg(t *testing.T) {
	for _, tc := range []struct {
		op, arg string
		ok      bool
	}{
		{OpPurge, "/a/b.mp4", true},
		{OpPurge, "/a/*", true},
		{OpPurge, "/*", true},
		{OpPurge, "*", false},
		{OpPurge, "/a/..*", true}, // a prefix of "/a/..x", which is a name
		{OpPurge, "/a/../*", false},
		{OpPurge, "a", false},
		{OpPrefetch, "/a?b=1", true},
		{OpPrefetch, "/a/*", true}, // '*' is a character of a name here
		{OpPrefetch, "", false},
		{OpPrefetch, "/a//b", false},
		{OpReregister, "", true},
		{OpReregister, "anything", true},
		{OpAMTJoin, "198.51.100.1@232.1.1.1 relay=192.0.2.1:3000 reemit", true},
		{OpAMTJoin, "198.51.100.1@232.1.1.1 relay=amt.example", false},
		{OpAMTLeave, "2001:db8::1@ff3e::1", true},
		{OpAMTLeave, "2001:db8::1@ff02::1", false},
		{OpAMTLeave, "fe80::1%eth0@ff3e::1", false},
		{"reboot", "", false},
	} {
		err := CheckArg(tc.op, tc.arg)
		if (err == nil) != tc.ok {
			t.Errorf("CheckArg(%s, %q) = %v, want ok %v", tc.op, tc.arg, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrBadArg) && !errors.Is(err, ErrUnknownOp) {
			t.Errorf("CheckArg(%s, %q): %v wraps neither ErrBadArg nor ErrUnknownOp", tc.op, tc.arg, err)
		}
	}
}

// FuzzCheckArg: arguments come from castd's operator API and from castd
// over MQTT. An accepted content path is one the cache takes as a key.
func FuzzCheckArg(f *testing.F) {
	for _, s := range [][2]string{{OpPurge, "/a/*"}, {OpPurge, "/a/../*"}, {OpPrefetch, "/x"}, {OpAMTJoin, "1.2.3.4@232.1.1.1 reemit"}, {OpAMTLeave, "@"}, {"x", ""}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, op, arg string) {
		if CheckArg(op, arg) != nil {
			return
		}
		switch op {
		case OpPurge:
			key, prefix, err := ParsePurgeArg(arg)
			if err != nil || !prefix && key != arg || prefix && key+"*" != arg {
				t.Fatalf("purge %q: %q %v %v", arg, key, prefix, err)
			}
		case OpPrefetch:
			if _, err := protocol.CleanContentPath(arg); err != nil {
				t.Fatalf("prefetch %q accepted: %v", arg, err)
			}
		case OpAMTJoin, OpAMTLeave:
			spec, _ := ParseChannelSpec(arg)
			if !amt.IsSSM(spec.Channel.Group) || spec.Channel.Source.IsMulticast() || spec.Channel.Source.Is4() != spec.Channel.Group.Is4() {
				t.Fatalf("%s %q: accepted %v", op, arg, spec.Channel)
			}
		case OpReregister:
		default:
			t.Fatalf("unknown op %q accepted", op)
		}
	})
}
