package mcsend

import (
	"context"
	"errors"
	"sync"

	"github.com/blockcast/beacon/shared/dtlschan"
	"github.com/blockcast/beacon/shared/mcproto"
)

// Serve answers the beacons' DTLS sessions from srv until ctx ends or srv
// closes: each datagram a node sends is one control message (Handle).
// It returns once every session's reader has stopped.
func (s *Sender) Serve(ctx context.Context, srv *dtlschan.Server) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		sess, err := srv.Accept(ctx)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, dtlschan.ErrClosed) {
				return nil
			}
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer s.Forget(sess.NodeID())
			stop := context.AfterFunc(ctx, func() { sess.Close() })
			defer stop()
			buf := make([]byte, sess.MaxPayload())
			for {
				n, err := sess.Read(buf)
				if err != nil {
					return
				}
				s.Handle(sess, buf[:n])
			}
		}()
	}
}

// Handle takes one datagram a node sent on its unicast channel: Join
// (membership and early media), Nack (repairs), Leave. Anything else is
// counted and dropped; a Join or Nack for no running session is answered
// with Status{StatusUnknown}. Handle does not keep b.
func (s *Sender) Handle(p Peer, b []byte) {
	id := p.NodeID()
	now := s.o.Now()
	if ok, why := s.allow(id, now); !ok {
		s.refuse(nil, why, 1)
		return
	}
	if mcproto.IsALC(b) {
		s.refuse(nil, RefuseMalformed, 1)
		return
	}
	msg, err := mcproto.Decode(b)
	if err != nil {
		s.refuse(nil, RefuseMalformed, 1)
		s.log.Debug("bad control message", "node", id, "err", err)
		return
	}
	switch m := msg.(type) {
	case *mcproto.Join:
		s.st.joins.Add(1)
		ss := s.session(m.Object)
		if ss == nil {
			s.unknown(p, m.Object)
			return
		}
		ss.st.joins.Add(1)
		ss.join(p, int(m.EarlyBlocks), now)
	case *mcproto.Nack:
		s.st.nacks.Add(1)
		ss := s.session(m.Object)
		if ss == nil {
			s.unknown(p, m.Object)
			return
		}
		ss.st.nacks.Add(1)
		ss.nack(p, m.Ranges, now)
	case *mcproto.Leave:
		s.st.leaves.Add(1)
		if ss := s.session(m.Object); ss != nil {
			ss.st.leaves.Add(1)
			ss.leave(id)
		}
	default: // a Status: castd's to send, not a node's
		s.refuse(nil, RefuseMalformed, 1)
	}
}

func (s *Sender) unknown(p Peer, o mcproto.Object) {
	s.refuse(nil, RefuseUnknown, 1)
	st := mcproto.Status{Object: o, Code: mcproto.StatusUnknown}
	if _, err := p.Write(st.AppendTo(nil)); err != nil {
		s.log.Debug("status write failed", "node", p.NodeID(), "err", err)
	}
}
