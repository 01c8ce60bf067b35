package castd

import (
	"context"
	"sync"

	"github.com/blockcast/beacon/cloud/contracts"
	"github.com/blockcast/beacon/shared/onchain"
)

// ContractAnchor is where a contract is anchored on chain (GET
// /v1/contracts/{id}: "anchor"). Memo is the exact text: the CAST key
// signs it, and the owner may record the same text with its wallet.
type ContractAnchor struct {
	Memo      string `json:"memo"`
	CastKey   string `json:"cast_key"`
	Signature string `json:"signature,omitempty"` // once confirmed
	Slot      uint64 `json:"slot,omitempty"`
	Confirmed bool   `json:"confirmed"`
	Pending   bool   `json:"pending,omitempty"` // sent, not seen confirmed yet
	Off       bool   `json:"off,omitempty"`     // castd runs without --solana-rpc: it does not anchor
}

// startContractAnchor anchors accepted contracts on SolanaRPC (with it)
// until ctx ends.
func (s *Server) startContractAnchor(ctx context.Context, wg *sync.WaitGroup) {
	if s.onchain == nil {
		return
	}
	a, err := contracts.NewAnchorer(contracts.AnchorOptions{Store: s.owners.contracts, RPC: s.onchain.verifier.RPC(), Key: s.key,
		Poll: s.opts.OnchainPoll, Logger: s.log})
	if err != nil {
		s.log.Error("contract anchor not started", "err", err)
		return
	}
	s.owners.anchorer.Store(a)
	wg.Add(1)
	go func() {
		defer wg.Done()
		a.Run(ctx)
	}()
}

// kickContractAnchor anchors a newly accepted contract soon.
func (s *Server) kickContractAnchor() {
	if a := s.owners.anchorer.Load(); a != nil {
		a.Kick()
	}
}

// contractAnchor is c's anchor as the API shows it.
func (s *Server) contractAnchor(id string) *ContractAnchor {
	memo, err := onchain.ContractMemo(id)
	if err != nil {
		return nil
	}
	v := &ContractAnchor{Memo: memo, CastKey: s.key.ID(), Off: s.onchain == nil}
	st, ok, err := s.owners.contracts.AnchorState(id)
	if err != nil {
		s.log.Warn("reading a contract's anchor", "id", id, "err", err)
		return v
	}
	if ok {
		v.Signature, v.Slot, v.Confirmed, v.Pending = st.Signature, st.Slot, st.Anchored(), !st.Anchored() && len(st.Pending) > 0
	}
	return v
}
