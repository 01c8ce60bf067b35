package amtgw

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"sort"
	"time"

	"github.com/blockcast/beacon/shared/amt"
)

// Phase is where a tunnel is in its life.
type Phase string

// Tunnel phases.
const (
	// PhaseDiscovering: Relay Discovery sent, waiting for the Relay
	// Advertisement.
	PhaseDiscovering Phase = "discovering"
	// PhaseRequesting: Request sent, waiting for the first Membership
	// Query.
	PhaseRequesting Phase = "requesting"
	// PhaseJoined: the relay answered; membership is reported and
	// refreshed.
	PhaseJoined Phase = "joined"
	// PhaseBackoff: the relay went silent; the channels wait before a new
	// relay is found.
	PhaseBackoff Phase = "backoff"
	// PhaseLeaving: the last channel left; the leave is being repeated
	// before the Teardown.
	PhaseLeaving Phase = "leaving"
)

// chanRec is a joined channel, owned by the control loop.
type chanRec struct {
	ch       Channel
	explicit netip.AddrPort // relay from a castd offer, tried first
	stats    *chanStats
	since    time.Time
	tun      *tunnel // nil while no relay is being tried
	// next is the index, in candidates(), of the relay to try after the
	// one in use; a failed relay is followed by the next in order.
	next      int
	failures  int       // consecutive rounds without a working relay
	notBefore time.Time // backoff: no new relay before
	resolving bool
	lastErr   string
}

// tunnel is the gateway's state with one relay.
type tunnel struct {
	cand  Relay          // how the relay was found
	relay netip.AddrPort // where Requests go, once known
	phase Phase
	since time.Time

	discNonce uint32
	discSent  int
	retryAt   time.Time

	// cyc holds the Request/Query cycle per family in use: [0] IGMPv3
	// for IPv4 channels, [1] MLDv2 for IPv6 ones (the P flag).
	cyc [2]*cycle

	chans        map[Channel]*chanRec
	established  bool // a Query without L came: the relay accepted us
	limited      bool // the relay set L
	lastQuery    time.Time
	gw           gwInfo // how the relay sees us, from the last G-flag Query
	natChanges   int
	stats        *tunnelStats
	backoffUntil time.Time
	lastErr      string
}

// gwInfo is the gateway address a relay reported (G flag), with the MAC
// and nonce of that Query: what a Teardown of that tunnel must carry.
type gwInfo struct {
	valid bool
	addr  netip.AddrPort
	mac   [6]byte
	nonce uint32
}

// cycle is one family's Request → Query → Update exchange.
type cycle struct {
	v6      bool
	nonce   uint32 // of the Request in flight or last answered
	waiting bool   // a Request is in flight
	sent    int    // transmissions of that Request
	retryAt time.Time

	haveMAC  bool
	mac      [6]byte // from the last Query, for Updates
	macNonce uint32  // the nonce that MAC belongs to
	qi       time.Duration
	qrv      int
	// refreshAt is when the next Request cycle starts (the query's
	// interval after its Query).
	refreshAt time.Time

	// State changes still to be reported, with the number of
	// transmissions left (robustness, RFC 3376 §5.1).
	allow, block map[Channel]int
	changeAt     time.Time
}

func (c *cycle) pending() bool { return len(c.allow)+len(c.block) > 0 }

// robustness is the query's robustness variable, 2 until one arrived.
func (c *cycle) robustness() int {
	if c.qrv > 0 {
		return c.qrv
	}
	return 2
}

func family(ch Channel) int {
	if ch.Group.Is4() {
		return 0
	}
	return 1
}

func (t *tunnel) lastHeard() time.Time {
	heard := t.lastQuery
	if d := t.stats.lastData.Load(); d != 0 {
		if data := monoTime(d); data.After(heard) {
			heard = data
		}
	}
	return heard
}

func (t *tunnel) setPhase(p Phase, now time.Time) {
	if t.phase != p {
		t.phase, t.since = p, now
	}
}

