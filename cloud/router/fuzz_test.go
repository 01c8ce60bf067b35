package router

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/blockcast/beacon/shared/protocol"
)

// FuzzDecide sends arbitrary clients and paths (the router's outside
// input) to a small fleet. Whatever comes in, the redirect must stay on the
// chosen node's (or the origin's) host, carry the path unchanged, and agree
// with the decision it reports.
func FuzzDecide(f *testing.F) {
	f.Add("203.0.113.7", "/a/b.mp4?x=1")
	f.Add("::ffff:10.1.2.3", "/")
	f.Add("2001:db8:1::9", "@evil.example/x")
	f.Add("fe80::1%eth0", "")
	f.Add("10.200.0.1", "//evil.example/x")
	bases := map[string]string{
		"":   strings.TrimSuffix(testOrigin, "/"),
		"b1": "http://192.168.1.10:8080",
		"b2": "https://a-rather-long-host-name.beacons.example.net:8443/cache",
		"r8": "http://r8.example",
		"r6": "http://[2001:db8::1]:8080/edge",
	}
	r := newRouter(f)
	upsert(r, beacon("b1", "203.0.113.7", bases["b1"]+"/"))
	upsert(r, beacon("b2", "203.0.113.7", bases["b2"]))
	upsert(r, beacon("b3", "198.51.100.1", "http://b3"))
	r.SetEligible("b3", false)
	upsert(r, relay("r8", bases["r8"], "10.0.0.0/8", "0.0.0.0/0"))
	upsert(r, relay("r6", bases["r6"], "2001:db8::/32", "2001:db8:1::/48"))
	f.Fuzz(func(t *testing.T, client, path string) {
		ip, _ := netip.ParseAddr(client)
		d := r.Decide(ip, path)
		base, ok := bases[d.NodeID]
		if !ok {
			t.Fatalf("decision for unknown or ineligible node: %+v", d)
		}
		want := path
		if !strings.HasPrefix(want, "/") {
			want = "/" + want
		}
		if d.Location != base+want {
			t.Fatalf("Location %q, want %q + %q", d.Location, base, want)
		}
		unmapped := ip.Unmap().WithZone("")
		if ip.IsValid() && d.Client != unmapped.String() || !ip.IsValid() && d.Client != "" {
			t.Fatalf("Client %q for %v", d.Client, ip)
		}
		switch d.Decision {
		case protocol.DecisionOrigin:
			if d.NodeID != "" || d.Prefix != "" || ip.IsValid() && unmapped.Is4() {
				t.Fatalf("origin decision %+v (IPv4 is covered by 0.0.0.0/0)", d)
			}
		case protocol.DecisionBeacon:
			if d.Prefix != "" || unmapped != netip.MustParseAddr("203.0.113.7") {
				t.Fatalf("beacon decision %+v", d)
			}
		case protocol.DecisionRelay:
			p, err := netip.ParsePrefix(d.Prefix)
			if err != nil || !p.Contains(unmapped) || p.Masked() != p {
				t.Fatalf("relay decision %+v: prefix does not cover the client", d)
			}
		default:
			t.Fatalf("decision %q", d.Decision)
		}
	})
}
