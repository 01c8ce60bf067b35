package beacon

import (
	"context"
	"errors"
	"time"
)

// Bounds of the wait between registrations that castd's "I do not know
// you" answers cause: each end user's miss can carry that answer, so they
// are rate-limited, and a castd that keeps refusing is backed off from.
const (
	minReregister = 2 * time.Second
	maxReregister = time.Minute
)

var errNotServing = errors.New("beacon: not serving yet")

// forceRegister registers again now because castd said it does not know
// this node (a 403 "not registered" on a fetch, the broker refusing the
// agent as not authorised, a signed whoami). Callers at once share one
// attempt; within the wait after an attempt they get its result without a
// new one; the wait doubles while attempts fail.
func (b *Beacon) forceRegister(ctx context.Context) error {
	select {
	case b.regSem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-b.regSem }()
	b.mu.Lock()
	addr := b.addr
	b.mu.Unlock()
	if addr == nil {
		return errNotServing
	}
	now := time.Now()
	if !b.regLast.IsZero() && now.Sub(b.regLast) < b.regWait {
		return b.regErr
	}
	b.regLast = now
	b.log.Info("castd does not know this node; registering again")
	b.mu.Lock()
	b.registered = false
	b.mu.Unlock()
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err := b.checkRegistration(cctx, addr)
	cancel()
	if err != nil {
		b.regWait = min(max(2*b.regWait, minReregister), maxReregister)
		b.mu.Lock()
		b.lastErr = err.Error()
		b.mu.Unlock()
		b.log.Warn("registering again", "err", err, "next_in", b.regWait)
	} else {
		b.regWait = minReregister
	}
	b.regErr = err
	return err
}
