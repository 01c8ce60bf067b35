package manifest

import (
	"testing"

	"github.com/blockcast/beacon/shared/alc"
)

// BenchmarkCheck is the receiver's per-packet cost: SHA-256 of one full
// symbol (1344 bytes) and a compare. MB/s counts symbol bytes.
func BenchmarkCheck(b *testing.B) {
	obj := object(200*alc.MaxSymbolSize, 1)
	m, lists := build(b, obj, testParams(b), testKey(b, 1))
	sym := symbols(b, m, obj, 0)[17]
	b.SetBytes(int64(len(sym)))
	for range b.N {
		if !lists[0].Check(17, sym) {
			b.Fatal("refused")
		}
	}
}

// BenchmarkHashPartVerify is the cost of checking one hash-part packet
// (leaf hash over 64 digests plus its Merkle path) for a 1 GB-deep tree
// stand-in: the 20 MB object's tree here.
func BenchmarkHashPartVerify(b *testing.B) {
	m, lists := build(b, object(20<<20, 1), testParams(b), testKey(b, 1))
	h := lists[len(lists)/2].Parts()[1]
	b.ReportMetric(float64(len(h.Path)), "path-nodes")
	for range b.N {
		if err := h.Verify(m); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkManifestVerify is one ed25519 verify over the manifest.
func BenchmarkManifestVerify(b *testing.B) {
	key := testKey(b, 1)
	m, _ := build(b, object(1000, 1), testParams(b), key)
	for range b.N {
		if err := m.Verify(key.Public()); err != nil {
			b.Fatal(err)
		}
	}
}
