package castd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	cloudon "github.com/blockcast/beacon/cloud/onchain"
	"github.com/blockcast/beacon/shared/identity"
	sharedon "github.com/blockcast/beacon/shared/onchain"
	"github.com/blockcast/beacon/shared/protocol"
	"github.com/blockcast/beacon/shared/ratelimit"
)

// castRecordFile keeps the CAST key record castd published, so that a
// restart checks it on chain instead of paying for another.
const castRecordFile = "cast-record.json"

// onchainTimeout bounds one on-chain check during a registration.
const onchainTimeout = 20 * time.Second

// Lookups of transactions castd has not verified before cost a call to
// the RPC endpoint (often a metered one), and a registered node's
// re-registrations are not limited by the registration limit: so they are
// limited here, per source address (lookupBurst, then lookupRate a
// second) and in all (allLookupBurst, allLookupRate a second). A fleet
// re-registering after a restart presents transactions already verified,
// which the cache answers without a lookup.
const (
	lookupBurst      = 10
	lookupRate       = 0.1
	allLookupBurst   = 200
	allLookupRate    = 50
	lookupRetryAfter = "10"
)

// checkOnchain validates the on-chain options.
func (o *Options) checkOnchain() error {
	if o.RequireOnchain && o.SolanaRPC == "" {
		return fieldError("RequireOnchain", errors.New("needs SolanaRPC (the endpoint the transactions are checked on)"))
	}
	if o.SolanaRPC != "" && !strings.HasPrefix(o.SolanaRPC, "http://") && !strings.HasPrefix(o.SolanaRPC, "https://") {
		return fieldError("SolanaRPC", fmt.Errorf("%q: want an http:// or https:// JSON-RPC URL", o.SolanaRPC))
	}
	if o.OnchainPoll < 0 {
		return fieldError("OnchainPoll", errors.New("must not be negative"))
	}
	return nil
}

// onchainState is castd's on-chain side: nil without --solana-rpc.
type onchainState struct {
	verifier *cloudon.Verifier
	perAddr  *ratelimit.PerAddr // lookups per source address
	all      *ratelimit.Bucket  // lookups in all
	mu       sync.Mutex
	record   *protocol.CastRecord // the CAST key's record once verified or published
}

// openOnchain opens the verifier and its cache (next to the registry).
func (s *Server) openOnchain() error {
	if s.opts.SolanaRPC == "" {
		return nil
	}
	v, err := cloudon.Open(s.opts.SolanaRPC, filepath.Join(s.opts.StateDir, "onchain.db"), s.log)
	if err != nil {
		return fmt.Errorf("castd: %w", err)
	}
	s.onchain = &onchainState{verifier: v, perAddr: ratelimit.NewPerAddr(lookupRate, lookupBurst),
		all: ratelimit.NewBucket(allLookupRate, allLookupBurst, time.Now())}
	s.log.Info("on-chain registration check", "rpc", s.opts.SolanaRPC, "required", s.opts.RequireOnchain)
	return nil
}

func (s *Server) closeOnchain() error {
	if s.onchain == nil {
		return nil
	}
	return s.onchain.verifier.Close()
}

// checkOnchainRegistration refuses (and answers) a registration whose
// on-chain reference does not hold, or that has none when one is
// required. It returns true when the registration may go on.
func (s *Server) checkOnchainRegistration(w http.ResponseWriter, r *http.Request, node identity.PublicKey, reg protocol.Registration) bool {
	if s.onchain == nil {
		return true
	}
	memo := sharedon.RegistrationMemo(node, reg)
	if reg.OnchainSig == "" {
		if !s.opts.RequireOnchain {
			return true
		}
		w.Header().Set(protocol.HeaderError, protocol.ErrOnchainRequired)
		s.fail(w, r, http.StatusForbidden, fmt.Sprintf(
			"this castd requires the registration on chain: run `beacon register --onchain` (memo %s)", memo))
		return false
	}
	if !s.onchain.verifier.Cached(reg.OnchainSig, node, memo) && !s.allowLookup(r) {
		w.Header().Set(protocol.HeaderError, protocol.ErrOnchainLimited)
		w.Header().Set("Retry-After", lookupRetryAfter)
		s.fail(w, r, http.StatusTooManyRequests, "too many on-chain lookups from this address; retry in "+lookupRetryAfter+" s")
		return false
	}
	ctx, cancel := context.WithTimeout(r.Context(), onchainTimeout)
	defer cancel()
	rec, err := s.onchain.verifier.Verify(ctx, reg.OnchainSig, node, memo)
	switch {
	case err == nil:
		s.log.Debug("on-chain registration verified", "id", node, "tx", rec.Signature, "slot", rec.Slot)
		return true
	case errors.Is(err, cloudon.ErrUnavailable):
		w.Header().Set(protocol.HeaderError, protocol.ErrOnchainUnavailable)
		w.Header().Set("Retry-After", "30")
		s.fail(w, r, http.StatusServiceUnavailable, "cannot check the on-chain registration now: "+err.Error())
	case errors.Is(err, cloudon.ErrBadReference):
		w.Header().Set(protocol.HeaderError, protocol.ErrOnchainRefused)
		s.fail(w, r, http.StatusBadRequest, "on-chain registration refused: "+err.Error())
	default:
		w.Header().Set(protocol.HeaderError, protocol.ErrOnchainRefused)
		s.fail(w, r, http.StatusForbidden, fmt.Sprintf("on-chain registration refused (expected memo %s): %v", memo, err))
	}
	return false
}

