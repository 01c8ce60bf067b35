package amtgw

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/blockcast/beacon/shared/amt"
)

// Run opens the tunnel socket (and the re-emission socket), joins the
// channels asked for, and runs the gateway until ctx ends; then it leaves
// every channel, tears the tunnels down and closes the sockets. It returns
// nil when ctx ends, or an error if it cannot start.
func (g *Gateway) Run(ctx context.Context) error {
	g.mu.Lock()
	if g.started {
		g.mu.Unlock()
		return ErrRunning
	}
	g.started = true
	g.mu.Unlock()

	laddr, err := net.ResolveUDPAddr("udp", g.opts.LocalAddr)
	if err != nil {
		return g.fail(fmt.Errorf("amtgw: local address %q: %w", g.opts.LocalAddr, err))
	}
	conn, err := net.ListenUDP("udp", laddr)
	if err != nil {
		return g.fail(fmt.Errorf("amtgw: tunnel socket: %w", err))
	}
	if err := conn.SetReadBuffer(g.opts.ReadBuffer); err != nil {
		g.log.Debug("amtgw: cannot size the socket buffer", "err", err)
	}
	var re *reemitter
	if g.opts.ReemitInterface != "" {
		if re, err = newReemitter(g.opts.ReemitInterface, g.opts.ReemitTTL, g.opts.QueueLen, g.opts.MaxDatagram, g.log); err != nil {
			conn.Close()
			return g.fail(err)
		}
	}
	tio := &tunnelIO{conn: conn, local: conn.LocalAddr().(*net.UDPAddr).AddrPort(), buf: make([]byte, 0, 1500)}
	g.log.Info("amtgw: gateway running", "local", tio.local, "reemit", g.opts.ReemitInterface)

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		g.readLoop(conn)
	}()
	if re != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			re.q.run(g.done)
		}()
	}

	g.mu.Lock()
	g.io, g.reemit, g.running = tio, re, true
	g.runCtx = ctx
	g.sync(time.Now())
	g.mu.Unlock()

	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		g.mu.Lock()
		g.wakeups++
		now := time.Now()
		g.tick(now)
		wait := g.nextWake(now).Sub(now)
		g.mu.Unlock()
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(max(wait, time.Millisecond))

		select {
		case <-ctx.Done():
			g.mu.Lock()
			g.shutdown()
			g.running, g.closed = false, true
			g.mu.Unlock()
			conn.Close()
			close(g.done) // stops the consumers and the re-emitter
			wg.Wait()
			if re != nil {
				re.close()
			}
			g.log.Info("amtgw: gateway stopped")
			return nil
		case m := <-g.ctrl:
			g.mu.Lock()
			g.handleControl(m, time.Now())
			g.mu.Unlock()
		case r := <-g.res:
			g.mu.Lock()
			g.handleResolved(r, time.Now())
			g.mu.Unlock()
		case <-g.kick:
		case <-timer.C:
		}
	}
}

func (g *Gateway) fail(err error) error {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
	close(g.done)
	return err
}

// sync makes the channels match what Join and Leave asked for.
func (g *Gateway) sync(now time.Time) {
	for ch, req := range g.want {
		c := g.chans[ch]
		if c == nil {
			c = &chanRec{ch: ch, stats: &chanStats{}, since: now}
			g.chans[ch] = c
			g.dirty = true
		}
		c.explicit = req.relay
		c.stats.reemit.Store(req.reemit)
	}
	for ch, c := range g.chans {
		if _, ok := g.want[ch]; !ok {
			delete(g.chans, ch)
			if c.tun != nil {
				g.detach(c.tun, c, now, true)
			}
			g.dirty = true
		}
	}
	g.placeAll(now)
	if g.dirty {
		g.publish()
	}
}

// tick does what is due at now.
func (g *Gateway) tick(now time.Time) {
	for _, t := range slices.Clone(g.tunnels) {
		if g.hasTunnel(t) {
			g.tickTunnel(t, now)
		}
	}
	for src, s := range g.sources {
		if !s.resolving && now.After(s.expires) && !g.sourceInUse(src) {
			delete(g.sources, src)
		}
	}
	for a, until := range g.holdDown {
		if now.After(until) {
			delete(g.holdDown, a)
		}
	}
	g.placeAll(now)
	if g.dirty {
		g.publish()
	}
}

