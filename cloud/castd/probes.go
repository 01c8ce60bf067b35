package castd

import (
	"context"
	"fmt"
	"net/url"

	"github.com/blockcast/beacon/cloud/monitor"
	"github.com/blockcast/beacon/cloud/netguard"
	"github.com/blockcast/beacon/cloud/probe"
	"github.com/blockcast/beacon/cloud/registry"
	"github.com/blockcast/beacon/shared/metrics"
	"github.com/blockcast/beacon/shared/protocol"
)

// initProbes sets up the relays' health probes (package probe) and their
// metrics. Relays are reachable from castd, so their serving path is
// checked directly, not only their word.
func (c *control) initProbes() error {
	s := c.s
	p, err := probe.New(probe.Options{
		Interval:     s.opts.ProbeInterval,
		MaxInFlight:  s.opts.ProbeConcurrency,
		Path:         protocol.PathHealthz,
		AllowPrivate: s.opts.AllowPrivateNodes,
		OnChange:     c.refresh,
		Logger:       s.log.With("component", "probe"),
	})
	if err != nil {
		return fmt.Errorf("castd: %w", err)
	}
	c.prober = p
	// Relays are known before the monitor can report one online.
	c.relayNodeURLs = map[string]string{}
	s.reg.ForEach(func(n registry.Node) error {
		if n.Role == protocol.RoleRelay {
			c.relayNodeURLs[n.ID] = n.LANURL
		}
		return nil
	})
	s.metrics.Collect("castd_relay_probes_total", "Relay health probes, by result (refused: destination not allowed, see --allow-private-nodes).", metrics.Counter, func() []metrics.Sample {
		counts := p.Counts()
		out := make([]metrics.Sample, 0, len(probe.Results))
		for _, r := range probe.Results {
			out = append(out, metrics.Sample{Labels: []string{"result", string(r)}, Value: float64(counts[r])})
		}
		return out
	})
	s.metrics.Func("castd_relay_probes_in_flight", "Relay health probes running now (at most --probe-concurrency).", metrics.Gauge, func() float64 {
		return float64(p.InFlight())
	})
	return nil
}

// probeRelayNodes probes relays until ctx ends, and returns only after every
// probe it started has returned.
func (c *control) probeRelayNodes(ctx context.Context) {
	c.prober.Run(ctx)
}

// routable: heard online on the control plane, not reporting a full cache
// file system (it would fetch every miss through without storing it), and,
// for a relay, its current URL has passed its health probe and keeps
// passing.
func (c *control) routable(id string) bool {
	st, ok := c.monitor.Get(id)
	if !ok || st.State != monitor.StateOnline {
		return false
	}
	if st.Health != nil && st.Health.StorageFullSince != 0 {
		return false
	}
	c.mu.Lock()
	_, isRelayNode := c.relayNodeURLs[id]
	c.mu.Unlock()
	if !isRelayNode {
		return true
	}
	healthy, _ := c.prober.Healthy(id)
	return healthy
}

// refresh brings the probes and the router's health gate for id up to
// date. Only relays heard online are probed: those are the only ones that
// can be routed to, and a registration alone (no control-plane session)
// cannot make castd send requests anywhere. A relay that goes offline
// loses its verdict and passes a probe again before it is routed to.
// Updates are serialised and each reads the state afresh, so a late update
// can never restore a verdict that a newer change (a new URL, a failed
// probe, going offline) undid.
func (c *control) refresh(id string) {
	c.eligMu.Lock()
	defer c.eligMu.Unlock()
	c.mu.Lock()
	url, isRelayNode := c.relayNodeURLs[id]
	c.mu.Unlock()
	if st, ok := c.monitor.Get(id); isRelayNode && ok && st.State == monitor.StateOnline {
		c.prober.Set(id, url)
	} else {
		c.prober.Remove(id)
	}
	c.s.router.SetEligible(id, c.routable(id))
}

// registered is told of a node that is (re-)registering, before the router
// sees its new record: a relay's new URL must not inherit the old URL's
// verdict even for a moment.
func (c *control) registered(n registry.Node) {
	c.mu.Lock()
	if n.Role == protocol.RoleRelay {
		c.relayNodeURLs[n.ID] = n.LANURL
	} else {
		delete(c.relayNodeURLs, n.ID)
	}
	c.mu.Unlock()
	c.refresh(n.ID)
}

// forget drops a node whose registration is gone.
func (c *control) forget(id string) {
	c.mu.Lock()
	delete(c.relayNodeURLs, id)
	c.mu.Unlock()
	c.refresh(id)
}

// checkRelayNodeURL refuses a relay whose LAN URL names a loopback, private,
// link-local or otherwise non-public address literally: castd would be
// asked to probe it and to send end users there. Names are judged when the
// probe dials them. Beacons' LAN URLs are private by
// nature, are never probed, and are not checked.
func (s *Server) checkRelayNodeURL(reg protocol.Registration) error {
	if reg.Role != protocol.RoleRelay || s.opts.AllowPrivateNodes {
		return nil
	}
	u, err := url.Parse(reg.LANURL)
	if err != nil {
		return nil // the registry explains what is wrong with it
	}
	if err := netguard.CheckHost(u.Hostname()); err != nil {
		return fmt.Errorf("lan_url: %w: a relay must be reachable at a public address (castd --allow-private-nodes allows others, for labs)", err)
	}
	return nil
}
