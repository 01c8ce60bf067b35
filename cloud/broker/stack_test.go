package broker

import (
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/blockcast/beacon/cloud/broker/brokertest"
	"github.com/blockcast/beacon/shared/ctrlmsg"
	"github.com/blockcast/beacon/shared/identity"
)

// TestConnStacksSurviveGC guards handshakeConn.Read: after a GC the
// goroutines serving reporting nodes keep their stacks, rather than having
// them halved only for the next report to grow them back. It fails when a
// mochi upgrade changes the depth of its packet handling past what restPad
// covers.
func TestConnStacksSurviveGC(t *testing.T) {
	if testing.Short() {
		t.Skip("connects 200 clients")
	}
	const n = 200
	keys := make([]*identity.Keypair, n)
	ids := make([]string, n)
	for i := range keys {
		keys[i] = newKey(t)
		ids[i] = keys[i].ID()
	}
	b := startBroker(t, Options{Known: knownSet(ids...), MaxClients: n + 10})
	bus := b.Bus()
	defer bus.Close()
	// What castd's monitor does with a report, so that the goroutines'
	// stacks reach the depth they have in castd.
	var got, bad atomic.Int64
	err := bus.Subscribe(ctrlmsg.Filter(ctrlmsg.LeafHealth), func(topic string, payload []byte, _ bool) {
		m, err := ctrlmsg.Open(payload, topic, nil, time.Minute, time.Now(), nil)
		if err == nil {
			_, err = m.Health()
		}
		if err != nil {
			bad.Add(1)
		}
		got.Add(1)
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, kp := range keys {
		tok, err := ctrlmsg.MakeToken(kp, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		c, err := brokertest.DialRaw(b.Addr(), kp.ID(), kp.ID(), tok, 60, nil, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		topic := ctrlmsg.Topic(kp.ID(), ctrlmsg.LeafHealth)
		p, err := ctrlmsg.Seal(kp, topic, ctrlmsg.KindHealth, ctrlmsg.Health{Version: "1.0.0", Load: 0.25, PublicIP: "198.51.100.23"}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Publish(topic, p, 0, false); err != nil {
			t.Fatal(err)
		}
	}
	for deadline := time.Now().Add(10 * time.Second); got.Load() < n; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d reports arrived", got.Load(), n)
		}
	}
	if bad.Load() != 0 {
		t.Fatalf("%d reports did not open", bad.Load())
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	runtime.GC()
	runtime.ReadMemStats(&after)
	t.Logf("stacks in use: %d KiB before a GC, %d KiB after (%d clients)", before.StackInuse>>10, after.StackInuse>>10, n)
	if after.StackInuse < before.StackInuse*9/10 {
		t.Errorf("a GC shrank stacks from %d to %d KiB: the connections' goroutines rest below a quarter of their working stack", before.StackInuse>>10, after.StackInuse>>10)
	}
}
