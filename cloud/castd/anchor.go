package castd

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/blockcast/beacon/cloud/anchor"
	"github.com/blockcast/beacon/shared/onchain"
)

// Values of Options.ReceiptAnchor.
const (
	AnchorOff   = "off"
	AnchorDaily = "daily"
)

func (o *Options) checkAnchor() error {
	switch o.ReceiptAnchor {
	case "", AnchorOff:
	case AnchorDaily:
		if o.SolanaRPC == "" {
			return fieldError("ReceiptAnchor", errors.New("daily needs SolanaRPC (where the anchor is published)"))
		}
	default:
		return fieldError("ReceiptAnchor", fmt.Errorf("%q: want daily or off", o.ReceiptAnchor))
	}
	if o.ReceiptDay < 0 {
		return fieldError("ReceiptDay", errors.New("must not be negative"))
	}
	return nil
}

// startAnchor runs the daily anchor (cloud/anchor) until ctx ends.
func (s *Server) startAnchor(ctx context.Context, wg *sync.WaitGroup) {
	if s.opts.ReceiptAnchor != AnchorDaily || s.onchain == nil {
		return
	}
	a, err := anchor.New(anchor.Options{Book: s.receipts, RPC: s.onchain.verifier.RPC(), Key: s.key,
		Poll: s.opts.OnchainPoll, Logger: s.log})
	if err != nil {
		s.log.Error("daily anchor not started", "err", err)
		return
	}
	s.log.Info("daily anchor of receipts on", "day", s.receipts.DayLength())
	wg.Add(1)
	go func() {
		defer wg.Done()
		a.Run(ctx)
	}()
}

// attachAnchor adds where p's day root is anchored, once it is.
func (s *Server) attachAnchor(node string, seq uint64, p *onchain.DayProof) {
	d, ok := s.receipts.ReceivedDay(node, seq)
	if !ok {
		return
	}
	st, ok, err := s.receipts.AnchorState(d)
	if err != nil || !ok || !st.Anchored() || st.Root != p.Root.String() || st.Count != p.N {
		return
	}
	p.Anchor = &onchain.Anchor{Signature: st.Signature, Slot: st.Slot, Memo: st.Memo, CastKey: s.key.ID()}
}