func (g *Gateway) hasTunnel(t *tunnel) bool { return slices.Contains(g.tunnels, t) }

// tunnelFor returns the live tunnel that uses relay address a, as the
// address discovery went to or the relay itself.
func (g *Gateway) tunnelFor(a netip.AddrPort) *tunnel {
	for _, t := range g.tunnels {
		if t.phase != PhaseBackoff && (t.cand.Addr == a || t.relay == a) {
			return t
		}
	}
	return nil
}

func (g *Gateway) tunnelByRelay(a netip.AddrPort) *tunnel {
	for _, t := range g.tunnels {
		if t.phase != PhaseBackoff && t.relay == a {
			return t
		}
	}
	return nil
}

func (g *Gateway) newTunnel(cand Relay, now time.Time) *tunnel {
	t := &tunnel{cand: cand, chans: map[Channel]*chanRec{}, stats: &tunnelStats{}, since: now}
	g.tunnels = append(g.tunnels, t)
	g.dirty = true
	if cand.Discover {
		t.phase = PhaseDiscovering
		t.discNonce = nonce()
		t.retryAt = now // tickTunnel sends it
		g.log.Info("amtgw: discovering relay", "addr", cand.Addr)
	} else {
		t.phase = PhaseRequesting
		t.relay = cand.Addr
		g.log.Info("amtgw: connecting to relay", "relay", cand.Addr)
	}
	return t
}

// attach puts c on t and schedules its ALLOW report.
func (g *Gateway) attach(t *tunnel, c *chanRec, now time.Time) {
	t.chans[c.ch] = c
	c.tun = t
	g.dirty = true
	f := family(c.ch)
	cyc := t.cyc[f]
	if cyc == nil {
		cyc = &cycle{v6: f == 1, allow: map[Channel]int{}, block: map[Channel]int{}}
		t.cyc[f] = cyc
		if t.relay.IsValid() && t.phase != PhaseDiscovering {
			g.startRequest(t, cyc, now)
		}
	}
	delete(cyc.block, c.ch)
	cyc.allow[c.ch] = cyc.robustness()
	if cyc.haveMAC {
		cyc.changeAt = now
	}
	if t.phase == PhaseLeaving {
		t.setPhase(PhaseJoined, now)
	}
}

// detach takes c off t. With leave, the relay is told (BLOCK reports), and
// a tunnel left empty goes to Leaving and then Teardown.
func (g *Gateway) detach(t *tunnel, c *chanRec, now time.Time, leave bool) {
	delete(t.chans, c.ch)
	c.tun = nil
	g.dirty = true
	if !leave {
		return
	}
	if cyc := t.cyc[family(c.ch)]; cyc != nil {
		delete(cyc.allow, c.ch)
		if cyc.haveMAC {
			cyc.block[c.ch] = cyc.robustness()
			cyc.changeAt = now
		}
	}
	if len(t.chans) == 0 {
		if t.established {
			t.setPhase(PhaseLeaving, now)
		} else {
			g.removeTunnel(t)
		}
	}
}

func (g *Gateway) removeTunnel(t *tunnel) {
	if i := slices.Index(g.tunnels, t); i >= 0 {
		g.tunnels = slices.Delete(g.tunnels, i, i+1)
	}
	for _, c := range t.chans {
		if c.tun == t {
			c.tun = nil
		}
	}
	g.dirty = true
}

