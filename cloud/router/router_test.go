package router

import (
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/netip"
	"net/url"
	"sync"
	"testing"
	"unsafe"

	"github.com/blockcast/beacon/cloud/registry"
	"github.com/blockcast/beacon/shared/protocol"
)

const testOrigin = "http://origin.example:8080/cdn/"

func newRouter(t testing.TB) *Router {
	t.Helper()
	u, err := url.Parse(testOrigin)
	if err != nil {
		t.Fatal(err)
	}
	r, err := New(Options{Origin: u, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func beacon(id, ip, lan string) registry.Node {
	return registry.Node{ID: id, Role: protocol.RoleBeacon, LANURL: lan, PublicIP: netip.MustParseAddr(ip)}
}

func relay(id, lan string, cidrs ...string) registry.Node {
	return registry.Node{ID: id, Role: protocol.RoleRelay, LANURL: lan, CIDRs: cidrs, PublicIP: netip.MustParseAddr("192.0.2.1")}
}

func TestDecide(t *testing.T) {
	nested := func(r *Router) {
		upsert(r, relay("r8", "http://r8.example", "10.0.0.0/8"))
		upsert(r, relay("r16", "http://r16.example/", "10.1.0.0/16"))
		upsert(r, relay("r24", "https://r24.example:8443/cache", "10.1.2.0/24", "2001:db8:1::/48"))
		upsert(r, relay("r32v6", "http://[2001:db8::1]:8080", "2001:db8::/32"))
	}
	tests := []struct {
		name   string
		setup  func(*Router)
		client string // "" is the zero Addr
		path   string
		want   protocol.RouteDecision
	}{
		{
			name:   "exact IPv4",
			setup:  func(r *Router) { upsert(r, beacon("b1", "203.0.113.7", "http://192.168.1.10:8080")) },
			client: "203.0.113.7", path: "/a/b.mp4?x=1",
			want: protocol.RouteDecision{Decision: "beacon", Location: "http://192.168.1.10:8080/a/b.mp4?x=1", NodeID: "b1", Client: "203.0.113.7"},
		},
		{
			name:   "IPv4-mapped client",
			setup:  func(r *Router) { upsert(r, beacon("b1", "203.0.113.7", "http://192.168.1.10:8080")) },
			client: "::ffff:203.0.113.7", path: "/a",
			want: protocol.RouteDecision{Decision: "beacon", Location: "http://192.168.1.10:8080/a", NodeID: "b1", Client: "203.0.113.7"},
		},
		{
			name:   "IPv4-mapped beacon IP",
			setup:  func(r *Router) { upsert(r, beacon("b1", "::ffff:203.0.113.7", "http://192.168.1.10:8080")) },
			client: "203.0.113.7", path: "/a",
			want: protocol.RouteDecision{Decision: "beacon", Location: "http://192.168.1.10:8080/a", NodeID: "b1", Client: "203.0.113.7"},
		},
		{
			name:   "exact IPv6 with zone dropped",
			setup:  func(r *Router) { upsert(r, beacon("b6", "2001:db8::7", "http://[fd00::1]:8080/")) },
			client: "2001:db8::7%eth0", path: "/v",
			want: protocol.RouteDecision{Decision: "beacon", Location: "http://[fd00::1]:8080/v", NodeID: "b6", Client: "2001:db8::7"},
		},
		{
			name:   "other IP of the beacon's network is not the beacon",
			setup:  func(r *Router) { upsert(r, beacon("b1", "203.0.113.7", "http://192.168.1.10:8080")) },
			client: "203.0.113.8", path: "/a",
			want: protocol.RouteDecision{Decision: "origin", Location: "http://origin.example:8080/cdn/a", Client: "203.0.113.8"},
		},
		{
			name: "beacon before relay",
			setup: func(r *Router) {
				nested(r)
				upsert(r, beacon("b1", "10.1.2.3", "http://192.168.1.10"))
			},
			client: "10.1.2.3", path: "/a",
			want: protocol.RouteDecision{Decision: "beacon", Location: "http://192.168.1.10/a", NodeID: "b1", Client: "10.1.2.3"},
		},
		{
			name: "longest IPv4 prefix /24", setup: nested, client: "10.1.2.200", path: "/x?y",
			want: protocol.RouteDecision{Decision: "relay", Location: "https://r24.example:8443/cache/x?y", NodeID: "r24", Client: "10.1.2.200", Prefix: "10.1.2.0/24"},
		},
		{
			name: "longest IPv4 prefix /16", setup: nested, client: "10.1.3.1", path: "/x",
			want: protocol.RouteDecision{Decision: "relay", Location: "http://r16.example/x", NodeID: "r16", Client: "10.1.3.1", Prefix: "10.1.0.0/16"},
		},
		{
			name: "longest IPv4 prefix /8", setup: nested, client: "10.200.0.1", path: "/x",
			want: protocol.RouteDecision{Decision: "relay", Location: "http://r8.example/x", NodeID: "r8", Client: "10.200.0.1", Prefix: "10.0.0.0/8"},
		},
		{
			name: "longest IPv6 prefix /48", setup: nested, client: "2001:db8:1:2::3", path: "/x",
			want: protocol.RouteDecision{Decision: "relay", Location: "https://r24.example:8443/cache/x", NodeID: "r24", Client: "2001:db8:1:2::3", Prefix: "2001:db8:1::/48"},
		},
		{
			name: "longest IPv6 prefix /32", setup: nested, client: "2001:db8:2::3", path: "/x",
			want: protocol.RouteDecision{Decision: "relay", Location: "http://[2001:db8::1]:8080/x", NodeID: "r32v6", Client: "2001:db8:2::3", Prefix: "2001:db8::/32"},
		},
		{
			name: "IPv4 prefix does not cover mapped IPv6 space", setup: nested, client: "::a01:203", path: "/x",
			want: protocol.RouteDecision{Decision: "origin", Location: "http://origin.example:8080/cdn/x", Client: "::a01:203"},
		},
		{
			name: "uncovered goes to origin", setup: nested, client: "11.0.0.1", path: "/a?x",
			want: protocol.RouteDecision{Decision: "origin", Location: "http://origin.example:8080/cdn/a?x", Client: "11.0.0.1"},
		},
		{
			name: "invalid client goes to origin", setup: nested, client: "", path: "/a",
			want: protocol.RouteDecision{Decision: "origin", Location: "http://origin.example:8080/cdn/a"},
		},
		{
			name: "path without slash cannot reach another host", setup: nested, client: "11.0.0.1", path: "@evil.example/x",
			want: protocol.RouteDecision{Decision: "origin", Location: "http://origin.example:8080/cdn/@evil.example/x", Client: "11.0.0.1"},
		},
		{
			name: "ineligible beacon skipped for the relay",
			setup: func(r *Router) {
				nested(r)
				upsert(r, beacon("b1", "10.1.2.3", "http://192.168.1.10"))
				r.SetEligible("b1", false)
			},
			client: "10.1.2.3", path: "/a",
			want: protocol.RouteDecision{Decision: "relay", Location: "https://r24.example:8443/cache/a", NodeID: "r24", Client: "10.1.2.3", Prefix: "10.1.2.0/24"},
		},
		{
			name: "ineligible relay skipped for a shorter prefix",
			setup: func(r *Router) {
				nested(r)
				r.SetEligible("r24", false)
			},
			client: "10.1.2.3", path: "/a",
			want: protocol.RouteDecision{Decision: "relay", Location: "http://r16.example/a", NodeID: "r16", Client: "10.1.2.3", Prefix: "10.1.0.0/16"},
		},
		{
			name: "eligible again",
			setup: func(r *Router) {
				nested(r)
				r.SetEligible("r24", false)
				r.SetEligible("r24", true)
			},
			client: "10.1.2.3", path: "/a",
			want: protocol.RouteDecision{Decision: "relay", Location: "https://r24.example:8443/cache/a", NodeID: "r24", Client: "10.1.2.3", Prefix: "10.1.2.0/24"},
		},
		{
			name: "eligibility survives re-registration",
			setup: func(r *Router) {
				upsert(r, beacon("b1", "203.0.113.7", "http://192.168.1.10:8080"))
				r.SetEligible("b1", false)
				upsert(r, beacon("b1", "203.0.113.7", "http://192.168.1.10:8080"))
			},
			client: "203.0.113.7", path: "/a",
			want: protocol.RouteDecision{Decision: "origin", Location: "http://origin.example:8080/cdn/a", Client: "203.0.113.7"},
		},
		{
			name: "removed relay",
			setup: func(r *Router) {
				nested(r)
				r.Remove("r24")
				r.Remove("r16")
				r.Remove("unknown")
			},
			client: "10.1.2.3", path: "/a",
			want: protocol.RouteDecision{Decision: "relay", Location: "http://r8.example/a", NodeID: "r8", Client: "10.1.2.3", Prefix: "10.0.0.0/8"},
		},
		{
			name: "removed beacon",
			setup: func(r *Router) {
				upsert(r, beacon("b1", "203.0.113.7", "http://192.168.1.10:8080"))
				r.Remove("b1")
			},
			client: "203.0.113.7", path: "/a",
			want: protocol.RouteDecision{Decision: "origin", Location: "http://origin.example:8080/cdn/a", Client: "203.0.113.7"},
		},
		{
			name: "moved beacon is gone from its old IP",
			setup: func(r *Router) {
				upsert(r, beacon("b1", "203.0.113.7", "http://192.168.1.10:8080"))
				upsert(r, beacon("b1", "198.51.100.9", "http://192.168.1.10:8080"))
			},
			client: "203.0.113.7", path: "/a",
			want: protocol.RouteDecision{Decision: "origin", Location: "http://origin.example:8080/cdn/a", Client: "203.0.113.7"},
		},
		{
			name: "moved beacon is at its new IP with its new URL",
			setup: func(r *Router) {
				upsert(r, beacon("b1", "203.0.113.7", "http://192.168.1.10:8080"))
				upsert(r, beacon("b1", "2001:db8::9", "http://192.168.1.11:8080"))
			},
			client: "2001:db8::9", path: "/a",
			want: protocol.RouteDecision{Decision: "beacon", Location: "http://192.168.1.11:8080/a", NodeID: "b1", Client: "2001:db8::9"},
		},
		{
			name: "relay's old prefix is replaced",
			setup: func(r *Router) {
				upsert(r, relay("r", "http://r.example", "10.0.0.0/8", "192.0.2.0/24"))
				upsert(r, relay("r", "http://r.example", "172.16.0.0/12", "192.0.2.0/24"))
			},
			client: "10.1.2.3", path: "/a",
			want: protocol.RouteDecision{Decision: "origin", Location: "http://origin.example:8080/cdn/a", Client: "10.1.2.3"},
		},
		{
			name: "relay's new prefix is served",
			setup: func(r *Router) {
				upsert(r, relay("r", "http://r.example", "10.0.0.0/8", "192.0.2.0/24"))
				upsert(r, relay("r", "http://r.example", "172.16.0.0/12", "192.0.2.0/24"))
			},
			client: "172.20.0.1", path: "/a",
			want: protocol.RouteDecision{Decision: "relay", Location: "http://r.example/a", NodeID: "r", Client: "172.20.0.1", Prefix: "172.16.0.0/12"},
		},
		{
			name: "beacon that became a relay",
			setup: func(r *Router) {
				upsert(r, beacon("n", "203.0.113.7", "http://192.168.1.10:8080"))
				upsert(r, relay("n", "http://n.example", "203.0.113.0/24"))
			},
			client: "203.0.113.7", path: "/a",
			want: protocol.RouteDecision{Decision: "relay", Location: "http://n.example/a", NodeID: "n", Client: "203.0.113.7", Prefix: "203.0.113.0/24"},
		},
		{
			name: "shared prefix survives one relay leaving",
			setup: func(r *Router) {
				upsert(r, relay("r1", "http://r1.example", "10.0.0.0/8"))
				upsert(r, relay("r2", "http://r2.example", "10.0.0.0/8"))
				r.Remove("r1")
			},
			client: "10.1.2.3", path: "/a",
			want: protocol.RouteDecision{Decision: "relay", Location: "http://r2.example/a", NodeID: "r2", Client: "10.1.2.3", Prefix: "10.0.0.0/8"},
		},
		{
			name: "ineligible relay of a shared prefix leaves it to the others",
			setup: func(r *Router) {
				upsert(r, relay("r0", "http://r0.example", "10.0.0.0/8"))
				for _, id := range []string{"r1", "r2", "r3"} {
					upsert(r, relay(id, "http://"+id+".example", "10.1.0.0/16"))
				}
				r.SetEligible("r1", false)
				r.Remove("r3")
			},
			client: "10.1.2.3", path: "/a",
			want: protocol.RouteDecision{Decision: "relay", Location: "http://r2.example/a", NodeID: "r2", Client: "10.1.2.3", Prefix: "10.1.0.0/16"},
		},
		{
			name: "all relays of a prefix ineligible",
			setup: func(r *Router) {
				upsert(r, relay("r0", "http://r0.example", "10.0.0.0/8"))
				for _, id := range []string{"r1", "r2"} {
					upsert(r, relay(id, "http://"+id+".example", "10.1.0.0/16"))
					r.SetEligible(id, false)
				}
			},
			client: "10.1.2.3", path: "/a",
			want: protocol.RouteDecision{Decision: "relay", Location: "http://r0.example/a", NodeID: "r0", Client: "10.1.2.3", Prefix: "10.0.0.0/8"},
		},
		{
			name: "several beacons on the IP, all but one ineligible",
			setup: func(r *Router) {
				for _, id := range []string{"b1", "b2", "b3"} {
					upsert(r, beacon(id, "203.0.113.7", "http://"+id))
				}
				r.SetEligible("b1", false)
				r.SetEligible("b3", false)
			},
			client: "203.0.113.7", path: "/a",
			want: protocol.RouteDecision{Decision: "beacon", Location: "http://b2/a", NodeID: "b2", Client: "203.0.113.7"},
		},
		{
			name: "middle beacon of an IP's list moved away",
			setup: func(r *Router) {
				for _, id := range []string{"b1", "b2", "b3"} {
					upsert(r, beacon(id, "203.0.113.7", "http://"+id))
				}
				upsert(r, beacon("b2", "203.0.113.8", "http://b2"))
				r.Remove("b3")
			},
			client: "203.0.113.7", path: "/a",
			want: protocol.RouteDecision{Decision: "beacon", Location: "http://b1/a", NodeID: "b1", Client: "203.0.113.7"},
		},
		{
			name: "mapped relay prefix matches IPv4 clients",
			setup: func(r *Router) {
				upsert(r, relay("r", "http://r.example", "::ffff:10.0.0.0/104"))
			},
			client: "10.1.2.3", path: "/a",
			want: protocol.RouteDecision{Decision: "relay", Location: "http://r.example/a", NodeID: "r", Client: "10.1.2.3", Prefix: "10.0.0.0/8"},
		},
		{
			name: "unusable node is dropped",
			setup: func(r *Router) {
				upsert(r, beacon("b1", "203.0.113.7", "http://192.168.1.10:8080"))
				upsert(r, beacon("b1", "203.0.113.7", "ftp://192.168.1.10"))
			},
			client: "203.0.113.7", path: "/a",
			want: protocol.RouteDecision{Decision: "origin", Location: "http://origin.example:8080/cdn/a", Client: "203.0.113.7"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRouter(t)
			tt.setup(r)
			var client netip.Addr
			if tt.client != "" {
				client = netip.MustParseAddr(tt.client)
			}
			if got := r.Decide(client, tt.path); got != tt.want {
				t.Errorf("Decide(%s, %q)\n got %+v\nwant %+v", tt.client, tt.path, got, tt.want)
			}
		})
	}
}

func TestLen(t *testing.T) {
	r := newRouter(t)
	check := func(b, rl, p int) {
		t.Helper()
		if gb, gr, gp := r.Len(); gb != b || gr != rl || gp != p {
			t.Errorf("Len = %d, %d, %d; want %d, %d, %d", gb, gr, gp, b, rl, p)
		}
	}
	check(0, 0, 0)
	upsert(r, beacon("b1", "203.0.113.7", "http://a"))
	upsert(r, beacon("b2", "203.0.113.7", "http://b"))
	upsert(r, beacon("b2", "203.0.113.8", "http://b"))
	check(2, 0, 0)
	upsert(r, relay("r1", "http://r", "10.0.0.0/8", "10.0.0.0/8", "2001:db8::/32"))
	upsert(r, relay("r2", "http://r", "10.0.0.0/8", "192.0.2.0/24"))
	check(2, 2, 3)
	upsert(r, relay("r1", "http://r", "2001:db8::/32"))
	check(2, 2, 3)
	r.Remove("r2")
	check(2, 1, 1)
	upsert(r, beacon("r1", "203.0.113.9", "http://r"))
	check(3, 0, 0)
	r.Remove("b1")
	r.Remove("b2")
	r.Remove("r1")
	check(0, 0, 0)
	if len(r.byID) != 0 || len(r.ip4) != 0 || r.ip4f.n != 0 || len(r.ip6) != 0 || len(r.cidrs) != 0 || len(r.groups) != len(r.freeGrp) {
		t.Errorf("index not empty after removing everything: %d ids, %d v4, %d v6, %d relays", len(r.byID), len(r.ip4), len(r.ip6), len(r.cidrs))
	}
}

func TestNewRefusesBadOrigin(t *testing.T) {
	for _, s := range []string{"", "ftp://h/", "/relative", "http://user:pw@h/", "http://h/?q=1", "http://h/#f", "http:opaque"} {
		u, err := url.Parse(s)
		if err != nil {
			continue
		}
		if _, err := New(Options{Origin: u}); err == nil {
			t.Errorf("New(origin %q) = nil error", s)
		}
	}
	if _, err := New(Options{}); err == nil {
		t.Error("New without origin = nil error")
	}
}

func TestBaseURLJoin(t *testing.T) {
	for _, tt := range []struct{ base, path, want string }{
		{"http://h:1/sub", "/a?x", "http://h:1/sub/a?x"},
		{"http://h:1/sub/", "/a?x", "http://h:1/sub/a?x"},
		{"http://h:1", "/a", "http://h:1/a"},
		{"http://h:1/", "/", "http://h:1/"},
		{"https://H.example/a%20b/", "/c", "https://H.example/a%20b/c"},
	} {
		u, _ := url.Parse(tt.base)
		r, err := New(Options{Origin: u})
		if err != nil {
			t.Fatal(err)
		}
		if got := r.Decide(netip.Addr{}, tt.path).Location; got != tt.want {
			t.Errorf("%q + %q = %q, want %q", tt.base, tt.path, got, tt.want)
		}
	}
}

// spread decides n paths and counts the winners.
func spread(r *Router, client netip.Addr, n int) (map[string]int, []string) {
	counts := map[string]int{}
	winners := make([]string, n)
	for i := range winners {
		d := r.Decide(client, fmt.Sprintf("/video/%d/seg.ts", i))
		counts[d.NodeID]++
		winners[i] = d.NodeID
	}
	return counts, winners
}

func TestRendezvousSpread(t *testing.T) {
	const paths = 30000
	ip := netip.MustParseAddr("203.0.113.7")
	for _, tt := range []struct {
		name  string
		loads map[string]float64
		want  map[string]float64
	}{
		{"equal", nil, map[string]float64{"b1": 1.0 / 3, "b2": 1.0 / 3, "b3": 1.0 / 3}},
		{"weighted", map[string]float64{"b3": 0.5}, map[string]float64{"b1": 0.4, "b2": 0.4, "b3": 0.2}},
		{"overloaded", map[string]float64{"b2": 3, "b3": 0.75}, map[string]float64{"b1": 1 / 1.26, "b2": 0.01 / 1.26, "b3": 0.25 / 1.26}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := newRouter(t)
			for _, id := range []string{"b1", "b2", "b3"} {
				upsert(r, beacon(id, ip.String(), "http://"+id))
			}
			for id, l := range tt.loads {
				r.SetLoad(id, l)
			}
			counts, _ := spread(r, ip, paths)
			for id, share := range tt.want {
				if got := float64(counts[id]) / paths; math.Abs(got-share) > 0.02 {
					t.Errorf("%s got %.3f of paths, want %.3f ± 0.02 (%v)", id, got, share, counts)
				}
			}
		})
	}
}

func TestRendezvousRelayNodesShareAPrefix(t *testing.T) {
	r := newRouter(t)
	for _, id := range []string{"r1", "r2"} {
		upsert(r, relay(id, "http://"+id, "2001:db8::/32"))
	}
	counts, _ := spread(r, netip.MustParseAddr("2001:db8::5"), 10000)
	for _, id := range []string{"r1", "r2"} {
		if got := float64(counts[id]) / 10000; math.Abs(got-0.5) > 0.03 {
			t.Errorf("%s got %.3f of paths, want 0.5: %v", id, got, counts)
		}
	}
}

func TestRendezvousAffinity(t *testing.T) {
	const paths = 6000
	ip := netip.MustParseAddr("203.0.113.7")
	ids := []string{"b1", "b2", "b3"}
	r := newRouter(t)
	for _, id := range ids {
		upsert(r, beacon(id, ip.String(), "http://"+id))
	}
	_, base := spread(r, ip, paths)

	// The same path always goes to the same beacon, whatever order the
	// beacons registered in, and however often it is asked for.
	again := newRouter(t)
	for i := len(ids) - 1; i >= 0; i-- {
		again.Upsert(beacon(ids[i], ip.String(), "http://"+ids[i]))
	}
	again.Upsert(beacon("b2", ip.String(), "http://b2")) // re-registration
	_, w := spread(again, ip, paths)
	for i := range base {
		if w[i] != base[i] {
			t.Fatalf("path %d went to %s, then to %s", i, base[i], w[i])
		}
	}

	// A new beacon takes about a quarter of the paths, all from the
	// others; nothing else moves.
	upsert(r, beacon("b4", ip.String(), "http://b4"))
	_, w = spread(r, ip, paths)
	moved := 0
	for i := range base {
		if w[i] != base[i] {
			moved++
			if w[i] != "b4" {
				t.Fatalf("path %d moved from %s to %s, not to the new beacon", i, base[i], w[i])
			}
		}
	}
	if f := float64(moved) / paths; math.Abs(f-0.25) > 0.03 {
		t.Errorf("new beacon took %.3f of paths, want about 0.25", f)
	}

	// When a beacon leaves (or fails its health check), only its paths move.
	r.Remove("b4")
	r.SetEligible("b2", false)
	_, w = spread(r, ip, paths)
	for i := range base {
		if base[i] != "b2" && w[i] != base[i] {
			t.Fatalf("path %d moved from %s to %s though %s is still there", i, base[i], w[i], base[i])
		}
		if w[i] == "b2" {
			t.Fatalf("path %d went to ineligible b2", i)
		}
	}
}

func TestConcurrentUpdatesAndDecisions(t *testing.T) {
	r := newRouter(t)
	ips := []string{"203.0.113.1", "203.0.113.2", "2001:db8::1"}
	var writers, readers sync.WaitGroup
	stop := make(chan struct{})
	for g := 0; g < 2; g++ {
		readers.Add(1)
		go func() {
			defer readers.Done()
			clients := []string{"203.0.113.1", "2001:db8::1", "10.3.0.1", "198.51.100.1"}
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				d := r.Decide(netip.MustParseAddr(clients[i%len(clients)]), "/p")
				ok := d.Decision == "origin" && d.NodeID == "" && d.Location == "http://origin.example:8080/cdn/p" ||
					d.Decision != "origin" && d.Location == "http://"+d.NodeID+"/p"
				if !ok {
					t.Errorf("inconsistent decision %+v", d)
					return
				}
				r.Len()
			}
		}()
	}
	for w := 0; w < 2; w++ {
		writers.Add(1)
		go func(w int) {
			defer writers.Done()
			for i := 0; i < 3000; i++ {
				id := fmt.Sprintf("n%d", i%50)
				switch i % 6 {
				case 0, 1:
					upsert(r, beacon(id, ips[(i+w)%len(ips)], "http://"+id))
				case 2:
					upsert(r, relay(id, "http://"+id, fmt.Sprintf("10.%d.0.0/16", i%7), "2001:db8::/32"))
				case 3:
					r.SetEligible(id, i%4 != 0)
				case 4:
					r.SetLoad(id, float64(i%10)/10)
				case 5:
					r.Remove(id)
				}
			}
		}(w)
	}
	writers.Wait()
	close(stop)
	readers.Wait()

	// Whatever the interleaving, the counts must match the index.
	b, rl, p := r.Len()
	r.mu.RLock()
	defer r.mu.RUnlock()
	if b+rl != len(r.byID) || rl != len(r.cidrs) || p != r.lpm.Len() {
		t.Errorf("Len = %d, %d, %d with %d IDs, %d relays with CIDRs, %d prefixes", b, rl, p, len(r.byID), len(r.cidrs), r.lpm.Len())
	}
}

func TestEntryFitsACacheLine(t *testing.T) {
	if s := unsafe.Sizeof(nodeEntry{}); s != 64 {
		t.Errorf("nodeEntry is %d bytes; the layout assumes one 64-byte cache line", s)
	}
}

func TestLongBaseURL(t *testing.T) {
	r := newRouter(t)
	long := "https://a-rather-long-host-name.beacons.example.net:8443/cache/prefix"
	upsert(r, beacon("b1", "203.0.113.7", long+"/"))
	upsert(r, beacon("b2", "203.0.113.8", "http://exactly-32-bytes-long-host.example"[:7+32]))
	for _, tt := range []struct{ ip, want string }{
		{"203.0.113.7", long + "/a?b"},
		{"203.0.113.8", "http://exactly-32-bytes-long-host.example"[:7+32] + "/a?b"},
	} {
		if d := r.Decide(netip.MustParseAddr(tt.ip), "/a?b"); d.Location != tt.want {
			t.Errorf("Location %q, want %q", d.Location, tt.want)
		}
	}
	// Shortened again: the long form must be gone.
	upsert(r, beacon("b1", "203.0.113.7", "http://h"))
	if d := r.Decide(netip.MustParseAddr("203.0.113.7"), "/a"); d.Location != "http://h/a" {
		t.Errorf("Location %q after the URL got short", d.Location)
	}
	upsert(r, beacon("b1", "203.0.113.7", long))
	r.Remove("b1")
	if len(r.longBase) != 0 {
		t.Errorf("%d long base URLs left after removal", len(r.longBase))
	}
}

func TestRelayNodeFor(t *testing.T) {
	r := newRouter(t)
	upsert(r, registry.Node{ID: "relayWide", Role: protocol.RoleRelay, LANURL: "http://w.example", CIDRs: []string{"10.0.0.0/8"}})
	upsert(r, registry.Node{ID: "relayNarrow", Role: protocol.RoleRelay, LANURL: "http://n.example", CIDRs: []string{"10.1.0.0/16"}})
	if !r.Has("relayWide") || r.Has("nobody") {
		t.Error("Has")
	}
	for addr, want := range map[string]string{"10.1.2.3": "relayNarrow", "10.9.9.9": "relayWide", "192.0.2.1": "", "::ffff:10.1.0.1": "relayNarrow"} {
		got, ok := r.RelayNodeFor(netip.MustParseAddr(addr))
		if got != want || ok != (want != "") {
			t.Errorf("RelayFor(%s) = %q %v, want %q", addr, got, ok, want)
		}
	}
	r.SetEligible("relayNarrow", false)
	if got, _ := r.RelayNodeFor(netip.MustParseAddr("10.1.2.3")); got != "relayWide" {
		t.Errorf("ineligible relay still chosen: %q", got)
	}
}

// upsert is Upsert followed, for a relay, by the operator approving every
// CIDR it registered with (castd does that through its approvals).
func upsert(r *Router, n registry.Node) {
	r.Upsert(n)
	if n.Role != protocol.RoleRelay {
		return
	}
	var ps []netip.Prefix
	for _, s := range n.CIDRs {
		if p, err := netip.ParsePrefix(s); err == nil {
			ps = append(ps, p)
		}
	}
	r.SetRelayNodePrefixes(n.ID, ps)
}

// A relay's registered CIDRs route nothing: a fresh key claiming the whole
// address space, or a /32 inside another relay's approved /24, draws no
// client until SetRelayPrefixes (the operator's approval) says so.
func TestRegisteredCIDRsAreNotRouted(t *testing.T) {
	r := newRouter(t)
	r.Upsert(relay("legit", "http://legit.example", "198.51.100.0/24"))
	r.SetRelayNodePrefixes("legit", []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")})
	r.Upsert(relay("hijack", "http://evil.example", "0.0.0.0/0", "::/0"))
	r.Upsert(relay("sniper", "http://evil.example", "198.51.100.7/32"))
	for client, want := range map[string]string{
		"198.51.100.7": "legit", "198.51.100.200": "legit", "203.0.113.5": "", "2001:db8::1": "",
	} {
		d := r.Decide(netip.MustParseAddr(client), "/x")
		if d.NodeID != want {
			t.Errorf("client %s routed to %q (%s), want %q", client, d.NodeID, d.Decision, want)
		}
	}
	// Re-registering keeps what was set; approval is what routes.
	r.Upsert(relay("legit", "http://legit.example", "0.0.0.0/0"))
	if d := r.Decide(netip.MustParseAddr("203.0.113.5"), "/x"); d.NodeID != "" {
		t.Errorf("re-registration widened the relay to %s", d.Prefix)
	}
	if d := r.Decide(netip.MustParseAddr("198.51.100.9"), "/x"); d.NodeID != "legit" {
		t.Errorf("re-registration dropped the approved prefix: %+v", d)
	}
	if !r.SetRelayNodePrefixes("sniper", []netip.Prefix{netip.MustParsePrefix("198.51.100.7/32")}) {
		t.Fatal("SetRelayPrefixes refused a known relay")
	}
	if d := r.Decide(netip.MustParseAddr("198.51.100.7"), "/x"); d.NodeID != "sniper" {
		t.Errorf("approved /32 not routed: %+v", d)
	}
	if got := r.RelayNodePrefixes("sniper"); len(got) != 1 || got[0].String() != "198.51.100.7/32" {
		t.Errorf("RelayPrefixes = %v", got)
	}
	r.Upsert(beacon("b", "203.0.113.9", "http://b"))
	if r.SetRelayNodePrefixes("b", []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}) || r.SetRelayNodePrefixes("nobody", nil) {
		t.Error("SetRelayPrefixes accepted a beacon or an unknown ID")
	}
	if !r.SetRelayNodePrefixes("sniper", nil) {
		t.Fatal("clearing refused")
	}
	if d := r.Decide(netip.MustParseAddr("198.51.100.7"), "/x"); d.NodeID != "legit" {
		t.Errorf("after clearing: %+v", d)
	}
}
