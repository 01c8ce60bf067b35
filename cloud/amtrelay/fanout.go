package amtrelay

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"github.com/blockcast/beacon/shared/amt"
	"golang.org/x/net/ipv4"
)

// dest is one gateway as the data path sends to it.
type dest struct {
	addr *net.UDPAddr // built once: x/net marshals it per message
	oob  []byte       // source address control message, or nil
}

// fanGroup is a channel's gateways reached through one socket.
type fanGroup struct {
	c     *conn
	dests []dest
}

// fanEntry is one channel's fan-out list. Immutable once published.
type fanEntry struct {
	groups []fanGroup
}

// index maps channels to fan-out lists. Immutable once published: the
// control path builds a new one and swaps the pointer.
type index struct {
	m map[amt.Channel]*fanEntry
}

// fanScratch is per-call scratch of the data path, pooled.
type fanScratch struct {
	pkt  []byte
	bufs [][]byte
	ms   []ipv4.Message
}

func newFanScratch(batch int) *fanScratch {
	return &fanScratch{
		pkt:  make([]byte, 0, 2048),
		bufs: make([][]byte, 1),
		ms:   make([]ipv4.Message, batch),
	}
}

// Inject relays inner, a whole IPv4 or IPv6 UDP datagram to an SSM group
// (amt.AppendInnerUDP builds one), to every gateway joined to its (S,G). It
// is safe for concurrent use and returns once every copy is handed to the
// kernel. A datagram nobody joined is counted and dropped without error.
func (r *Relay) Inject(inner []byte) error {
	if r.closed.Load() {
		return ErrClosed
	}
	if len(inner)+amt.DataHeaderLen > maxDatagram {
		return fmt.Errorf("%w: %d bytes", ErrTooBig, len(inner))
	}
	d, err := amt.ParseInnerUDP(inner)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrDatagram, err)
	}
	return r.forward(inner, d.Channel())
}

// forwardNative relays a datagram received by native multicast.
func (r *Relay) forwardNative(inner []byte) {
	d, err := amt.ParseInnerUDP(inner)
	if err != nil {
		r.refuse(reasonBadDatagram, netip.AddrPort{})
		return
	}
	if err := r.forward(inner, d.Channel()); err != nil && !errors.Is(err, ErrClosed) {
		r.log.Debug("native forward failed", "channel", d.Channel(), "err", err)
	}
}

// forward encapsulates inner once and sends it to ch's gateways.
func (r *Relay) forward(inner []byte, ch amt.Channel) error {
	r.stats.packetsIn.Add(1)
	r.stats.bytesIn.Add(uint64(len(inner)))
	e := r.index.Load().m[ch]
	if e == nil {
		r.stats.noReceiver.Add(1)
		return nil
	}
	s := r.scratch.Get().(*fanScratch)
	defer r.scratch.Put(s)
	s.pkt = amt.AppendData(s.pkt[:0], inner)
	s.bufs[0] = s.pkt
	var firstErr error
	for _, g := range e.groups {
		if err := r.sendGroup(g, s); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	return firstErr
}

// sendGroup sends s.pkt to g's gateways, len(s.ms) per sendmmsg.
func (r *Relay) sendGroup(g fanGroup, s *fanScratch) error {
	var sent, failed uint64
	defer func() {
		r.stats.packetsOut.Add(sent)
		r.stats.bytesOut.Add(sent * uint64(len(s.pkt)))
	}()
	for ds := g.dests; len(ds) > 0; {
		n := min(len(ds), len(s.ms))
		ms := s.ms[:n]
		for i := range ms {
			ms[i].Buffers, ms[i].Addr, ms[i].OOB = s.bufs, ds[i].addr, ds[i].oob
		}
		for done := 0; done < n; {
			k, err := g.c.writeBatch(ms[done:])
			done += k
			sent += uint64(k)
			if err == nil {
				continue
			}
			if errors.Is(err, net.ErrClosed) {
				return ErrClosed
			}
			// sendmmsg failed on message done: count it, skip it.
			if errors.Is(err, syscall.EMSGSIZE) {
				r.refuse(reasonTooBig, ds[done].addr.AddrPort())
			} else {
				r.refuse(reasonSendError, ds[done].addr.AddrPort())
			}
			if failed++; failed == 1 {
				r.log.Debug("send failed", "gateway", ds[done].addr, "err", err)
			}
			done++
		}
		ds = ds[n:]
	}
	return nil
}