// tickTunnel sends what is due on t: retransmissions, refresh Requests,
// state-change reports; and notices failures.
func (g *Gateway) tickTunnel(t *tunnel, now time.Time) {
	switch t.phase {
	case PhaseDiscovering:
		if now.Before(t.retryAt) {
			return
		}
		if t.discSent >= g.opts.ConnectAttempts {
			g.connectFailed(t, "no Relay Advertisement", g.opts.HoldDown, now)
			return
		}
		if g.send(t, &amt.RelayDiscovery{Nonce: t.discNonce}, t.cand.Addr) == nil {
			g.log.Debug("amtgw: relay discovery sent", "to", t.cand.Addr, "attempt", t.discSent+1)
		}
		t.retryAt = now.Add(g.retransmitWait(t.discSent))
		t.discSent++
		return
	case PhaseBackoff:
		if now.Before(t.backoffUntil) {
			return
		}
		g.removeTunnel(t)
		return
	}

	for f, cyc := range t.cyc {
		if cyc == nil {
			continue
		}
		if !t.hasFamily(f) && !cyc.pending() {
			t.cyc[f] = nil // no channel of this family left
			continue
		}
		switch {
		case cyc.waiting && !now.Before(cyc.retryAt):
			if !t.established && cyc.sent >= g.opts.ConnectAttempts {
				g.connectFailed(t, "no Membership Query", g.opts.HoldDown, now)
				return
			}
			g.sendRequest(t, cyc, now)
		case !cyc.waiting && cyc.haveMAC && t.phase != PhaseLeaving && !now.Before(cyc.refreshAt):
			g.startRequest(t, cyc, now)
		}
		if cyc.haveMAC && cyc.pending() && !now.Before(cyc.changeAt) {
			g.sendChanges(t, cyc, now)
		}
	}
	if t.phase == PhaseLeaving {
		if !t.pendingBlocks() {
			g.log.Info("amtgw: tunnel closed", "relay", t.relay)
			g.teardown(t)
			g.removeTunnel(t)
		}
		return
	}
	if !t.established {
		return
	}
	silent := now.Sub(t.lastHeard())
	switch {
	case silent >= g.opts.NoDataTimeout:
		g.relayGone(t, now)
	case silent >= g.opts.NoDataTimeout/2 && !t.anyWaiting():
		// Quiet: a channel may just be idle, so ask the relay whether
		// it is still there (and refresh the membership while at it).
		for _, cyc := range t.cyc {
			if cyc != nil {
				g.startRequest(t, cyc, now)
			}
		}
	}
}

func (t *tunnel) hasFamily(f int) bool {
	for ch := range t.chans {
		if family(ch) == f {
			return true
		}
	}
	return false
}

func (t *tunnel) anyWaiting() bool {
	for _, c := range t.cyc {
		if c != nil && c.waiting {
			return true
		}
	}
	return false
}

func (t *tunnel) pendingBlocks() bool {
	for _, c := range t.cyc {
		if c != nil && c.haveMAC && len(c.block) > 0 {
			return true
		}
	}
	return false
}

// startRequest begins a Request cycle with a new nonce.
func (g *Gateway) startRequest(t *tunnel, cyc *cycle, now time.Time) {
	cyc.nonce = nonce()
	cyc.waiting = true
	cyc.sent = 0
	g.sendRequest(t, cyc, now)
}

// sendRequest sends (or resends, with the same nonce) cyc's Request.
func (g *Gateway) sendRequest(t *tunnel, cyc *cycle, now time.Time) {
	if g.send(t, &amt.Request{Nonce: cyc.nonce, IPv6: cyc.v6}, t.relay) == nil {
		g.log.Debug("amtgw: request sent", "relay", t.relay, "ipv6", cyc.v6, "attempt", cyc.sent+1)
	}
	cyc.retryAt = now.Add(g.retransmitWait(cyc.sent))
	cyc.sent++
}

