package driad

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// The tests in this file use github.com/miekg/dns (test-only: the beacon
// does not link it) as an independent implementation of the AMTRELAY type
// and of DNS messages.
//
// miekg/dns v1.1.66 keeps the D bit in AMTRELAY.GatewayType (0x80), but its
// pack and unpack switch on the whole byte, so with D=1 it writes and reads
// no relay field at all. The cross-checks therefore use D=0 for types 1–3;
// D=1 is covered by the hand-written vectors in rdata_test.go.

func miekgRR(t *testing.T, owner string, r Relay) *dns.AMTRELAY {
	t.Helper()
	rr := &dns.AMTRELAY{
		Hdr:         dns.RR_Header{Name: owner, Rrtype: dns.TypeAMTRELAY, Class: dns.ClassINET, Ttl: 60},
		Precedence:  r.Precedence,
		GatewayType: uint8(r.Type),
	}
	if r.DiscoveryOptional {
		rr.GatewayType |= 0x80
	}
	switch r.Type {
	case RelayIPv4, RelayIPv6:
		rr.GatewayAddr = net.IP(r.Addr.AsSlice())
	case RelayName:
		rr.GatewayHost = r.Name
	}
	return rr
}

var crossCheck = []Relay{
	{Precedence: 0, Type: RelayNone},
	{Precedence: 7, DiscoveryOptional: true, Type: RelayNone},
	{Precedence: 10, Type: RelayIPv4, Addr: netip.MustParseAddr("203.0.113.15")},
	{Precedence: 20, Type: RelayIPv6, Addr: netip.MustParseAddr("2001:db8::15")},
	{Precedence: 255, Type: RelayName, Name: "amtrelays.example.com."},
}

// TestMiekgEncodes packs AMTRELAY records with miekg/dns and decodes the
// message with this package.
func TestMiekgEncodes(t *testing.T) {
	owner := ReverseName(netip.MustParseAddr("198.51.100.12"))
	m := new(dns.Msg)
	m.SetQuestion(owner, dns.TypeAMTRELAY)
	m.Response = true
	m.Compress = true
	for _, r := range crossCheck {
		m.Answer = append(m.Answer, miekgRR(t, owner, r))
	}
	wire, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	resp, err := parseResponse(wire)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.answers) != len(crossCheck) {
		t.Fatalf("%d answers, want %d", len(resp.answers), len(crossCheck))
	}
	for i, a := range resp.answers {
		if a.typ != TypeAMTRELAY || !equalName(a.name, owner) {
			t.Errorf("answer %d: type %d name %q", i, a.typ, a.name)
		}
		got, err := parseRDATA(wire, a.rdOff, a.rdEnd, true)
		if err != nil || got != crossCheck[i] {
			t.Errorf("answer %d: %v, %v; want %v", i, got, err, crossCheck[i])
		}
		// The standalone parser agrees on the bare RDATA.
		if got2, err := ParseRDATA(wire[a.rdOff:a.rdEnd]); err != nil || got2 != crossCheck[i] {
			t.Errorf("answer %d: ParseRDATA = %v, %v", i, got2, err)
		}
	}
}

