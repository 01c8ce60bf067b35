package castd

import (
	"bytes"
	"net"
	"testing"
	"time"

	"golang.org/x/net/ipv4"

	"github.com/blockcast/beacon/shared/alc"
	"github.com/blockcast/beacon/shared/manifest"
	"github.com/blockcast/beacon/shared/mcproto"
	"github.com/blockcast/beacon/shared/objrecv"
	"github.com/blockcast/beacon/test/harness"
	"github.com/blockcast/beacon/test/harness/netns"
)

// TestMulticastNativeIface: castd with --multicast-iface on a real segment
// (its namespace and a beacon's, joined by a veth pair) offers channels
// whose SSM source is the interface's address, and the object's packets
// reach a beacon that joined (S,G) there, from S, each one passing the
// offered manifest's check.
func TestMulticastNativeIface(t *testing.T) {
	cns, bns := netns.Segment(t, "mcc")
	// New opens the native sink's sockets; made in castd's namespace they
	// stay there. The rest of castd listens on loopback outside.
	e := newMCEnvIn(t, func(o *Options) {
		o.MulticastIface, o.MulticastSources, o.AMTListen = "seg0", nil, ""
		o.MulticastPaths = []string{"/*"}
	}, cns.Do)
	kp := e.beacon(t)
	resp, body := e.get(t, kp, "/native.bin", multicastHdr...)
	if !e.isOffer(t, "/native.bin", resp, body) {
		t.Fatal("no offer")
	}
	o, _ := mcproto.DecodeOffer(bytes.NewReader(body))
	m := offerManifest(t, o, e.s.key.Public())
	if m.Channel.Source.String() != "10.77.0.1" || o.AMTRelay != "" {
		t.Fatalf("channel %v, AMT relay %q: want the interface's address as S and no relay", m.Channel, o.AMTRelay)
	}
	var conn *net.UDPConn
	if err := bns.Do(func() error {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4zero, Port: int(m.Channel.Port)})
		if err != nil {
			return err
		}
		conn = c
		ifi, err := net.InterfaceByName("seg1")
		if err != nil {
			return err
		}
		return ipv4.NewPacketConn(c).JoinSourceSpecificGroup(ifi, &net.UDPAddr{IP: m.Channel.Group.AsSlice()}, &net.UDPAddr{IP: m.Channel.Source.AsSlice()})
	}); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	asm, err := objrecv.New(m, e.s.key.Public(), &bytes.Buffer{}, objrecv.Config{})
	if err != nil {
		t.Fatal(err)
	}
	// Keep the session going: it sends passes while a beacon is joined.
	if !harness.WaitFor(10*time.Second, func() bool {
		buf := make([]byte, 2048)
		conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		for {
			n, from, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				break
			}
			if from.Addr().Unmap() != m.Channel.Source {
				t.Fatalf("packet from %v, not the channel's source", from)
			}
			if p, err := decodeTOI(buf[:n]); err == nil && p == manifest.ManifestTOI {
				continue
			}
			asm.Feed(buf[:n], "multicast")
		}
		return asm.Stats().Packets["multicast"] > 50
	}) {
		t.Fatalf("few packets on the segment: %+v", asm.Stats())
	}
	if st := asm.Stats(); len(st.Rejected) > 0 {
		t.Errorf("packets rejected: %v", st.Rejected)
	}
}

// decodeTOI returns an ALC packet's TOI.
func decodeTOI(b []byte) (uint64, error) {
	p, err := alc.Decode(b)
	if err != nil {
		return 0, err
	}
	return p.TOI, nil
}
