package amtrelay

import (
	"crypto/subtle"
	"errors"
	"net"
	"net/netip"
	"time"

	"github.com/blockcast/beacon/shared/amt"
)

// maxDatagram is the largest UDP payload; reads use a buffer one larger so
// that nothing is silently truncated.
const maxDatagram = 65535 - 8

// mldQuerySource is the source of encapsulated MLDv2 queries: RFC 3810
// §5.1.14 has hosts ignore queries from anything but a link-local address,
// and a tunnel's pseudo-interface has none of its own, so a fixed one does.
var mldQuerySource = netip.MustParseAddr("fe80::1")

// serve reads and answers control messages on c until it is closed.
func (r *Relay) serve(c *conn) error {
	buf := make([]byte, maxDatagram+1)
	out := make([]byte, 0, 256)
	for {
		n, src, dst, ifIndex, err := c.read(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) || r.closed.Load() {
				return ErrClosed
			}
			// Unconnected UDP sockets report no lasting errors; log and
			// carry on rather than stop serving.
			r.log.Debug("read failed", "err", err)
			continue
		}
		reply := r.handle(c, buf[:n], out[:0], src, dst, ifIndex, time.Now())
		if len(reply) == 0 {
			continue
		}
		if err := c.reply(reply, src, dst); err != nil {
			r.refuse(reasonSendError, src)
			r.log.Debug("reply failed", "gateway", src, "err", err)
		}
	}
}

// handle processes one datagram from src (sent to the relay's local address
// dst on interface ifIndex) and returns the reply to send, appended to out,
// or nothing. Nothing in it allocates state unless an Update or Teardown
// authenticates.
func (r *Relay) handle(c *conn, b, out []byte, src netip.AddrPort, dst netip.Addr, ifIndex int, now time.Time) []byte {
	r.stats.controlIn.Add(1)
	if !src.IsValid() || src.Port() == 0 || src.Addr().IsUnspecified() || src.Addr().IsMulticast() {
		r.refuse(reasonMalformed, netip.AddrPort{})
		return nil
	}
	if len(b) > maxDatagram {
		r.refuse(reasonMalformed, src)
		return nil
	}
	// Lenient decoding: reserved bits, a 9-byte Request (VLC) and reports
	// without Router Alert or to the group address are accepted.
	msg, err := amt.Parse(b)
	if err != nil {
		r.refuse(reasonMalformed, src)
		r.log.Debug("malformed message", "gateway", src, "err", err)
		return nil
	}
	switch m := msg.(type) {
	case *amt.RelayDiscovery:
		if !r.limiter.Allow(src.Addr(), now) {
			r.refuse(reasonRateLimited, src)
			return nil
		}
		return r.advertise(c, out, m, src, dst, ifIndex)
	case *amt.Request:
		if !r.limiter.Allow(src.Addr(), now) {
			r.refuse(reasonRateLimited, src)
			return nil
		}
		return r.query(out, m, src, dst)
	case *amt.MembershipUpdate:
		r.update(c, m, src, dst, now)
	case *amt.Teardown:
		r.teardown(m, src)
	default:
		r.refuse(reasonUnexpected, src)
	}
	return nil
}

// advertise answers a Relay Discovery (RFC 7450 §5.3).
func (r *Relay) advertise(c *conn, out []byte, m *amt.RelayDiscovery, src netip.AddrPort, dst netip.Addr, ifIndex int) []byte {
	addr := r.opts.Advertise
	if !addr.IsValid() || addr.Is6() != c.is6 {
		addr = c.localAddrFor(dst, ifIndex)
	}
	out, err := amt.RelayAdvertisement{Nonce: m.Nonce, Relay: addr}.AppendTo(out)
	if err != nil {
		// Summarised like every refusal: discoveries are unauthenticated
		// and may be many.
		r.refuse(reasonNoAddress, src)
		r.log.Debug("no relay address to advertise; set Options.Advertise", "local", dst, "err", err)
		return nil
	}
	r.stats.advertisements.Add(1)
	return out
}

