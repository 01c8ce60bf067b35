package amtgw

import (
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/blockcast/beacon/shared/amt"
)

// benchPayload is 7 MPEG-TS packets, the usual UDP payload of a stream,
// in a 1344-byte inner IPv4 datagram: 1374 bytes on the wire.
const benchPayload = 7 * 188

func benchPacket(b *testing.B) []byte {
	payload := make([]byte, benchPayload)
	for i := range payload {
		payload[i] = byte(i)
	}
	inner, err := amt.AppendInnerUDP(nil, amt.Datagram{Src: ch4.Source, Dst: ch4.Group, SrcPort: 4000, DstPort: 5000, TTL: 64, Payload: payload})
	if err != nil {
		b.Fatal(err)
	}
	return amt.AppendData(nil, inner)
}

func reportRate(b *testing.B, pkts int64, d time.Duration) {
	if d <= 0 {
		return
	}
	rate := float64(pkts) / d.Seconds()
	b.ReportMetric(rate, "pkt/s")
	b.ReportMetric(rate*benchPayload*8/1e6, "Mbit/s")
}

// BenchmarkHandleData is the receive path without the socket: parse the
// Multicast Data, check the channel, count, and queue the datagram for
// one consumer, which takes it off the queue in the same loop (so no
// datagram is dropped and no goroutine switch is measured).
func BenchmarkHandleData(b *testing.B) {
	g, q, done := fuzzGateway(b)
	defer done()
	pkt := benchPacket(b)
	b.SetBytes(benchPayload)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		g.handlePacket(pkt, fuzzRelay)
		select {
		case j := <-q.ready:
			q.free <- j
		default:
			b.Fatal("datagram not delivered")
		}
	}
	reportRate(b, int64(b.N), time.Since(start))
}

// BenchmarkReceive is the whole receive path over loopback: a relay socket
// sends Multicast Data to a running gateway, whose read goroutine parses
// and hands each datagram to a subscriber goroutine. Run it with -cpu=1
// for the one-core figure (sender and gateway then share the core, so the
// gateway's own share is higher). Datagrams lost in the socket buffer are
// reported as loss.
func BenchmarkReceive(b *testing.B) {
	relay := newTestRelay(b, "udp4", "127.0.0.1:0")
	g, _ := startGateway(b, fastOptions(b, Static{{Addr: relay.addr}}))
	var got atomic.Int64
	progress := make(chan struct{}, 1)
	defer g.Subscribe(func(Channel, amt.Datagram) {
		got.Add(1)
		select {
		case progress <- struct{}{}:
		default:
		}
	})()
	if err := g.Join(ch4, netip.AddrPort{}, false); err != nil {
		b.Fatal(err)
	}
	waitFor(b, 2*time.Second, "membership", func() bool { _, ok := relay.member(ch4); return ok })
	gw, _ := relay.member(ch4)
	pkt := benchPacket(b)
	relay.mu.Lock()
	conn := relay.conn
	relay.mu.Unlock()
	// Keep the number in flight below what the socket buffer holds, and
	// block (not spin) while the gateway catches up.
	const window = 128
	stall := time.NewTimer(time.Hour)
	b.SetBytes(benchPayload)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	sent, lost := 0, 0
	for got.Load() < int64(b.N) {
		if sent < b.N && int64(sent)-got.Load() < window {
			if _, err := conn.WriteToUDPAddrPort(pkt, gw); err != nil {
				b.Fatal(err)
			}
			sent++
			continue
		}
		stall.Reset(20 * time.Millisecond)
		select {
		case <-progress:
			stall.Stop()
		case <-stall.C:
			// Nothing arrived for 20 ms: the rest in flight was lost.
			if sent >= b.N {
				goto out
			}
			sent -= window / 2 // let the sender go on
			lost += window / 2
		}
	}
out:
	elapsed := time.Since(start)
	b.StopTimer()
	reportRate(b, got.Load(), elapsed)
	b.ReportMetric(100*float64(int64(b.N)-got.Load()+int64(lost))/float64(b.N+lost), "%loss")
}