func (g *Gateway) onAdvertisement(from netip.AddrPort, m *amt.RelayAdvertisement, now time.Time) {
	var t *tunnel
	for _, x := range g.tunnels {
		if x.phase == PhaseDiscovering && x.discNonce == m.Nonce {
			t = x
			break
		}
	}
	if t == nil {
		g.unexpected.Add(1)
		return
	}
	// The advertisement has no port: the relay is taken to listen where
	// the discovery went (2268 unless configured otherwise).
	relay := netip.AddrPortFrom(m.Relay.Unmap(), t.cand.Addr.Port())
	g.log.Info("amtgw: relay advertised", "discovery", t.cand.Addr, "relay", relay, "from", from)
	if other := g.tunnelByRelay(relay); other != nil {
		// Two discovery addresses led to the same relay: one tunnel.
		chans := t.chans
		g.removeTunnel(t)
		for _, c := range chans {
			g.attach(other, c, now)
		}
		return
	}
	t.relay = relay
	t.setPhase(PhaseRequesting, now)
	g.dirty = true
	for _, cyc := range t.cyc {
		if cyc != nil {
			g.startRequest(t, cyc, now)
		}
	}
}

func (g *Gateway) onQuery(from netip.AddrPort, m *amt.MembershipQuery, now time.Time) {
	t := g.tunnelByRelay(from)
	if t == nil {
		g.unknownSource.Add(1)
		return
	}
	var cyc *cycle
	for _, c := range t.cyc {
		if c != nil && c.waiting && c.nonce == m.Nonce {
			cyc = c
		}
	}
	if cyc == nil {
		// A duplicate, or an answer to a Request we gave up on.
		g.staleQueries.Add(1)
		return
	}
	qp, err := amt.ParseQueryPacket(m.Query)
	if err != nil {
		t.lastErr = "bad query: " + err.Error()
		g.log.Debug("amtgw: bad encapsulated query", "relay", from, "err", err)
		return
	}
	if m.Limit {
		if !t.established {
			g.connectFailed(t, "relay is at its limit (L flag)", g.opts.LimitHoldDown, now)
			return
		}
		// The relay keeps serving gateways it has state for (RFC 7450
		// §5.1.4.4); new channels avoid it while others are available.
		if !t.limited {
			g.log.Warn("amtgw: relay set the L flag; keeping its tunnel", "relay", t.relay)
		}
		t.limited = true
		g.hold(t.cand.Addr, g.opts.LimitHoldDown, now)
		g.hold(t.relay, g.opts.LimitHoldDown, now)
	}
	first := !cyc.haveMAC
	cyc.waiting = false
	cyc.sent = 0
	cyc.haveMAC, cyc.mac, cyc.macNonce = true, m.MAC, m.Nonce
	cyc.qi = qp.Query.QueryInterval()
	cyc.qrv = int(qp.Query.QRV)
	if first {
		// The joins so far were counted with the default robustness.
		for ch := range cyc.allow {
			cyc.allow[ch] = cyc.robustness()
		}
	}
	cyc.refreshAt = now.Add(cyc.qi)
	if m.Gateway.IsValid() {
		gw := netip.AddrPortFrom(m.Gateway.Addr().Unmap(), m.Gateway.Port())
		if t.gw.valid && t.gw.addr != gw {
			// NAT gave us a new address: end the relay's state for the
			// old one (what the G flag and Teardown are for), then report
			// afresh below.
			g.log.Warn("amtgw: gateway address changed", "relay", t.relay, "old", t.gw.addr, "new", gw)
			g.teardown(t)
			t.natChanges++
		}
		t.gw = gwInfo{valid: true, addr: gw, mac: m.MAC, nonce: m.Nonce}
	}
	if !t.established {
		g.log.Info("amtgw: tunnel up", "relay", t.relay, "query_interval", cyc.qi, "robustness", cyc.robustness())
	}
	t.established = true
	t.lastQuery = now
	t.lastErr = ""
	if t.phase != PhaseLeaving {
		t.setPhase(PhaseJoined, now)
	}
	for _, c := range t.chans {
		c.failures = 0
		c.lastErr = ""
	}
	g.dirty = true
	// Answer the general query with the current state; it counts as one
	// transmission of any ALLOW still pending.
	if g.sendCurrent(t, cyc) {
		for ch, n := range cyc.allow {
			if n <= 1 {
				delete(cyc.allow, ch)
			} else {
				cyc.allow[ch] = n - 1
			}
		}
	}
	if cyc.pending() && (cyc.changeAt.IsZero() || cyc.changeAt.After(now)) {
		cyc.changeAt = now.Add(g.reportWait())
	}
}

