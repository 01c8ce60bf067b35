package mcrecv

import (
	"context"
	"sync"
	"time"

	"github.com/blockcast/beacon/shared/alc"
	"github.com/blockcast/beacon/shared/dtlschan"
	"github.com/blockcast/beacon/shared/manifest"
	"github.com/blockcast/beacon/shared/mcproto"
)

// unicastPool holds one DTLS session per castd address, shared by every
// object in reception from that castd, and dials it again when it drops
// while objects still need it.
type unicastPool struct {
	r     *Receiver
	mu    sync.Mutex
	conns map[string]*uniConn
}

func newUnicastPool(r *Receiver) *unicastPool {
	return &unicastPool{r: r, conns: map[string]*uniConn{}}
}

type uniConn struct {
	p    *unicastPool
	addr string

	mu     sync.Mutex
	sess   *dtlschan.Session // nil while down
	objs   map[mcproto.Object]*object
	joined map[mcproto.Object]bool // sent a Join with early blocks already
}

// attach registers o for packets and Status from its castd, dialing when
// no session is up, and sends its Join.
func (p *unicastPool) attach(ctx context.Context, o *object) *uniConn {
	p.mu.Lock()
	defer p.mu.Unlock()
	uc := p.conns[o.offer.Unicast]
	if uc == nil {
		uc = &uniConn{p: p, addr: o.offer.Unicast, objs: map[mcproto.Object]*object{}, joined: map[mcproto.Object]bool{}}
		p.conns[uc.addr] = uc
		go uc.loop()
	}
	uc.mu.Lock()
	uc.objs[o.id] = o
	sess := uc.sess
	uc.mu.Unlock()
	if sess != nil {
		uc.join(sess, o)
	}
	return uc
}

func (uc *uniConn) detach(o *object) {
	uc.mu.Lock()
	defer uc.mu.Unlock()
	delete(uc.objs, o.id)
	delete(uc.joined, o.id)
}

func (uc *uniConn) current() *dtlschan.Session {
	uc.mu.Lock()
	defer uc.mu.Unlock()
	return uc.sess
}

// join sends o's Join: early blocks the first time, none after a redial.
func (uc *uniConn) join(sess *dtlschan.Session, o *object) {
	uc.mu.Lock()
	early := 0
	if !uc.joined[o.id] {
		early = uc.p.r.opts.EarlyBlocks
		uc.joined[o.id] = true
	}
	uc.mu.Unlock()
	j := mcproto.Join{Object: o.id, EarlyBlocks: uint16(min(early, 0xffff))}
	// The early blocks are on their way: no NACK until they stop coming.
	o.joinSent.Store(true)
	if _, err := sess.Write(j.AppendTo(nil)); err != nil {
		uc.p.r.log.Debug("multicast: sending Join", "err", err)
	}
}

func (uc *uniConn) maxRanges() int {
	if s := uc.current(); s != nil {
		return mcproto.MaxRanges(s.MaxPayload())
	}
	return 0
}

// nack sends one NACK; false when there is no session to send it on.
func (uc *uniConn) nack(o *object, ranges []mcproto.Range) bool {
	s := uc.current()
	if s == nil {
		return false
	}
	b, err := (&mcproto.Nack{Object: o.id, Ranges: ranges}).AppendTo(nil)
	if err == nil {
		o.nacked.Store(true) // before the answers can arrive: they are repairs
		_, err = s.Write(b)
	}
	if err != nil {
		uc.p.r.log.Debug("multicast: sending NACK", "err", err)
		return false
	}
	return true
}

func (uc *uniConn) leave(o *object, why mcproto.LeaveReason) {
	if s := uc.current(); s != nil {
		l := mcproto.Leave{Object: o.id, Reason: why}
		s.Write(l.AppendTo(nil))
	}
}

// loop dials, reads and dials again while objects are attached.
func (uc *uniConn) loop() {
	r := uc.p.r
	backoff := time.Second
	for {
		if uc.idle() {
			return
		}
		cast, ok := r.opts.CastKey()
		if !ok { // cannot happen after Take, which needed the key; wait for it anyway
			time.Sleep(backoff)
			continue
		}
		timeout := r.opts.DTLSTimeout
		if timeout <= 0 {
			timeout = dtlschan.DefaultHandshakeTimeout
		}
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		sess, err := dtlschan.Dialer{Logger: r.log.With("component", "dtlschan")}.Dial(ctx, uc.addr, r.opts.Key, cast)
		cancel()
		if err != nil {
			r.log.Warn("multicast: unicast channel to castd", "addr", uc.addr, "err", err, "retry_in", backoff)
			time.Sleep(backoff)
			backoff = min(backoff*2, 30*time.Second)
			continue
		}
		backoff = time.Second
		uc.mu.Lock()
		uc.sess = sess
		objs := make([]*object, 0, len(uc.objs))
		for _, o := range uc.objs {
			objs = append(objs, o)
		}
		uc.mu.Unlock()
		for _, o := range objs {
			uc.join(sess, o)
		}
		uc.read(sess)
		uc.mu.Lock()
		uc.sess = nil
		uc.mu.Unlock()
		sess.Close()
	}
}

// idle removes the conn when no object is attached.
func (uc *uniConn) idle() bool {
	p := uc.p
	p.mu.Lock()
	defer p.mu.Unlock()
	uc.mu.Lock()
	defer uc.mu.Unlock()
	if len(uc.objs) > 0 {
		return false
	}
	if p.conns[uc.addr] == uc {
		delete(p.conns, uc.addr)
	}
	return true
}

// read dispatches the session's datagrams until it ends, or until no
// object has been attached for a while (the session's idle timeout then
// closes it anyway; leaving earlier frees castd's state).
func (uc *uniConn) read(sess *dtlschan.Session) {
	r := uc.p.r
	buf := make([]byte, sess.MaxPayload())
	var p alc.Packet
	idleSince := time.Time{}
	for {
		sess.SetReadDeadline(time.Now().Add(time.Second))
		n, err := sess.Read(buf)
		if err != nil {
			if sess.Err() != nil {
				r.log.Debug("multicast: unicast channel closed", "addr", uc.addr, "err", sess.Err())
				return
			}
			uc.mu.Lock()
			empty := len(uc.objs) == 0
			uc.mu.Unlock()
			switch {
			case !empty:
				idleSince = time.Time{}
			case idleSince.IsZero():
				idleSince = time.Now()
			case time.Since(idleSince) > 30*time.Second:
				return
			}
			continue
		}
		b := buf[:n]
		if mcproto.IsALC(b) {
			if p.Decode(b) != nil || p.TOI == manifest.ManifestTOI {
				r.c.unwanted.Add(1)
				continue
			}
			id := mcproto.Object{TSI: uint32(p.TSI), TOI: uint32(p.TOI &^ manifest.HashListBit)}
			uc.mu.Lock()
			o := uc.objs[id]
			uc.mu.Unlock()
			if o == nil {
				r.c.unwanted.Add(1)
				continue
			}
			o.feed(b, &p, o.label())
			continue
		}
		msg, err := mcproto.Decode(b)
		if err != nil {
			r.log.Debug("multicast: bad control message from castd", "err", err)
			continue
		}
		if st, ok := msg.(*mcproto.Status); ok {
			uc.mu.Lock()
			o := uc.objs[st.Object]
			uc.mu.Unlock()
			if o != nil {
				select {
				case o.status <- *st:
				default:
				}
			}
		}
	}
}