// nextWake is when the loop must run next.
func (g *Gateway) nextWake(now time.Time) time.Time {
	next := now.Add(time.Hour)
	at := func(t time.Time) {
		if !t.IsZero() && t.Before(next) {
			next = t
		}
	}
	for _, t := range g.tunnels {
		switch t.phase {
		case PhaseDiscovering:
			at(t.retryAt)
		case PhaseBackoff:
			at(t.backoffUntil)
		default:
			for _, cyc := range t.cyc {
				if cyc == nil {
					continue
				}
				if cyc.waiting {
					at(cyc.retryAt)
				} else if cyc.haveMAC && t.phase != PhaseLeaving {
					at(cyc.refreshAt)
				}
				if cyc.pending() {
					at(cyc.changeAt)
				}
			}
			if t.established && t.phase != PhaseLeaving {
				heard := t.lastHeard()
				if !t.anyWaiting() {
					at(heard.Add(g.opts.NoDataTimeout / 2)) // probe
				}
				at(heard.Add(g.opts.NoDataTimeout))
			}
		}
	}
	for _, c := range g.chans {
		if c.tun == nil && c.notBefore.After(now) {
			at(c.notBefore)
		}
	}
	return next
}

// handleControl handles a Relay Advertisement or Membership Query.
func (g *Gateway) handleControl(m ctrlMsg, now time.Time) {
	if !g.running {
		return
	}
	msg, err := amt.Parse(m.b)
	if err != nil {
		g.log.Debug("amtgw: bad control message", "from", m.from, "err", err)
		g.unexpected.Add(1)
		return
	}
	switch msg := msg.(type) {
	case *amt.RelayAdvertisement:
		g.onAdvertisement(m.from, msg, now)
	case *amt.MembershipQuery:
		g.onQuery(m.from, msg, now)
	default:
		g.unexpected.Add(1)
	}
	if g.dirty {
		g.publish()
	}
}

// resolveResult is a RelaySource answer for a source.
type resolveResult struct {
	source netip.Addr
	relays []Relay
	err    error
}

// sourceRec caches the relays found for a source.
type sourceRec struct {
	relays    []Relay
	err       error
	resolving bool
	expires   time.Time
}

func (g *Gateway) resolve(src netip.Addr) {
	s := g.sources[src]
	if s == nil {
		s = &sourceRec{}
		g.sources[src] = s
	}
	s.resolving = true
	ctx, rs, timeout := g.runCtx, g.opts.Relays, g.opts.ResolveTimeout
	go func() {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		relays, err := rs.Relays(ctx, src)
		select {
		case g.res <- resolveResult{source: src, relays: relays, err: err}:
		case <-g.done:
		}
	}()
}

func (g *Gateway) handleResolved(r resolveResult, now time.Time) {
	s := g.sources[r.source]
	if s == nil {
		s = &sourceRec{}
		g.sources[r.source] = s
	}
	s.resolving = false
	s.expires = now.Add(g.opts.ResolveCache)
	s.err = r.err
	s.relays = nil
	for _, rel := range r.relays {
		a := rel.Addr.Addr().Unmap()
		if !rel.Addr.IsValid() || a.IsUnspecified() || a.IsMulticast() {
			continue
		}
		port := rel.Addr.Port()
		if port == 0 {
			port = amt.Port
		}
		rel.Addr = netip.AddrPortFrom(a, port)
		s.relays = append(s.relays, rel)
	}
	switch {
	case r.err != nil && len(s.relays) == 0:
		g.log.Warn("amtgw: no relay found", "source", r.source, "err", r.err)
	case r.err != nil:
		g.log.Info("amtgw: relays found, with errors", "source", r.source, "relays", s.relays, "err", r.err)
	default:
		g.log.Debug("amtgw: relays found", "source", r.source, "relays", s.relays)
	}
	g.placeAll(now)
	if g.dirty {
		g.publish()
	}
}

func (g *Gateway) sourceInUse(src netip.Addr) bool {
	for ch := range g.chans {
		if ch.Source == src {
			return true
		}
	}
	return false
}

// candidates returns c's relays in the order to try them: the relay of
// the castd offer, then those of the source. pending says the source's
// relays are being looked up.
func (g *Gateway) candidates(c *chanRec, now time.Time) (list []Relay, pending bool) {
	if c.explicit.IsValid() {
		list = append(list, Relay{Addr: c.explicit})
		if c.next == 0 && !g.heldDown(c.explicit, now) {
			return list, false // no need to look further yet
		}
	}
	if g.opts.Relays == nil {
		return list, false
	}
	s := g.sources[c.ch.Source]
	if s == nil || !s.resolving && now.After(s.expires) {
		g.resolve(c.ch.Source)
		return nil, true
	}
	if s.resolving {
		return nil, true
	}
	if len(s.relays) == 0 && s.err != nil {
		c.lastErr = s.err.Error()
	}
	for _, r := range s.relays {
		if r.Addr != c.explicit {
			list = append(list, r)
		}
	}
	return list, false
}

