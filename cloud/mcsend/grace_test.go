package mcsend

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/blockcast/beacon/shared/mcproto"
	"github.com/blockcast/beacon/shared/objrecv"
)

// TestJoinGraceNoEarlyMedia: the beacons a new session was offered to join
// before its first pass and get that pass by multicast, not a copy of its
// first blocks each over unicast (test/mcnet saw ~2% of the object per
// beacon spent so).
func TestJoinGraceNoEarlyMedia(t *testing.T) {
	cast := testKey(t, 1)
	sink := &countSink{}
	snd, err := New(Options{Key: cast, Alloc: testPool(t), Native: sink, JoinGrace: 10 * time.Second, Idle: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer snd.Close()
	obj := testObject(300_000, 5)
	ss, err := snd.Offer(context.Background(), Object{Key: "/g", URL: "/g", R: bytes.NewReader(obj), Size: int64(len(obj))})
	if err != nil {
		t.Fatal(err)
	}
	var out hashWriter
	asm, err := objrecv.New(ss.Manifest(), cast.Public(), &out, objrecv.Config{})
	if err != nil {
		t.Fatal(err)
	}
	peer := &feedPeer{id: "beacon", asm: asm}
	j := mcproto.Join{Object: mcproto.Object{TSI: ss.Manifest().TSI, TOI: ss.Manifest().TOI}, EarlyBlocks: 2}
	snd.Handle(peer, j.AppendTo(nil))
	time.Sleep(200 * time.Millisecond)
	if got := snd.Stats().Bytes[KindEarly]; got != 0 {
		t.Errorf("%d bytes of early media to a beacon that joined before the first pass", got)
	}
	sink.mu.Lock()
	sent := sink.packets
	sink.mu.Unlock()
	if sent != 0 {
		t.Errorf("%d packets on the channel during the join grace", sent)
	}
}
