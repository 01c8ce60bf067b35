package mcsend

import (
	"bytes"
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/blockcast/beacon/shared/mcproto"
)

// nullPeer is a node whose unicast goes nowhere.
type nullPeer struct {
	id    string
	bytes atomic.Int64
}

func (p *nullPeer) NodeID() string { return p.id }
func (p *nullPeer) Write(b []byte) (int, error) {
	p.bytes.Add(int64(len(b)))
	return len(b), nil
}
func (p *nullPeer) WriteLimited(b []byte) (int, error) { return p.Write(b) }

// FuzzHandle feeds whatever a registered node may send on its DTLS
// session to the repair service: it never panics, and the state it keeps
// stays within its caps.
func FuzzHandle(f *testing.F) {
	snd, err := New(Options{Key: testKey(f, 1), Alloc: testPool(f), Native: &countSink{}, Idle: time.Hour,
		MaxPending: 4, MaxRanges: 8, NackRate: 1e9, NackBurst: 1 << 30})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { snd.Close() })
	obj := testObject(300_000, 2)
	ss, err := snd.Offer(context.Background(), Object{Key: "f", URL: "/f", R: bytes.NewReader(obj), Size: int64(len(obj))})
	if err != nil {
		f.Fatal(err)
	}
	o := mcproto.Object{TSI: ss.Manifest().TSI, TOI: ss.Manifest().TOI}
	j := mcproto.Join{Object: o, EarlyBlocks: 3}
	f.Add(j.AppendTo(nil))
	n := mcproto.Nack{Object: o, Ranges: []mcproto.Range{{SBN: 0, Count: 5, Need: 5}, {SBN: 1, Kind: mcproto.HashChunk, Count: 2, Need: 100}}}
	b, _ := n.AppendTo(nil)
	f.Add(b)
	n.Ranges = []mcproto.Range{{SBN: 1 << 31, First: 65535, Count: 65535, Need: 65535}}
	b, _ = n.AppendTo(nil)
	f.Add(b)
	l := mcproto.Leave{Object: o}
	f.Add(l.AppendTo(nil))
	f.Add(ss.ManifestPacket())
	f.Add([]byte{})
	f.Add([]byte{0xC2, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0xff})
	peers := []*nullPeer{{id: "a"}, {id: "b"}, {id: "c"}}
	f.Fuzz(func(t *testing.T, msg []byte) {
		// The first byte picks the node, so inputs mix nodes.
		p := peers[0]
		if len(msg) > 0 {
			p = peers[int(msg[len(msg)-1])%len(peers)]
		}
		snd.Handle(p, msg)
		ss.mu.Lock()
		defer ss.mu.Unlock()
		for id, m := range ss.members {
			if m.pending < 0 || m.pending > 4 {
				t.Fatalf("node %s has %d blocks pending, cap 4", id, m.pending)
			}
		}
		if len(ss.members) > len(peers) {
			t.Fatalf("%d members from %d nodes", len(ss.members), len(peers))
		}
		for sbn, a := range ss.pending {
			if sbn >= ss.part.N || len(a.nodes) > len(peers) {
				t.Fatalf("pending block %d of %d with %d nodes", sbn, ss.part.N, len(a.nodes))
			}
		}
	})
}
