package mcsend

import (
	"bytes"
	"context"
	"crypto/sha256"
	"log/slog"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/blockcast/beacon/cloud/amtrelay"
	"github.com/blockcast/beacon/cloud/channels"
	"github.com/blockcast/beacon/firmware/amtgw"
	"github.com/blockcast/beacon/shared/amt"
	"github.com/blockcast/beacon/shared/mcproto"
	"github.com/blockcast/beacon/shared/objrecv"
)

// feedPeer is a node whose unicast goes straight into its assembler.
type feedPeer struct {
	id  string
	mu  sync.Mutex
	asm *objrecv.Assembler
}

func (p *feedPeer) NodeID() string              { return p.id }
func (p *feedPeer) Write(b []byte) (int, error) { return len(b), nil }
func (p *feedPeer) WriteLimited(b []byte) (int, error) {
	p.asm.Feed(b, "repair")
	return len(b), nil
}

// The sender's AMT sink into a real AMT relay on loopback, a real AMT
// gateway (the beacon's) joined to the channel: the object arrives whole
// through the tunnel, every packet checked by the beacon's assembler.
func TestAMTSinkThroughRelayAndGateway(t *testing.T) {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	relay, err := amtrelay.New(amtrelay.Options{Listen: "127.0.0.1:0", Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	defer relay.Close()
	wg.Add(1)
	go func() { defer wg.Done(); relay.Run(ctx) }()

	ranges, _ := channels.ParseRanges("232.7.0.0/24")
	pool, err := channels.New(channels.Options{Ranges: ranges, Sources: []netip.Addr{netip.MustParseAddr("127.0.0.1")}})
	if err != nil {
		t.Fatal(err)
	}
	sh, _ := channels.NewShaper(20e6, 0, 0, time.Now())
	cast := testKey(t, 1)
	snd, err := New(Options{Key: cast, Alloc: pool, Shaper: sh, AMT: AMTSink(relay.Inject), Log: log, Idle: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer snd.Close()
	obj := testObject(700_000, 4)
	ss, err := snd.Offer(ctx, Object{Key: "/amt", URL: "/amt", R: bytes.NewReader(obj), Size: int64(len(obj))})
	if err != nil {
		t.Fatal(err)
	}

	var out hashWriter
	asm, err := objrecv.New(ss.Manifest(), cast.Public(), &out, objrecv.Config{})
	if err != nil {
		t.Fatal(err)
	}
	gw, err := amtgw.New(amtgw.Options{Logger: log, LocalAddr: "127.0.0.1:0", QueueLen: 1024})
	if err != nil {
		t.Fatal(err)
	}
	ch := amt.Channel{Source: ss.Channel().Source, Group: ss.Channel().Group}
	stop := gw.Subscribe(func(c amtgw.Channel, d amt.Datagram) {
		if c == ch && d.DstPort == ss.Channel().Port {
			asm.Feed(d.Payload, "multicast")
		}
	})
	defer stop()
	if err := gw.Join(ch, netip.MustParseAddrPort(relay.Addr().String()), false); err != nil {
		t.Fatal(err)
	}
	wg.Add(1)
	go func() { defer wg.Done(); gw.Run(ctx) }()
	waitFor(t, "the gateway's tunnel", func() bool {
		for _, c := range gw.State().Channels {
			if c.Channel() == ch && c.Status == amtgw.StatusJoined {
				return true
			}
		}
		return false
	})
	// The beacon joins the session: what the carousel sent before the
	// tunnel was up comes by NACK (or, when it joined after the pass, by
	// a second pass through the tunnel).
	peer := &feedPeer{id: "beacon", asm: asm}
	o := mcproto.Object{TSI: ss.Manifest().TSI, TOI: ss.Manifest().TOI}
	j := mcproto.Join{Object: o}
	snd.Handle(peer, j.AppendTo(nil))
	last := time.Now()
	waitFor(t, "the object through AMT", func() bool {
		if time.Since(last) > 300*time.Millisecond {
			// What a loaded loopback dropped, by NACK.
			n := mcproto.Nack{Object: o}
			for _, m := range asm.Missing(32) {
				n.Ranges = append(n.Ranges, mcproto.Range{SBN: m.SBN, Kind: mcproto.Kind(m.Kind), First: m.First, Count: m.Count, Need: m.Need})
			}
			if b, err := n.AppendTo(nil); err == nil && len(n.Ranges) > 0 {
				snd.Handle(peer, b)
			}
			last = time.Now()
		}
		if asm.Done() {
			return true
		}
		time.Sleep(20 * time.Millisecond)
		return false
	})
	if out.n != len(obj) || out.sum() != sha256.Sum256(obj) {
		t.Fatal("object through AMT differs")
	}
	st := asm.Stats()
	if st.Bytes["multicast"] < uint64(len(obj))/2 {
		t.Errorf("only %d bytes came through the tunnel: %+v", st.Bytes["multicast"], st)
	}
	if rs := relay.Stats(); rs.PacketsIn == 0 {
		t.Errorf("relay stats %+v: nothing injected", rs)
	}
	t.Logf("assembler %+v; sender %+v", st, snd.Stats())
}