// placeAll puts every channel without a tunnel on the next relay to try.
func (g *Gateway) placeAll(now time.Time) {
	if !g.running {
		return
	}
	for _, c := range g.chans {
		if c.tun != nil || now.Before(c.notBefore) {
			continue
		}
		list, pending := g.candidates(c, now)
		if pending {
			c.resolving = true
			continue
		}
		c.resolving = false
		i := g.pick(list, c.next, now)
		if i < 0 {
			// Every relay failed: wait, then start over with a fresh
			// lookup (RFC 8777 §2.5.4.1).
			wait := g.backoff(c.failures)
			c.failures++
			c.next = 0
			c.notBefore = now.Add(wait)
			if s := g.sources[c.ch.Source]; s != nil && !s.resolving {
				s.expires = time.Time{}
			}
			if c.lastErr == "" {
				c.lastErr = "no relay available"
			}
			g.log.Warn("amtgw: no relay for channel, backing off", "channel", c.ch, "wait", wait, "err", c.lastErr)
			continue
		}
		c.next = i + 1
		t := g.tunnelFor(list[i].Addr)
		if t == nil {
			t = g.newTunnel(list[i], now)
		}
		g.attach(t, c, now)
	}
}

// pick returns the index of the first relay from i on that is not held
// down. When all of them are, it retries the first, so that a lone
// relay is retried after its hold-down rather than never.
func (g *Gateway) pick(list []Relay, i int, now time.Time) int {
	for j := i; j < len(list); j++ {
		if !g.heldDown(list[j].Addr, now) {
			return j
		}
	}
	if i == 0 && len(list) > 0 {
		return 0
	}
	return -1
}

func (g *Gateway) heldDown(a netip.AddrPort, now time.Time) bool {
	until, ok := g.holdDown[a]
	return ok && now.Before(until)
}

func (g *Gateway) hold(a netip.AddrPort, d time.Duration, now time.Time) {
	if a.IsValid() {
		g.holdDown[a] = now.Add(d)
	}
}

// backoff is the wait after n consecutive failures: random in
// [BackoffInitial, min(BackoffInitial·2ⁿ, BackoffMax)].
func (g *Gateway) backoff(n int) time.Duration {
	return randWait(g.opts.BackoffInitial, g.opts.BackoffMax, n)
}

// retransmitWait is the wait after the n-th transmission (from 0).
func (g *Gateway) retransmitWait(n int) time.Duration {
	return randWait(g.opts.RetransmitInitial, g.opts.RetransmitMax, n)
}

func randWait(lo, hi time.Duration, n int) time.Duration {
	top := lo
	for i := 0; i < n && top < hi; i++ {
		top *= 2
	}
	top = min(top, hi)
	if top <= lo {
		return lo
	}
	return lo + rand.N(top-lo+1)
}

// nonce returns a random non-zero nonce.
func nonce() uint32 {
	for {
		if n := rand.Uint32(); n != 0 {
			return n
		}
	}
}

// send writes one message to a relay.
func (g *Gateway) send(t *tunnel, msg amt.Message, to netip.AddrPort) error {
	if g.io == nil {
		return ErrClosed
	}
	if g.dirty {
		// The answer may come back before the loop gets to publish:
		// the receive path must know the tunnel first.
		g.publish()
	}
	b, err := msg.AppendTo(g.io.buf[:0])
	if err != nil {
		return err
	}
	g.io.buf = b[:0]
	if _, err := g.io.conn.WriteToUDPAddrPort(b, to); err != nil {
		if t != nil {
			t.lastErr = err.Error()
		}
		g.log.Debug("amtgw: send failed", "type", msg.Type(), "to", to, "err", err)
		return err
	}
	return nil
}

// shutdown leaves every channel and tears every tunnel down, at once.
func (g *Gateway) shutdown() {
	for _, t := range g.tunnels {
		if t.relay.IsValid() && t.phase != PhaseBackoff && t.phase != PhaseDiscovering {
			g.sendLeaveAll(t)
			g.teardown(t)
		}
	}
	g.tunnels = nil
	for _, c := range g.chans {
		c.tun = nil
	}
	g.publish()
}
