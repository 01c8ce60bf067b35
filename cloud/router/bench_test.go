package router

import (
	"fmt"
	"math/rand"
	"net/netip"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/blockcast/beacon/cloud/registry"
	"github.com/blockcast/beacon/shared/protocol"
)

// The fleet the benchmarks run against: built once per process, because
// building it takes seconds and would otherwise dominate every benchmark.
const (
	benchBeacons      = 1_000_000
	benchRelayNodes   = 25_000
	benchCIDRsPerRely = 4 // 100,000 relay prefixes in all
)

type benchFleet struct {
	r         *Router
	beaconIPs []netip.Addr
	prefixes  []netip.Prefix
	clients   []netip.Addr // beacon IPs, covered and uncovered addresses, mixed
	byKind    map[string][]netip.Addr
	paths     []string
	bytesPer  float64 // heap bytes per beacon
	built     time.Duration
}

var (
	fleetOnce sync.Once
	fleet     benchFleet
)

const b58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"

// randID is shaped like a node ID (44 base58 characters): the router never
// decodes it, but its length is part of the memory per node.
func randID(rng *rand.Rand) string {
	b := make([]byte, 44)
	for i := range b {
		b[i] = b58[rng.Intn(len(b58))]
	}
	return string(b)
}

// randPublicV4 avoids the big private and special blocks; first is the
// range of first bytes to draw from.
func randPublicV4(rng *rand.Rand, lo, hi int) netip.Addr {
	for {
		a := [4]byte{byte(lo + rng.Intn(hi-lo)), byte(rng.Intn(256)), byte(rng.Intn(256)), byte(1 + rng.Intn(254))}
		switch a[0] {
		case 0, 10, 100, 127, 169, 172, 192:
			continue
		}
		return netip.AddrFrom4(a)
	}
}

