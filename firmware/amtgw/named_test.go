package amtgw

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/blockcast/beacon/firmware/driad"
	"github.com/miekg/dns"
)

// testDNS is a real DNS server on a loopback UDP socket (miekg/dns, test
// only) that answers A queries for the names in a table the test changes;
// other names get NXDOMAIN. It counts the A queries per name.
type testDNS struct {
	addr    netip.AddrPort
	mu      sync.Mutex
	a       map[string]netip.Addr
	queries map[string]int
}

func newTestDNS(t *testing.T) *testDNS {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := &testDNS{addr: pc.LocalAddr().(*net.UDPAddr).AddrPort(), a: map[string]netip.Addr{}, queries: map[string]int{}}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(d.serve)}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
	return d
}

func (d *testDNS) serve(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	if len(req.Question) == 1 {
		q := req.Question[0]
		name := strings.ToLower(q.Name)
		d.mu.Lock()
		a, ok := d.a[name]
		if q.Qtype == dns.TypeA {
			d.queries[name]++
		}
		d.mu.Unlock()
		switch {
		case !ok:
			m.Rcode = dns.RcodeNameError
		case q.Qtype == dns.TypeA:
			m.Answer = append(m.Answer, &dns.A{
				Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 1},
				A:   net.IP(a.AsSlice()),
			})
		}
	}
	w.WriteMsg(m)
}

func (d *testDNS) set(name string, a netip.Addr) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if a.IsValid() {
		d.a[name] = a
	} else {
		delete(d.a, name)
	}
}

func (d *testDNS) count(name string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.queries[name]
}

// TestNamedRelay: a relay configured by name (what --amt-relay
// amt-relay.example.net gives) is resolved through a real DNS server when
// the channel is joined, not before; a name that does not resolve yet
// leaves the channel backing off and retrying; and when the relay stops
// answering, the name is resolved again and the channel moves to the
// relay's new address.
func TestNamedRelay(t *testing.T) {
	const name = "amt-relay.example.net."
	ns := newTestDNS(t)
	first := newTestRelay(t, "udp", "127.0.0.2:0")
	second := newTestRelay(t, "udp", fmt.Sprintf("127.0.0.3:%d", first.addr.Port()))
	res, err := driad.New(driad.Config{Nameservers: []netip.AddrPort{ns.addr}, Timeout: 100 * time.Millisecond, Attempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	opts := fastOptions(t, Named{Host: "amt-relay.example.net", Port: first.addr.Port(), LookupHost: res.LookupHost})
	opts.NoDataTimeout = 400 * time.Millisecond
	g, _ := startGateway(t, opts)
	if n := ns.count(name); n != 0 {
		t.Fatalf("%d queries before any join; the name must be resolved at join time", n)
	}

	// Not in DNS yet: the join stands, the gateway backs off and asks again.
	if err := g.Join(ch4, netip.AddrPort{}, false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 3*time.Second, "two lookups of a name that does not resolve", func() bool { return ns.count(name) >= 2 })
	if cs := channelState(g.State(), ch4); cs == nil || cs.Status == StatusJoined || !strings.Contains(cs.LastError, "amt-relay.example.net") {
		t.Fatalf("channel state %+v, want not joined, with an error naming the relay", cs)
	}

	ns.set(name, first.addr.Addr())
	var col collector
	defer g.Subscribe(col.add)()
	waitFor(t, 3*time.Second, "membership at the relay the name gives", func() bool { _, ok := first.member(ch4); return ok })
	first.send(ch4, datagram(ch4, 5000, "via the first address"))
	waitFor(t, 2*time.Second, "data through the first relay", func() bool { return col.count() >= 1 })

	// The relay moves: the old address goes silent, DNS names the new one.
	before := ns.count(name)
	ns.set(name, second.addr.Addr())
	first.set(func(r *testRelay) { r.silent = true })
	waitFor(t, 5*time.Second, "membership at the relay's new address", func() bool { _, ok := second.member(ch4); return ok })
	if ns.count(name) <= before {
		t.Errorf("no new lookup after the relay stopped answering (%d queries before, %d after)", before, ns.count(name))
	}
	second.send(ch4, datagram(ch4, 5000, "via the second address"))
	waitFor(t, 2*time.Second, "data through the second relay", func() bool { return col.count() >= 2 })
	if cs := channelState(g.State(), ch4); cs == nil || cs.Relay != second.addr || cs.Status != StatusJoined {
		t.Errorf("channel state %+v, want joined at %v", cs, second.addr)
	}
}

func TestNamedRelays(t *testing.T) {
	lookup := func(addrs []netip.Addr, err error) func(context.Context, string) ([]netip.Addr, error) {
		return func(context.Context, string) ([]netip.Addr, error) { return addrs, err }
	}
	mp := netip.MustParseAddr
	rs, err := Named{Host: "r.example", LookupHost: lookup([]netip.Addr{mp("::ffff:192.0.2.1"), mp("224.0.0.1"), mp("0.0.0.0"), mp("192.0.2.1"), mp("2001:db8::1")}, nil)}.Relays(context.Background(), src4)
	want := []Relay{{Addr: netip.MustParseAddrPort("192.0.2.1:2268")}, {Addr: netip.MustParseAddrPort("[2001:db8::1]:2268")}}
	if err != nil || fmt.Sprint(rs) != fmt.Sprint(want) {
		t.Errorf("Relays = %v, %v; want %v", rs, err, want)
	}
	for _, n := range []Named{
		{Host: "r.example", LookupHost: lookup(nil, driad.ErrNotFound)},
		{Host: "r.example", LookupHost: lookup([]netip.Addr{mp("232.1.1.1")}, nil)},
		{Host: "r.example"},
		{LookupHost: lookup([]netip.Addr{mp("192.0.2.1")}, nil)},
	} {
		if _, err := n.Relays(context.Background(), src4); !errors.Is(err, ErrRelayName) {
			t.Errorf("%v: err %v, want ErrRelayName", n, err)
		}
	}
}
