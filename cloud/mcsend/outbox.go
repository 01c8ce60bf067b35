package mcsend

import (
	"errors"
	"sync"
	"time"

	"github.com/blockcast/beacon/shared/dtlschan"
	"github.com/blockcast/beacon/shared/mcproto"
	"github.com/blockcast/beacon/shared/ratelimit"
)

// DefaultRepairRate paces each node's unicast (early media and repairs)
// when Options.RepairRate is zero: 8 Mbit/s.
const DefaultRepairRate = 1e6

// outboxLen bounds the unicast packets queued for one node: a little
// over one block of early media; more is refused as over budget.
const outboxLen = 320

// A closable Peer (one with Done, like *dtlschan.Session) gets an outbox:
// its unicast is queued and written by a goroutine of its own, paced to
// Options.RepairRate, so neither the carousel nor the node's reader waits
// and a burst of early media does not overrun the node's socket. Other
// peers (simulations) are written at once.
type closable interface {
	Done() <-chan struct{}
}

type outPkt struct {
	ss   *Session
	kind Kind
	b    []byte
}

type outbox struct {
	s     *Sender
	p     Peer
	q     chan outPkt
	pacer *ratelimit.Pacer

	mu      sync.Mutex
	told    time.Time // last StatusLimited sent
	stopped bool
}

// outbox returns node p's outbox, starting it; nil for a peer that is not
// closable.
func (s *Sender) outbox(p Peer) *outbox {
	c, ok := p.(closable)
	if !ok {
		return nil
	}
	id := p.NodeID()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	if ob := s.outboxes[id]; ob != nil && ob.p == p {
		return ob
	}
	ob := &outbox{s: s, p: p, q: make(chan outPkt, outboxLen), pacer: ratelimit.NewPacer(s.o.RepairRate, 16*1500, s.o.Now())}
	s.outboxes[id] = ob
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		ob.run(c.Done())
		s.mu.Lock()
		if s.outboxes[id] == ob {
			delete(s.outboxes, id)
		}
		s.mu.Unlock()
	}()
	return ob
}

func (ob *outbox) run(done <-chan struct{}) {
	ctx := ob.s.ctx
	for {
		select {
		case <-done:
			return
		case <-ctx.Done():
			return
		case pk := <-ob.q:
			if d := ob.pacer.Reserve(ob.s.o.Now(), len(pk.b)); d > 0 {
				t := time.NewTimer(d)
				select {
				case <-t.C:
				case <-done:
					t.Stop()
					return
				case <-ctx.Done():
					t.Stop()
					return
				}
			}
			if _, err := ob.p.WriteLimited(pk.b); err != nil {
				if errors.Is(err, dtlschan.ErrRateLimited) {
					ob.limited(pk.ss)
				}
				continue
			}
			pk.ss.st.sent(pk.kind, len(pk.b))
			ob.s.st.sent(pk.kind, len(pk.b))
		}
	}
}

// put queues a copy of b; false when the queue is full (the node is over
// its budget: it was told).
func (ob *outbox) put(ss *Session, k Kind, b []byte) bool {
	select {
	case ob.q <- outPkt{ss: ss, kind: k, b: append([]byte(nil), b...)}:
		return true
	default:
		ob.limited(ss)
		return false
	}
}

// limited counts a refusal and tells the node, at most once a second.
func (ob *outbox) limited(ss *Session) {
	ob.s.refuse(ss, RefuseLimited, 1)
	now := ob.s.o.Now()
	ob.mu.Lock()
	tell := now.Sub(ob.told) >= time.Second
	if tell {
		ob.told = now
	}
	ob.mu.Unlock()
	if tell {
		st := mcproto.Status{Object: ss.object(), Code: mcproto.StatusLimited, RetryAfterMs: retryAfterMs}
		_, _ = ob.p.Write(st.AppendTo(nil))
	}
}
