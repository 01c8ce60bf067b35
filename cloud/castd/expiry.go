package castd

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/blockcast/beacon/cloud/monitor"
	"github.com/blockcast/beacon/cloud/registry"
)

// expiryGrace: for this long after the control plane starts (at most the
// TTL) nothing expires, so that nodes registered before a castd outage have
// time to reconnect (an agent retries at least every two minutes).
const expiryGrace = 5 * time.Minute

// maxExpireBatch bounds the registrations removed in one transaction.
const maxExpireBatch = 10000

// expiry removes registrations that the control plane never sees online
// within the TTL (fresh keys registered by the thousand and never used),
// and records in the registry when a node is first seen online, which is
// what keeps a node for good. It keeps the never-online nodes in memory, so
// that neither a health report nor a sweep touches the disk: the registry
// is written once when such a node comes online, and once per sweep that
// removes some.
type expiry struct {
	s     *Server
	ttl   time.Duration // 0: record only, never remove
	since time.Time     // the registry's TrackedSince
	every time.Duration

	mu      sync.Mutex
	pending map[string]time.Time // never seen online → when its TTL runs from
	toMark  []string             // seen online, not yet written
	wake    chan struct{}

	expired atomic.Uint64
}

// startExpiry starts recording first-online times and, with a TTL,
// removing registrations never seen online. Without a control plane
// nothing is known about who is online, so nothing expires.
func (s *Server) startExpiry(ctx context.Context) error {
	if s.control == nil {
		return nil
	}
	since, err := s.reg.TrackedSince()
	if err != nil {
		return fmt.Errorf("castd: %w", err)
	}
	ttl := max(s.opts.RegistrationTTL, 0) // negative: never, 0 here
	e := &expiry{s: s, ttl: ttl, since: since, pending: map[string]time.Time{}, wake: make(chan struct{}, 1),
		every: min(max(ttl/10, 100*time.Millisecond), time.Minute)}
	err = s.reg.ForEach(func(n registry.Node) error {
		if n.SeenOnline.IsZero() {
			e.pending[n.ID] = e.from(n)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("castd: registration expiry: %w", err)
	}
	ids := make([]string, 0, len(e.pending))
	for id := range e.pending {
		ids = append(ids, id)
	}
	s.expiry.Store(e)
	// The broker was up while the index was built: catch who came online.
	for _, id := range ids {
		e.checkOnline(id)
	}
	// Both write to the registry: Serve joins them (control.wait) before
	// castd closes it.
	wg := &s.control.wg
	wg.Add(1)
	go func() {
		defer wg.Done()
		e.writeLoop(ctx)
	}()
	if ttl > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.sweepLoop(ctx, time.Now().Add(min(ttl, expiryGrace)))
		}()
	}
	s.log.Info("registration expiry", "ttl", ttl, "never_online", len(ids), "tracked_since", since)
	return nil
}

// from is when a never-online node's TTL runs from: its first
// registration, or when the registry began recording, if later.
func (e *expiry) from(n registry.Node) time.Time {
	if n.FirstSeen.Before(e.since) {
		return e.since
	}
	return n.FirstSeen
}

// notePending adds a registration not yet seen online (castd calls it
// after every registration).
func (s *Server) notePending(n registry.Node) {
	e := s.expiry.Load()
	if e == nil || !n.SeenOnline.IsZero() {
		return
	}
	e.mu.Lock()
	if _, ok := e.pending[n.ID]; !ok {
		e.pending[n.ID] = e.from(n)
	}
	e.mu.Unlock()
	e.checkOnline(n.ID) // re-registered while online
}

// noteOnline is the monitor's state callback's share: a node seen online
// for the first time is kept for good.
func (s *Server) noteOnline(id string, st monitor.State) {
	if e := s.expiry.Load(); e != nil && st == monitor.StateOnline {
		e.online(id)
	}
}

func (e *expiry) checkOnline(id string) {
	if st, ok := e.s.control.monitor.Get(id); ok && st.State == monitor.StateOnline {
		e.online(id)
	}
}

func (e *expiry) online(id string) {
	e.mu.Lock()
	if _, ok := e.pending[id]; !ok {
		e.mu.Unlock()
		return
	}
	delete(e.pending, id)
	e.toMark = append(e.toMark, id)
	e.mu.Unlock()
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// writeLoop records first-online times, many per transaction, off the
// monitor's callback path.
func (e *expiry) writeLoop(ctx context.Context) {
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-e.wake:
		case <-retry.C:
		}
		e.mu.Lock()
		ids := e.toMark
		e.toMark = nil
		e.mu.Unlock()
		if len(ids) == 0 {
			continue
		}
		n, err := e.s.reg.MarkOnline(time.Now(), ids...)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			// Still out of pending, so never expired; written later.
			e.s.log.Warn("registry: cannot record nodes seen online; retrying", "nodes", len(ids), "err", err)
			e.mu.Lock()
			e.toMark = append(e.toMark, ids...)
			e.mu.Unlock()
			retry.Reset(5 * time.Second)
			continue
		}
		e.s.log.Debug("nodes seen online for the first time", "recorded", n)
	}
}

func (e *expiry) sweepLoop(ctx context.Context, first time.Time) {
	wait := time.NewTimer(time.Until(first))
	defer wait.Stop()
	select {
	case <-ctx.Done():
		return
	case <-wait.C:
	}
	t := time.NewTicker(e.every)
	defer t.Stop()
	for {
		e.sweep(time.Now())
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// sweep removes the registrations whose TTL has run out without the node
// being seen online: from the registry, the router and the monitor.
func (e *expiry) sweep(now time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock() // a node coming online now waits for the verdict
	var due []string
	for id, from := range e.pending {
		if now.Sub(from) > e.ttl {
			due = append(due, id)
			if len(due) == maxExpireBatch {
				break
			}
		}
	}
	if len(due) == 0 {
		return
	}
	gone, err := e.s.reg.ExpireUnseen(now.Add(-e.ttl), due...)
	if err != nil {
		e.s.log.Warn("registry: cannot remove expired registrations", "nodes", len(due), "err", err)
		return
	}
	// Those not removed were seen online meanwhile or are gone already.
	for _, id := range due {
		delete(e.pending, id)
	}
	for _, id := range gone {
		e.s.router.Remove(id)
		e.s.mc.forgetNode(id) // its DTLS channel too
		e.s.control.monitor.Forget(id)
		e.s.control.forget(id) // no more probes
		e.s.log.Info("registration expired: never seen online on the control plane", "id", id, "ttl", e.ttl)
	}
	e.expired.Add(uint64(len(gone)))
}