// query answers a Request with a Membership Query carrying the response
// MAC for src and the nonce (RFC 7450 §5.3). It keeps no state.
func (r *Relay) query(out []byte, m *amt.Request, src netip.AddrPort, dst netip.Addr) []byte {
	r.mu.Lock()
	_, known := r.tab.tunnels[src]
	full := len(r.tab.tunnels) >= r.opts.MaxGateways
	r.mu.Unlock()

	q := amt.Query{
		QRV:  uint8(r.opts.Robustness),
		QQIC: amt.EncodeCode8(uint32(max(1, (r.opts.QueryInterval+time.Second/2)/time.Second))),
	}
	var qsrc netip.Addr
	if m.IPv6 {
		q.MaxRespCode = amt.EncodeCode16(uint32(r.opts.QueryResponseInterval / time.Millisecond))
		qsrc = mldQuerySource
	} else {
		q.MaxRespCode = uint16(amt.EncodeCode8(uint32(r.opts.QueryResponseInterval / (100 * time.Millisecond))))
		switch {
		case dst.Is4():
			qsrc = dst
		case r.opts.Advertise.Is4():
			qsrc = r.opts.Advertise
		default:
			qsrc = netip.IPv4Unspecified()
		}
	}
	var buf [128]byte
	pkt, err := amt.AppendQueryPacket(buf[:0], qsrc, q)
	if err != nil {
		r.log.Error("building query", "err", err)
		return nil
	}
	mq := amt.MembershipQuery{
		// L: not accepting new gateways. A gateway with a tunnel is
		// never told so, or it would leave a relay that serves it.
		Limit: full && !known,
		MAC:   r.keys.Load().mac(src, m.Nonce),
		Nonce: m.Nonce,
		Query: pkt,
	}
	if r.opts.SendGatewayAddr {
		mq.Gateway = src
	}
	out, err = mq.AppendTo(out)
	if err != nil {
		r.log.Error("building query", "err", err)
		return nil
	}
	r.stats.queries.Add(1)
	return out
}

// authentic reports whether mac and nonce authenticate gw: the pinned pair
// of gw's live tunnel, or a MAC under the current or previous secret.
// r.mu is held.
func (r *Relay) authentic(t *tunnel, gw netip.AddrPort, nonce uint32, mac [6]byte) bool {
	if t != nil && t.nonce == nonce && subtle.ConstantTimeCompare(t.mac[:], mac[:]) == 1 {
		return true
	}
	return r.keys.Load().verify(gw, nonce, mac, r.opts.CiscoMACQuirk)
}

// update processes a Membership Update (RFC 7450 §5.3): nothing
// happens unless its MAC and nonce match those of a Query sent to src.
func (r *Relay) update(c *conn, m *amt.MembershipUpdate, src netip.AddrPort, dst netip.Addr, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	t := r.tab.tunnels[src]
	if !r.authentic(t, src, m.Nonce, m.MAC) {
		r.refuse(reasonBadMAC, src)
		r.log.Debug("update with bad MAC or nonce dropped", "gateway", src)
		return
	}
	rp, err := amt.ParseReportPacket(m.Report)
	if err != nil {
		r.refuse(reasonMalformed, src)
		r.log.Debug("malformed report", "gateway", src, "err", err)
		return
	}
	if t == nil {
		// A tunnel exists only while it has channels: an Update that joins
		// nothing (a leave, a report of non-SSM groups, one sent after a
		// Teardown) is processed against a tunnel that is never stored, so
		// it holds no gateway slot and no memory.
		t = &tunnel{key: src, c: c, created: now, chans: make(map[amt.Channel]time.Time)}
		if joinsAny(rp.Records) {
			if len(r.tab.tunnels) >= r.opts.MaxGateways {
				r.refuse(reasonGatewayLimit, src)
				return
			}
			r.tab.tunnels[src] = t
			r.log.Debug("tunnel created", "gateway", src)
		}
	}
	if t.dst.addr == nil || t.local != dst {
		// Data leaves from the address the gateway now talks to.
		t.local = dst
		t.dst = dest{addr: udpAddr(src), oob: c.sourceOOB(dst)}
		for ch := range t.chans {
			r.tab.dirty[ch] = struct{}{}
		}
	}
	t.nonce, t.mac, t.lastUpdate = m.Nonce, m.MAC, now
	r.stats.updates.Add(1)
	r.applyRecords(t, rp.Records, now)
	if len(t.chans) == 0 && r.tab.tunnels[src] == t {
		// Left everything (or every join was refused): in RFC 7450 a
		// gateway leaves with an Update that removes its sources, and the
		// tunnel only carries its memberships, so release the slot now
		// rather than after the membership interval. A gateway that joins
		// again gets a new tunnel from its next authenticated Update.
		r.removeTunnel(t)
		r.log.Debug("tunnel released: no channels left", "gateway", src)
	}
	r.publish()
}