// allowLookup spends one lookup of the request's source address and one
// of all.
func (s *Server) allowLookup(r *http.Request) bool {
	src, err := s.ips.Addr(r)
	if err != nil {
		src = netip.IPv6Unspecified()
	}
	now := time.Now()
	return s.onchain.perAddr.Allow(src, now) && s.onchain.all.Allow(now)
}

// handleCastRecord serves where the CAST key is recorded on chain.
func (s *Server) handleCastRecord(w http.ResponseWriter, r *http.Request) {
	var rec *protocol.CastRecord
	if s.onchain != nil {
		s.onchain.mu.Lock()
		rec = s.onchain.record
		s.onchain.mu.Unlock()
	}
	if rec == nil {
		s.fail(w, r, http.StatusNotFound, "this castd has no on-chain record of its CAST key (it runs without --solana-rpc, or has not published yet)")
		return
	}
	writeJSON(w, rec)
}

// startCastRecord makes sure the CAST key is recorded on chain: the
// record castd made before is checked on chain, otherwise a new one is
// published (paid for by the CAST key), retrying until it works or ctx
// ends.
func (s *Server) startCastRecord(ctx context.Context, wg *sync.WaitGroup) {
	if s.onchain == nil {
		return
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		wait := time.Second
		for {
			err := s.ensureCastRecord(ctx)
			if err == nil || ctx.Err() != nil {
				return
			}
			s.log.Error("CAST key not recorded on chain yet (the CAST key pays the fee: fund it, e.g. `solana transfer "+s.key.ID()+" 0.01`)", "err", err, "retry_in", wait)
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
			wait = min(wait*2, 5*time.Minute)
		}
	}()
}

func (s *Server) ensureCastRecord(ctx context.Context) error {
	memo := sharedon.CastKeyMemo(s.key.Public())
	path := filepath.Join(s.opts.StateDir, castRecordFile)
	if raw, err := os.ReadFile(path); err == nil {
		var old protocol.CastRecord
		if json.Unmarshal(raw, &old) == nil && old.CastKey == s.key.ID() {
			// Served at once: beacons check it on chain themselves, so
			// an endpoint that is down now need not hide it.
			s.setCastRecord(old)
			cctx, cancel := context.WithTimeout(ctx, onchainTimeout)
			rec, err := s.onchain.verifier.Verify(cctx, old.Signature, s.key.Public(), memo)
			cancel()
			switch {
			case err == nil:
				s.setCastRecord(protocol.CastRecord{CastKey: s.key.ID(), Signature: rec.Signature, Slot: rec.Slot, Memo: memo})
				s.log.Info("CAST key record on chain verified", "tx", rec.Signature, "slot", rec.Slot)
				return nil
			case errors.Is(err, cloudon.ErrUnavailable):
				return err
			default:
				s.log.Warn("the stored CAST key record does not verify; publishing a new one", "tx", old.Signature, "err", err)
			}
		}
	}
	sig, slot, err := cloudon.Publish(ctx, s.onchain.verifier.RPC(), s.key, memo, cloudon.PublishOptions{Poll: s.opts.OnchainPoll})
	if err != nil {
		return err
	}
	rec := protocol.CastRecord{CastKey: s.key.ID(), Signature: sig.String(), Slot: slot, Memo: memo}
	raw, _ := json.MarshalIndent(rec, "", "  ")
	if err := writeFileAtomic(path, append(raw, '\n')); err != nil {
		s.log.Warn("storing the CAST key record", "path", path, "err", err)
	}
	s.setCastRecord(rec)
	s.log.Info("CAST key recorded on chain", "tx", rec.Signature, "slot", strconv.FormatUint(slot, 10), "memo", memo)
	return nil
}

func (s *Server) setCastRecord(rec protocol.CastRecord) {
	s.onchain.mu.Lock()
	s.onchain.record = &rec
	s.onchain.mu.Unlock()
}

func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
