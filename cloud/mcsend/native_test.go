package mcsend

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/ipv4"

	"github.com/blockcast/beacon/cloud/channels"
	"github.com/blockcast/beacon/shared/manifest"
	"github.com/blockcast/beacon/shared/mcproto"
	"github.com/blockcast/beacon/shared/objrecv"
	"github.com/blockcast/beacon/test/harness/netns"
)

// The native sink on a real segment: castd's namespace and a beacon's
// joined by a veth pair; the sender sends on castd's interface, the
// beacon joins (S,G) there by IGMPv3 source-specific join and gets the
// whole object, every datagram from S.
func TestNativeSinkOnSegment(t *testing.T) {
	cns, bns := netns.Segment(t, "mcs")
	var sink *UDPSink
	if err := cns.Do(func() error { var err error; sink, err = NativeSink("seg0", 1); return err }); err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	src := netip.MustParseAddr("10.77.0.1")
	if got := sink.Sources(); len(got) != 1 || got[0] != src {
		t.Fatalf("sources %v, want [%v]", got, src)
	}
	// A channel whose source is not the sink's address is refused.
	bad, _ := manifest.ChannelOf("10.77.0.9", "232.9.0.1", 5001)
	if err := sink.Send(bad, []byte{0x10}); !errors.Is(err, ErrSource) {
		t.Errorf("send from a foreign source: %v, want ErrSource", err)
	}

	ranges, _ := channels.ParseRanges("232.9.0.0/24")
	pool, err := channels.New(channels.Options{Ranges: ranges, Sources: sink.Sources()})
	if err != nil {
		t.Fatal(err)
	}
	sh, _ := channels.NewShaper(20e6, 0, 0, time.Now())
	cast := testKey(t, 1)
	snd, err := New(Options{Key: cast, Alloc: pool, Shaper: sh, Native: sink, Idle: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer snd.Close()
	// The beacon joins the channel the offer names, so the carousel has
	// started when it does: it catches up by NACK.
	obj := testObject(900_000, 6)
	ss, err := snd.Offer(context.Background(), Object{Key: "/native", URL: "/native", R: bytes.NewReader(obj), Size: int64(len(obj))})
	if err != nil {
		t.Fatal(err)
	}
	ch := ss.Channel()
	if ch.Source != src {
		t.Fatalf("channel source %v, want the sink's %v", ch.Source, src)
	}
	var conn *net.UDPConn
	if err := bns.Do(func() error {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4zero, Port: int(ch.Port)})
		if err != nil {
			return err
		}
		conn = c
		ifi, err := net.InterfaceByName("seg1")
		if err != nil {
			return err
		}
		return ipv4.NewPacketConn(c).JoinSourceSpecificGroup(ifi, &net.UDPAddr{IP: ch.Group.AsSlice()}, &net.UDPAddr{IP: ch.Source.AsSlice()})
	}); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	var out hashWriter
	asm, err := objrecv.New(ss.Manifest(), cast.Public(), &out, objrecv.Config{})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer conn.Close()
	var foreign int
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 2048)
		for {
			n, from, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if from.Addr().Unmap() != src {
				foreign++
				continue
			}
			asm.Feed(buf[:n], "multicast")
		}
	}()
	peer := &feedPeer{id: "beacon", asm: asm}
	o := mcproto.Object{TSI: ss.Manifest().TSI, TOI: ss.Manifest().TOI}
	j := mcproto.Join{Object: o}
	snd.Handle(peer, j.AppendTo(nil))
	last := time.Now()
	waitFor(t, "the object on the segment", func() bool {
		if time.Since(last) > 300*time.Millisecond {
			n := mcproto.Nack{Object: o}
			for _, m := range asm.Missing(32) {
				n.Ranges = append(n.Ranges, mcproto.Range{SBN: m.SBN, Kind: mcproto.Kind(m.Kind), First: m.First, Count: m.Count, Need: m.Need})
			}
			if b, err := n.AppendTo(nil); err == nil && len(n.Ranges) > 0 {
				snd.Handle(peer, b)
			}
			last = time.Now()
		}
		time.Sleep(10 * time.Millisecond)
		return asm.Done()
	})
	conn.Close()
	wg.Wait()
	if out.n != len(obj) || out.sum() != sha256.Sum256(obj) {
		t.Fatal("object on the segment differs")
	}
	st := asm.Stats()
	if st.Bytes["multicast"] < uint64(len(obj))/2 || foreign != 0 {
		t.Errorf("multicast %d bytes, %d datagrams from another source: %+v", st.Bytes["multicast"], foreign, st)
	}
	t.Logf("assembler %+v", st)
}

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
