package registry

import (
	"fmt"
	"math/rand"
	"net/netip"
	"path/filepath"
	"sort"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mr-tron/base58"
)

func randNodes(rng *rand.Rand, n int) []Node {
	nodes := make([]Node, n)
	var k [32]byte
	for i := range nodes {
		rng.Read(k[:])
		nodes[i] = Node{
			ID: base58.Encode(k[:]), Role: "beacon",
			LANURL:       fmt.Sprintf("http://192.168.%d.%d:8080", rng.Intn(256), 1+rng.Intn(254)),
			Version:      "0.3.1",
			Capabilities: []string{"amt", "cache"},
			PublicIP:     netip.AddrFrom4([4]byte{byte(1 + rng.Intn(223)), byte(rng.Intn(256)), byte(rng.Intn(256)), byte(rng.Intn(256))}),
			LastSeen:     t0,
		}
	}
	return nodes
}

// BenchmarkBulkLoad imports b.N new nodes in batches of 10,000, as a fleet
// import would; -benchtime=1000000x loads a million. It also reports how
// long reopening the loaded file takes (castd's start).
func BenchmarkBulkLoad(b *testing.B) {
	const batch = 10_000
	nodes := randNodes(rand.New(rand.NewSource(1)), b.N)
	// As the UpsertBatch documentation advises for an import.
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].ID < nodes[j].ID })
	path := filepath.Join(b.TempDir(), "registry.db")
	r := open(b, path)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < len(nodes); i += batch {
		if err := r.UpsertBatch(nodes[i:min(i+batch, len(nodes))], false); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "nodes/s")
	if r.Len() != b.N {
		b.Fatalf("Len %d, want %d", r.Len(), b.N)
	}
	r.Close()
	start := time.Now()
	r = open(b, path)
	b.ReportMetric(float64(time.Since(start).Milliseconds()), "reopen-ms")
	start = time.Now()
	n := 0
	if err := r.ForEach(func(Node) error { n++; return nil }); err != nil || n != b.N {
		b.Fatalf("ForEach: %d nodes, %v", n, err)
	}
	b.ReportMetric(float64(time.Since(start).Milliseconds()), "foreach-ms")
	r.Close()
}

// BenchmarkUpsertParallel is registrations arriving concurrently, as
// they do from HTTP handlers, into a registry of 100,000 nodes: Upsert
// coalesces them into shared commits.
func BenchmarkUpsertParallel(b *testing.B) {
	nodes := randNodes(rand.New(rand.NewSource(2)), 100_000)
	r, _ := tempRegistry(b)
	sorted := append([]Node(nil), nodes...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].ID < sorted[j].ID })
	for i := 0; i < len(sorted); i += 10_000 {
		if err := r.UpsertBatch(sorted[i:i+10_000], false); err != nil {
			b.Fatal(err)
		}
	}
	var next atomic.Int64
	b.SetParallelism(64) // many clients per CPU
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := next.Add(1)
			n := nodes[i%int64(len(nodes))]
			n.LastSeen = t0.Add(time.Duration(i) * time.Second)
			if _, err := r.Upsert(n, false); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "registrations/s")
}