// joinsAny reports whether recs ask for at least one (S,G) that
// applyRecords would try to join: an INCLUDE, ALLOW or TO_IN record of an
// SSM group with a usable source. It decides whether a new gateway needs a
// tunnel, so it must not be narrower than applyRecords.
func joinsAny(recs []amt.GroupRecord) bool {
	for _, rec := range recs {
		g := rec.Group.Unmap()
		switch rec.Type {
		case amt.ModeIsInclude, amt.AllowNewSources, amt.ChangeToInclude:
		default:
			continue
		}
		if !amt.IsSSM(g) {
			continue
		}
		for _, s := range rec.Sources {
			if usableSource(s.Unmap(), g) {
				return true
			}
		}
	}
	return false
}

// usableSource: s can be the source of an SSM channel of group g.
func usableSource(s, g netip.Addr) bool {
	return s.IsValid() && !s.IsUnspecified() && !s.IsMulticast() && s.Is4() == g.Is4()
}

// applyRecords applies a report's records to t. r.mu is held.
func (r *Relay) applyRecords(t *tunnel, recs []amt.GroupRecord, now time.Time) {
	expires := now.Add(r.gmi)
	var toIn map[netip.Addr][]netip.Addr // TO_IN records, applied last
	for _, rec := range recs {
		g := rec.Group.Unmap()
		switch {
		case !rec.Type.Known():
			continue // RFC 3376 §4.2.12: ignore unknown record types
		case rec.Type == amt.ModeIsExclude || rec.Type == amt.ChangeToExclude:
			// EXCLUDE mode is any-source multicast; on an SSM group it
			// means nothing (RFC 4604). Either way: not served.
			r.refuse(reasonNotSSM, t.key)
			continue
		case !amt.IsSSM(g):
			r.refuse(reasonNotSSM, t.key)
			continue
		}
		srcs := rec.Sources[:0:0]
		for _, s := range rec.Sources {
			s = s.Unmap()
			if !usableSource(s, g) {
				r.refuse(reasonMalformed, t.key)
				continue
			}
			srcs = append(srcs, s)
		}
		switch rec.Type {
		case amt.ModeIsInclude, amt.AllowNewSources:
			for _, s := range srcs {
				r.join(t, amt.Channel{Source: s, Group: g}, expires)
			}
		case amt.BlockOldSources:
			for _, s := range srcs {
				r.leave(t, amt.Channel{Source: s, Group: g})
			}
		case amt.ChangeToInclude:
			if toIn == nil {
				toIn = make(map[netip.Addr][]netip.Addr)
			}
			toIn[g] = append(toIn[g], srcs...)
		}
	}
	// TO_IN(B): the gateway's sources for G are now exactly B; TO_IN{}
	// leaves G. One member per tunnel makes this exact without the
	// group-and-source-specific query a LAN router would send.
	for g, srcs := range toIn {
		for ch := range t.chans {
			if ch.Group == g && !containsAddr(srcs, ch.Source) {
				r.leave(t, ch)
			}
		}
		for _, s := range srcs {
			r.join(t, amt.Channel{Source: s, Group: g}, expires)
		}
	}
}

func containsAddr(as []netip.Addr, a netip.Addr) bool {
	for _, x := range as {
		if x == a {
			return true
		}
	}
	return false
}

// teardown processes a Teardown (RFC 7450 §5.3.3.7): the tunnel named by
// the message's gateway address and port ends if the MAC and nonce match
// what the relay computed for that address, port and nonce. The message
// comes from the gateway's new address, so its source does not matter.
// Gateways that never received the G flag send port 0 and "::"; those tear
// down the tunnel of the address the Teardown came from.
func (r *Relay) teardown(m *amt.Teardown, src netip.AddrPort) {
	gw := netip.AddrPortFrom(m.Gateway.Addr().Unmap(), m.Gateway.Port())
	if !gw.IsValid() || gw.Port() == 0 || gw.Addr().IsUnspecified() {
		gw = src
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	t := r.tab.tunnels[gw]
	if !r.authentic(t, gw, m.Nonce, m.MAC) {
		r.refuse(reasonBadMAC, src)
		r.log.Debug("teardown with bad MAC or nonce dropped", "gateway", gw, "from", src)
		return
	}
	if t == nil {
		return // already gone
	}
	r.removeTunnel(t)
	r.publish()
	r.stats.teardowns.Add(1)
	r.log.Debug("tunnel torn down", "gateway", gw, "from", src)
}