// reportWait is the random delay before repeating a state-change report,
// in (0, ReportInterval] (RFC 3376 §5.1).
func (g *Gateway) reportWait() time.Duration {
	return 1 + rand.N(g.opts.ReportInterval)
}

// channelsOf returns t's channels of cyc's family, sorted.
func (t *tunnel) channelsOf(cyc *cycle) []Channel {
	var out []Channel
	for ch := range t.chans {
		if (family(ch) == 1) == cyc.v6 {
			out = append(out, ch)
		}
	}
	sortChannels(out)
	return out
}

func sortChannels(chs []Channel) {
	// sort.Slice, not slices.SortFunc: see Gateway.State.
	sort.Slice(chs, func(i, j int) bool {
		if c := chs[i].Group.Compare(chs[j].Group); c != 0 {
			return c < 0
		}
		return chs[i].Source.Less(chs[j].Source)
	})
}

// sendCurrent answers a query with current-state records (MODE_IS_INCLUDE)
// for cyc's family. It reports whether it sent anything.
func (g *Gateway) sendCurrent(t *tunnel, cyc *cycle) bool {
	chs := t.channelsOf(cyc)
	if len(chs) == 0 {
		return false
	}
	return g.sendUpdate(t, cyc, amt.CurrentStateRecords(chs))
}

// sendChanges sends the pending ALLOW/BLOCK records and schedules the next
// repetition.
func (g *Gateway) sendChanges(t *tunnel, cyc *cycle, now time.Time) {
	allow := mapKeys(cyc.allow)
	block := mapKeys(cyc.block)
	g.sendUpdate(t, cyc, amt.ChangeRecords(allow, block))
	for _, m := range []map[Channel]int{cyc.allow, cyc.block} {
		for ch, n := range m {
			if n <= 1 {
				delete(m, ch)
			} else {
				m[ch] = n - 1
			}
		}
	}
	cyc.changeAt = time.Time{}
	if cyc.pending() {
		cyc.changeAt = now.Add(g.reportWait())
	}
}

// sendLeaveAll reports BLOCK for every channel of t at once (shutdown).
func (g *Gateway) sendLeaveAll(t *tunnel) {
	for _, cyc := range t.cyc {
		if cyc == nil || !cyc.haveMAC {
			continue
		}
		leave := append(t.channelsOf(cyc), mapKeys(cyc.block)...)
		if len(leave) > 0 {
			g.sendUpdate(t, cyc, amt.ChangeRecords(nil, leave))
		}
	}
}

// maxReport keeps a Membership Update within a 1500-byte path: 1500 less
// outer IP and UDP headers, the AMT header, and the report's IP header.
const maxReport = 1500 - 48 - 12 - 48

// sendUpdate sends recs in as many Membership Updates as they need.
func (g *Gateway) sendUpdate(t *tunnel, cyc *cycle, recs []amt.GroupRecord) bool {
	msgs, err := appendUpdates(cyc.v6, cyc.mac, cyc.macNonce, recs)
	if err != nil {
		g.log.Error("amtgw: cannot build report", "err", err)
		return false
	}
	sent := false
	for _, m := range msgs {
		if g.send(t, m, t.relay) == nil {
			sent = true
		}
	}
	return sent
}