// TestMiekgDecodes builds RDATA with AppendRDATA, wraps it in a message by
// hand and decodes the message with miekg/dns.
func TestMiekgDecodes(t *testing.T) {
	owner := "12.100.51.198.in-addr.arpa."
	for _, r := range crossCheck {
		msg, err := appendQuery(nil, 42, owner, TypeAMTRELAY)
		if err != nil {
			t.Fatal(err)
		}
		msg = msg[:len(msg)-11]     // drop our OPT record
		msg[2] |= 0x80              // QR
		msg[7], msg[11] = 1, 0      // ANCOUNT 1, ARCOUNT 0
		msg = append(msg, 0xc0, 12) // owner: pointer to the question
		msg = append(msg, TypeAMTRELAY>>8, TypeAMTRELAY&0xff, 0, 1, 0, 0, 0, 60)
		rdata, err := r.AppendRDATA(nil)
		if err != nil {
			t.Fatal(err)
		}
		msg = append(msg, byte(len(rdata)>>8), byte(len(rdata)))
		msg = append(msg, rdata...)
		var m dns.Msg
		if err := m.Unpack(msg); err != nil {
			t.Fatalf("%v: miekg/dns cannot unpack: %v", r, err)
		}
		if len(m.Answer) != 1 {
			t.Fatalf("%v: %d answers", r, len(m.Answer))
		}
		got, ok := m.Answer[0].(*dns.AMTRELAY)
		if !ok {
			t.Fatalf("%v: answer is %T", r, m.Answer[0])
		}
		want := miekgRR(t, owner, r)
		if got.Precedence != want.Precedence || got.GatewayType != want.GatewayType ||
			!got.GatewayAddr.Equal(want.GatewayAddr) || got.GatewayHost != want.GatewayHost {
			t.Errorf("miekg/dns decodes %x as %v, want %v", rdata, got, want)
		}
	}
}

// fakeDNS answers queries on a loopback UDP socket with whatever reply
// returns (zero or more raw datagrams per query).
func fakeDNS(t *testing.T, reply func(q *dns.Msg) [][]byte) netip.AddrPort {
	t.Helper()
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 65535)
		for {
			n, from, err := pc.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			var q dns.Msg
			if q.Unpack(buf[:n]) != nil {
				continue
			}
			for _, b := range reply(&q) {
				pc.WriteToUDPAddrPort(b, from)
			}
		}
	}()
	return pc.LocalAddr().(*net.UDPAddr).AddrPort()
}

func pack(t *testing.T, m *dns.Msg) []byte {
	b, err := m.Pack()
	if err != nil {
		t.Error(err)
	}
	return b
}