// randRelayNodePrefix draws the prefixes relays announce: IPv4 in 1.0.0.0 to
// 99.255.255.255, mostly /16 to /24 with some shorter and some longer, and
// IPv6 /32 to /64 in 2001::/16. Addresses from 128.0.0.0 and in 2a00::/16
// are left uncovered.
func randRelayNodePrefix(rng *rand.Rand) netip.Prefix {
	if rng.Intn(2) == 0 {
		a := randPublicV4(rng, 1, 100)
		var n int
		switch x := rng.Intn(100); {
		case x < 2:
			n = 8 + rng.Intn(5)
		case x < 20:
			n = 13 + rng.Intn(4)
		case x < 80:
			n = 17 + rng.Intn(8)
		default:
			n = 25 + rng.Intn(8)
		}
		return netip.PrefixFrom(a, n).Masked()
	}
	var b [16]byte
	rng.Read(b[:])
	b[0], b[1] = 0x20, 0x01
	return netip.PrefixFrom(netip.AddrFrom16(b), 32+rng.Intn(33)).Masked()
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

func buildFleet(b *testing.B) {
	fleetOnce.Do(func() {
		start := time.Now()
		rng := rand.New(rand.NewSource(42))
		f := &fleet
		f.r = newRouter(b)
		before := heapInUse()
		f.beaconIPs = make([]netip.Addr, benchBeacons)
		for i := range f.beaconIPs {
			ip := randPublicV4(rng, 1, 224)
			f.beaconIPs[i] = ip
			upsert(f.r, registry.Node{
				ID:       randID(rng),
				Role:     protocol.RoleBeacon,
				LANURL:   fmt.Sprintf("http://192.168.%d.%d:8080", rng.Intn(256), 1+rng.Intn(254)),
				PublicIP: ip,
			})
		}
		// The IP list is the benchmark's, not the router's.
		ipList := uint64(len(f.beaconIPs)) * uint64(24)
		f.bytesPer = float64(heapInUse()-before-ipList) / benchBeacons

		for i := 0; i < benchRelayNodes; i++ {
			cidrs := make([]string, benchCIDRsPerRely)
			for j := range cidrs {
				p := randRelayNodePrefix(rng)
				f.prefixes = append(f.prefixes, p)
				cidrs[j] = p.String()
			}
			upsert(f.r, registry.Node{
				ID: randID(rng), Role: protocol.RoleRelay, CIDRs: cidrs,
				LANURL:   fmt.Sprintf("https://relay%d.example.net", i),
				PublicIP: randPublicV4(rng, 1, 224),
			})
		}

		isBeacon := func(a netip.Addr) bool { return f.r.pickBeacon(a, "/") != none }
		f.byKind = map[string][]netip.Addr{}
		const perKind = 1 << 14
		for len(f.byKind["beacon"]) < perKind {
			f.byKind["beacon"] = append(f.byKind["beacon"], f.beaconIPs[rng.Intn(len(f.beaconIPs))])
		}
		for len(f.byKind["relay"]) < perKind {
			a := randAddrNear(rng, f.prefixes[rng.Intn(len(f.prefixes))])
			if !isBeacon(a) {
				f.byKind["relay"] = append(f.byKind["relay"], a)
			}
		}
		for len(f.byKind["origin"]) < perKind {
			var a netip.Addr
			if rng.Intn(2) == 0 {
				a = randPublicV4(rng, 128, 224)
			} else {
				var b [16]byte
				rng.Read(b[:])
				b[0], b[1] = 0x2a, 0x00
				a = netip.AddrFrom16(b)
			}
			if !isBeacon(a) {
				f.byKind["origin"] = append(f.byKind["origin"], a)
			}
		}
		for i := 0; i < perKind; i++ {
			for _, k := range []string{"beacon", "relay", "origin"} {
				f.clients = append(f.clients, f.byKind[k][i])
			}
		}
		rng.Shuffle(len(f.clients), func(i, j int) { f.clients[i], f.clients[j] = f.clients[j], f.clients[i] })
		for i := 0; i < 1024; i++ {
			f.paths = append(f.paths, fmt.Sprintf("/live/channel%d/seg-%d.ts?token=abc", i%17, i))
		}
		f.built = time.Since(start)
	})
	if fleet.r == nil {
		b.Fatal("fleet build failed")
	}
}

// reportFleet reports the index's memory per beacon (after the timed
// loop: ResetTimer drops metrics) and says what was measured once.
func reportFleet(b *testing.B) {
	b.ReportMetric(fleet.bytesPer, "B/beacon")
	if b.N == 1 {
		nb, nr, np := fleet.r.Len()
		b.Logf("fleet: %d beacons, %d relays, %d prefixes, built in %s", nb, nr, np, fleet.built.Round(time.Millisecond))
	}
}

// BenchmarkDecide decides for a mix of clients (a third each on a beacon's
// IP, inside a relay prefix, and nowhere) on one goroutine, so decisions/s
// is per core.
func BenchmarkDecide(b *testing.B) {
	buildFleet(b)
	clients, paths, r := fleet.clients, fleet.paths, fleet.r
	counts := map[string]int{}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		d := r.Decide(clients[i%len(clients)], paths[i%len(paths)])
		if i < len(clients) {
			counts[d.Decision]++
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "decisions/s")
	b.StopTimer()
	reportFleet(b)
	if b.N >= len(clients) {
		for _, k := range []string{"beacon", "relay", "origin"} {
			if counts[k] < len(clients)/4 {
				b.Fatalf("client mix decided %v; want about a third each", counts)
			}
		}
	}
}

// BenchmarkDecideKind decides for one kind of client at a time.
func BenchmarkDecideKind(b *testing.B) {
	buildFleet(b)
	for _, kind := range []string{"beacon", "relay", "origin"} {
		b.Run(kind, func(b *testing.B) {
			clients, paths, r := fleet.byKind[kind], fleet.paths, fleet.r
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				d := r.Decide(clients[i%len(clients)], paths[i%len(paths)])
				if d.Decision != kind {
					b.Fatalf("%s client %s decided %+v", kind, clients[i%len(clients)], d)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "decisions/s")
		})
	}
}

// BenchmarkDecideParallel is the aggregate over GOMAXPROCS goroutines.
func BenchmarkDecideParallel(b *testing.B) {
	buildFleet(b)
	clients, paths, r := fleet.clients, fleet.paths, fleet.r
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := rand.Intn(len(clients))
		for pb.Next() {
			r.Decide(clients[i%len(clients)], paths[i%len(paths)])
			i++
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "decisions/s")
}

// BenchmarkUpsert changes the 1M-node index: a beacon registering for the
// first time, one re-registering unchanged (the steady state), one moving
// to another IP, and a relay replacing its four CIDRs.
func BenchmarkUpsert(b *testing.B) {
	buildFleet(b)
	r := fleet.r
	rng := rand.New(rand.NewSource(7))
	b.Run("new-beacon", func(b *testing.B) {
		nodes := make([]registry.Node, b.N)
		for i := range nodes {
			nodes[i] = registry.Node{ID: randID(rng), Role: protocol.RoleBeacon, LANURL: "http://192.168.1.1:8080", PublicIP: randPublicV4(rng, 1, 224)}
		}
		b.ReportAllocs()
		b.ResetTimer()
		for i := range nodes {
			upsert(r, nodes[i])
		}
		b.StopTimer()
		for i := range nodes {
			r.Remove(nodes[i].ID)
		}
	})
	n := registry.Node{ID: randID(rng), Role: protocol.RoleBeacon, LANURL: "http://192.168.1.1:8080", PublicIP: randPublicV4(rng, 1, 224)}
	upsert(r, n)
	b.Run("refresh-beacon", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			upsert(r, n)
		}
	})
	b.Run("move-beacon", func(b *testing.B) {
		ips := []netip.Addr{randPublicV4(rng, 1, 224), randPublicV4(rng, 1, 224)}
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			n.PublicIP = ips[i%2]
			upsert(r, n)
		}
	})
	r.Remove(n.ID)
	b.Run("relay-4-cidrs", func(b *testing.B) {
		var sets [2][]string
		for i := range sets {
			for j := 0; j < benchCIDRsPerRely; j++ {
				sets[i] = append(sets[i], randRelayNodePrefix(rng).String())
			}
		}
		rl := registry.Node{ID: randID(rng), Role: protocol.RoleRelay, LANURL: "https://relay.example.net"}
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			rl.CIDRs = sets[i%2]
			upsert(r, rl)
		}
		b.StopTimer()
		r.Remove(rl.ID)
	})
}
