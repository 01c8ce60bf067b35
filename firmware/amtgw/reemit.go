package amtgw

import (
	"encoding/binary"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/blockcast/beacon/shared/amt"
)

// reemitter sends received datagrams out of a LAN interface as native
// multicast. It has its own queue and goroutine, so a slow interface never
// holds up the receive path.
type reemitter struct {
	iface string
	conn  rawConn
	ttl   uint8
	q     *queue
	log   *slog.Logger
	addrs map[netip.Addr]*net.IPAddr // per group, reused: only run() uses it

	sent, ttlExpired, errors atomic.Uint64
	mu                       sync.Mutex
	lastErr                  string
}

// rawConn writes whole IPv4 datagrams, header included.
type rawConn interface {
	WriteToIP(b []byte, addr *net.IPAddr) (int, error)
	Close() error
}

func newReemitterOn(iface string, conn rawConn, ttl uint8, qlen, size int, log *slog.Logger) *reemitter {
	r := &reemitter{iface: iface, conn: conn, ttl: ttl, log: log, addrs: map[netip.Addr]*net.IPAddr{}}
	r.q = newQueue(qlen, size, r.send)
	return r
}

// send re-emits one datagram from its queue slot, which it may modify.
func (r *reemitter) send(d *amt.Datagram, pkt []byte) {
	if len(pkt) < 20 || pkt[0]>>4 != 4 {
		return // Join refuses IPv6 channels for re-emission
	}
	ihl := int(pkt[0]&0x0f) * 4
	switch {
	case r.ttl != 0:
		pkt[8] = r.ttl
	case pkt[8] <= 1:
		// A router does not forward a datagram whose TTL runs out.
		r.ttlExpired.Add(1)
		return
	default:
		pkt[8]--
	}
	// The kernel fills in the checksum of an IP_HDRINCL datagram on Linux;
	// set it anyway so that the bytes are right wherever they go.
	pkt[10], pkt[11] = 0, 0
	binary.BigEndian.PutUint16(pkt[10:], ipChecksum(pkt[:ihl]))
	addr := r.addrs[d.Dst]
	if addr == nil {
		addr = &net.IPAddr{IP: d.Dst.AsSlice()}
		r.addrs[d.Dst] = addr
	}
	if _, err := r.conn.WriteToIP(pkt, addr); err != nil {
		if r.errors.Add(1) == 1 {
			r.log.Warn("amtgw: re-emission failed", "interface", r.iface, "err", err)
		}
		r.mu.Lock()
		r.lastErr = err.Error()
		r.mu.Unlock()
		return
	}
	r.sent.Add(1)
}

func (r *reemitter) close() { r.conn.Close() }

func (r *reemitter) state() *ReemitState {
	r.mu.Lock()
	defer r.mu.Unlock()
	return &ReemitState{
		Interface:  r.iface,
		Sent:       r.sent.Load(),
		Dropped:    r.q.drops.Load() + r.q.oversize.Load(),
		TTLExpired: r.ttlExpired.Load(),
		Errors:     r.errors.Load(),
		LastError:  r.lastErr,
	}
}

// ipChecksum is the Internet checksum (RFC 1071) of an IPv4 header.
func ipChecksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}