func TestLookupEdgeCases(t *testing.T) {
	src := netip.MustParseAddr("198.51.100.12")
	owner := ReverseName(src)
	want := Relay{Precedence: 3, Type: RelayIPv4, Addr: netip.MustParseAddr("192.0.2.3")}
	cname := func(from, to string) dns.RR {
		return &dns.CNAME{Hdr: dns.RR_Header{Name: from, Rrtype: dns.TypeCNAME, Class: dns.ClassINET}, Target: to}
	}
	tests := []struct {
		name  string
		reply func(t *testing.T, q *dns.Msg) [][]byte
		err   error
	}{
		{
			name: "DNAME without a synthesized CNAME",
			reply: func(t *testing.T, q *dns.Msg) [][]byte {
				m := new(dns.Msg).SetReply(q)
				m.Answer = []dns.RR{
					&dns.DNAME{Hdr: dns.RR_Header{Name: "100.51.198.in-addr.arpa.", Rrtype: dns.TypeDNAME, Class: dns.ClassINET}, Target: "relays.example."},
					miekgRR(t, "12.relays.example.", want),
				}
				return [][]byte{pack(t, m)}
			},
		},
		{
			name: "CNAME answered without its target",
			reply: func(t *testing.T, q *dns.Msg) [][]byte {
				m := new(dns.Msg).SetReply(q)
				if q.Question[0].Name == owner {
					m.Answer = []dns.RR{cname(owner, "target.example.")}
				} else {
					m.Answer = []dns.RR{miekgRR(t, "target.example.", want)}
				}
				return [][]byte{pack(t, m)}
			},
		},
		{
			name: "CNAME loop",
			reply: func(t *testing.T, q *dns.Msg) [][]byte {
				m := new(dns.Msg).SetReply(q)
				m.Answer = []dns.RR{cname(owner, "a.example."), cname("a.example.", owner)}
				return [][]byte{pack(t, m)}
			},
			err: ErrCNAMEChain,
		},
		{
			name: "CNAME chain too long",
			reply: func(t *testing.T, q *dns.Msg) [][]byte {
				m := new(dns.Msg).SetReply(q)
				prev := owner
				for _, n := range []string{"1.x.", "2.x.", "3.x.", "4.x.", "5.x.", "6.x.", "7.x.", "8.x.", "9.x."} {
					m.Answer = append(m.Answer, cname(prev, n))
					prev = n
				}
				m.Answer = append(m.Answer, miekgRR(t, prev, want))
				return [][]byte{pack(t, m)}
			},
			err: ErrCNAMEChain,
		},
		{
			name: "forged and stray datagrams before the answer",
			reply: func(t *testing.T, q *dns.Msg) [][]byte {
				forged := new(dns.Msg).SetReply(q)
				forged.Id ^= 0x5555
				forged.Answer = []dns.RR{miekgRR(t, owner, Relay{Precedence: 1, Type: RelayIPv4, Addr: netip.MustParseAddr("10.6.6.6")})}
				other := new(dns.Msg).SetReply(q)
				other.Question[0].Name = "other.example."
				good := new(dns.Msg).SetReply(q)
				good.Answer = []dns.RR{miekgRR(t, owner, want)}
				return [][]byte{pack(t, forged), {1, 2, 3}, pack(t, other), pack(t, good)}
			},
		},
		{
			name: "compressed relay name",
			reply: func(t *testing.T, q *dns.Msg) [][]byte {
				m := new(dns.Msg).SetReply(q)
				b := pack(t, m)
				b[7] = 1 // ANCOUNT
				b = append(b, 0xc0, 12, TypeAMTRELAY>>8, TypeAMTRELAY&0xff, 0, 1, 0, 0, 0, 60)
				// RDATA: precedence 3, type 3, "relay" + pointer to
				// "in-addr.arpa." inside the question.
				name := append([]byte{5, 'r', 'e', 'l', 'a', 'y'}, 0xc0, byte(12+len("12.100.51.198.")))
				rd := append([]byte{3, 3}, name...)
				b = append(b, 0, byte(len(rd)))
				return [][]byte{append(b, rd...)}
			},
		},
		{
			name: "SERVFAIL",
			reply: func(t *testing.T, q *dns.Msg) [][]byte {
				m := new(dns.Msg).SetRcode(q, dns.RcodeServerFailure)
				return [][]byte{pack(t, m)}
			},
			err: ErrServer,
		},
		{
			name: "answer for another class",
			reply: func(t *testing.T, q *dns.Msg) [][]byte {
				m := new(dns.Msg).SetReply(q)
				rr := miekgRR(t, owner, want)
				rr.Hdr.Class = dns.ClassCHAOS
				m.Answer = []dns.RR{rr}
				return [][]byte{pack(t, m)}
			},
			err: ErrNotFound,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns := fakeDNS(t, func(q *dns.Msg) [][]byte { return tt.reply(t, q) })
			var resolved []string
			r, err := New(Config{
				Nameservers: []netip.AddrPort{ns},
				Timeout:     300 * time.Millisecond,
				Attempts:    1,
				LookupHost: func(ctx context.Context, host string) ([]netip.Addr, error) {
					resolved = append(resolved, host)
					return []netip.Addr{netip.MustParseAddr("192.0.2.3")}, nil
				},
			})
			if err != nil {
				t.Fatal(err)
			}
			got, err := r.Lookup(context.Background(), src)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("Lookup = %v, %v; want %v", got, err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.name == "compressed relay name" {
				w := Relay{Precedence: 3, Type: RelayName, Name: "relay.in-addr.arpa.", Addr: want.Addr}
				if len(got) != 1 || got[0] != w || len(resolved) != 1 || resolved[0] != w.Name {
					t.Fatalf("Lookup = %v (resolved %v), want [%v]", got, resolved, w)
				}
				return
			}
			if len(got) != 1 || got[0] != want {
				t.Fatalf("Lookup = %v, want [%v]", got, want)
			}
		})
	}
}