// appendUpdates packs recs into Membership Updates whose reports fit a
// 1500-byte path. The report comes from the unspecified address, which
// RFC 3376 §4.2.13 and RFC 3810 §5.2.13 allow: the gateway has no address
// of its own on the tunnel's pseudo-interface.
func appendUpdates(v6 bool, mac [6]byte, nonce uint32, recs []amt.GroupRecord) ([]*amt.MembershipUpdate, error) {
	src, per, addr := netip.IPv4Unspecified(), 8, 4
	if v6 {
		src, per, addr = netip.IPv6Unspecified(), 20, 16
	}
	// A record with more sources than a report holds is split, as RFC 3376
	// §4.2.16 says for INCLUDE-mode records (the only ones we send).
	maxSrc := (maxReport - 8 - per) / addr
	var split []amt.GroupRecord
	for _, r := range recs {
		for len(r.Sources) > maxSrc {
			split = append(split, amt.GroupRecord{Type: r.Type, Group: r.Group, Sources: r.Sources[:maxSrc]})
			r.Sources = r.Sources[maxSrc:]
		}
		split = append(split, r)
	}
	recs = split
	var out []*amt.MembershipUpdate
	for len(recs) > 0 {
		n, size := 0, 8 // report header
		for n < len(recs) {
			s := per + addr*len(recs[n].Sources)
			if n > 0 && size+s > maxReport {
				break
			}
			size += s
			n++
		}
		report, err := amt.AppendReportPacket(nil, src, recs[:n])
		if err != nil {
			return nil, err
		}
		out = append(out, &amt.MembershipUpdate{MAC: mac, Nonce: nonce, Report: report})
		recs = recs[n:]
	}
	return out, nil
}

// teardown sends a Teardown for the relay state of the gateway address
// the last G-flag query reported. Without one there is nothing to name:
// the relay then expires the state (or got BLOCK reports).
func (g *Gateway) teardown(t *tunnel) {
	if !t.gw.valid || !t.relay.IsValid() {
		return
	}
	g.send(t, &amt.Teardown{MAC: t.gw.mac, Nonce: t.gw.nonce, Gateway: t.gw.addr}, t.relay)
	g.log.Debug("amtgw: teardown sent", "relay", t.relay, "gateway", t.gw.addr)
}

// connectFailed moves t's channels to their next relay: t never came up
// (no answer, or L).
func (g *Gateway) connectFailed(t *tunnel, reason string, hold time.Duration, now time.Time) {
	g.log.Warn("amtgw: relay failed, trying the next", "relay", t.cand.Addr, "reason", reason)
	g.hold(t.cand.Addr, hold, now)
	g.hold(t.relay, hold, now)
	chans := t.chans
	g.removeTunnel(t)
	for _, c := range chans {
		c.lastErr = t.cand.Addr.String() + ": " + reason
	}
	g.placeAll(now)
}

// relayGone handles a relay that went silent: hold it down, back off, and
// find a relay again (which may be the same one if it is alone).
func (g *Gateway) relayGone(t *tunnel, now time.Time) {
	n := 0
	for _, c := range t.chans {
		n = max(n, c.failures)
	}
	wait := g.backoff(n)
	g.log.Warn("amtgw: relay stopped answering, backing off", "relay", t.relay,
		"silent", now.Sub(t.lastHeard()).Round(time.Millisecond), "wait", wait)
	g.hold(t.cand.Addr, g.opts.HoldDown, now)
	g.hold(t.relay, g.opts.HoldDown, now)
	t.setPhase(PhaseBackoff, now)
	t.backoffUntil = now.Add(wait)
	t.established = false
	t.cyc = [2]*cycle{}
	t.lastErr = "relay stopped answering"
	for _, c := range t.chans {
		c.failures++
		c.next = 0
		c.notBefore = t.backoffUntil
		c.lastErr = t.lastErr
		if s := g.sources[c.ch.Source]; s != nil && !s.resolving {
			s.expires = time.Time{} // look the relays up again
		}
	}
	g.dirty = true
}

func mapKeys(m map[Channel]int) []Channel {
	out := make([]Channel, 0, len(m))
	for ch := range m {
		out = append(out, ch)
	}
	sortChannels(out)
	return out
}
