package beacon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/onchain"
	"github.com/blockcast/beacon/shared/protocol"
	"github.com/blockcast/beacon/shared/solrpc"
)

// OnchainFile holds the beacon's on-chain registration record (JSON
// OnchainRecord) beside the node wallet (whose directory persists where
// the state directory may be in RAM: a lost record would cost a new
// transaction): `beacon register --onchain` writes it, and the daemon
// sends its signature with each registration whose memo it matches.
const OnchainFile = "onchain-registration.json"

// OnchainRecord is the transaction that records a registration.
type OnchainRecord struct {
	Memo      string `json:"memo"`
	Signature string `json:"signature"`
	Slot      uint64 `json:"slot"`
}

// LoadOnchainRecord reads the record in dir (the wallet's directory); a
// missing file is no record and no error.
func LoadOnchainRecord(dir string) (*OnchainRecord, error) {
	raw, err := os.ReadFile(filepath.Join(dir, OnchainFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("on-chain record: %w", err)
	}
	rec, err := parseOnchainRecord(raw)
	if err != nil {
		return nil, fmt.Errorf("on-chain record %s: %w", filepath.Join(dir, OnchainFile), err)
	}
	return rec, nil
}

// parseOnchainRecord decodes an OnchainRecord file: one JSON object with a
// well-formed signature and a registration memo.
func parseOnchainRecord(raw []byte) (*OnchainRecord, error) {
	var rec OnchainRecord
	if err := json.Unmarshal(raw, &rec); err != nil {
		return nil, err
	}
	if _, err := onchain.ParseSignature(rec.Signature); err != nil {
		return nil, err
	}
	if !strings.HasPrefix(rec.Memo, onchain.RegistrationPrefix) {
		return nil, errors.New("not a registration record (memo prefix)")
	}
	return &rec, nil
}

// SaveOnchainRecord writes rec to dir (atomically).
func SaveOnchainRecord(dir string, rec OnchainRecord) error {
	raw, _ := json.MarshalIndent(rec, "", "  ")
	path := filepath.Join(dir, OnchainFile)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(raw, '\n'), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// Registration is what the beacon registers with, but the LAN URL: the
// part `beacon register --onchain` commits to (shared/onchain leaves the
// LAN URL and the version out of the commitment).
func Registration(version string, deleg *protocol.Delegation) protocol.Registration {
	return protocol.Registration{
		Role:         protocol.RoleBeacon,
		Version:      version,
		Capabilities: []string{"http-cache"},
		Delegation:   deleg,
	}
}

// checkOnchain validates the on-chain options.
func (o *Options) checkOnchain() error {
	if o.SolanaRPC != "" {
		if _, err := solrpc.New(o.SolanaRPC); err != nil {
			return fieldError("SolanaRPC", err)
		}
	}
	if o.OnchainRegister && o.SolanaRPC == "" {
		return fieldError("OnchainRegister", errors.New("needs SolanaRPC"))
	}
	if o.RequireOnchain && o.SolanaRPC == "" {
		return fieldError("RequireOnchain", errors.New("needs SolanaRPC"))
	}
	if o.CastSig != "" {
		if _, err := onchain.ParseSignature(o.CastSig); err != nil {
			return fieldError("CastSig", err)
		}
	}
	return nil
}

// onchainSig returns the signature of the transaction that records reg,
// from the stored record when its memo is reg's; with OnchainRegister it
// makes (and pays for) a new one when there is none.
func (b *Beacon) onchainSig(ctx context.Context, reg protocol.Registration) (string, error) {
	memo := onchain.RegistrationMemo(b.key.Public(), reg)
	rec, err := LoadOnchainRecord(filepath.Dir(b.opts.KeyFile))
	if err != nil {
		b.log.Warn("on-chain registration record unreadable", "err", err)
	}
	if rec != nil && rec.Memo == memo {
		return rec.Signature, nil
	}
	if !b.opts.OnchainRegister {
		if rec != nil {
			b.log.Warn("the on-chain registration record is for another registration (owner or role changed): run `beacon register --onchain` again", "recorded", rec.Memo, "now", memo)
		}
		return "", nil
	}
	c, err := solrpc.New(b.opts.SolanaRPC)
	if err != nil {
		return "", err
	}
	b.log.Info("recording the registration on chain", "memo", memo, "rpc", b.opts.SolanaRPC)
	sig, slot, err := onchain.Submit(ctx, c, b.key, memo, onchain.SubmitOptions{Poll: b.opts.OnchainPoll, Logger: b.log})
	if err != nil {
		return "", fmt.Errorf("on-chain registration (the node key %s pays the fee: fund it, or use `beacon register --onchain --fee-payer OWNER`): %w", b.key.ID(), err)
	}
	if err := SaveOnchainRecord(filepath.Dir(b.opts.KeyFile), OnchainRecord{Memo: memo, Signature: sig.String(), Slot: slot}); err != nil {
		b.log.Warn("storing the on-chain registration record", "err", err)
	}
	b.log.Info("registration recorded on chain", "tx", sig, "slot", slot)
	return sig.String(), nil
}

// ErrNoCastRecord: the CAST key has no valid record on chain.
var ErrNoCastRecord = errors.New("the CAST key has no on-chain record")

// ErrCastRecordUnavailable: the record cannot be checked now (castd or
// the RPC endpoint is unreachable); checking again later may work.
var ErrCastRecordUnavailable = errors.New("cannot check the CAST key record now")

// verifyCastKey checks, with RequireOnchain, that key is recorded on
// chain before the beacon trusts it. A key verified once is not asked
// about again.
func (b *Beacon) verifyCastKey(ctx context.Context, key identity.PublicKey) error {
	if !b.opts.RequireOnchain {
		return nil
	}
	b.mu.Lock()
	done := b.castVerified == key
	b.mu.Unlock()
	if done {
		return nil
	}
	c, err := solrpc.New(b.opts.SolanaRPC)
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	rec, err := VerifyCastRecord(cctx, c, b.opts.CastURL, key, b.opts.CastSig)
	if err != nil {
		return err
	}
	b.mu.Lock()
	b.castVerified = key
	b.mu.Unlock()
	b.log.Info("CAST key verified on chain", "key", key, "tx", rec.Signature, "slot", rec.Slot)
	return nil
}

// knownCastKey is the configured or pinned CAST key, if any.
func (b *Beacon) knownCastKey() (identity.PublicKey, bool, error) {
	want := b.opts.CastKey
	if want == "" {
		raw, err := os.ReadFile(filepath.Join(b.opts.StateDir, castKeyFile))
		if err != nil {
			return identity.PublicKey{}, false, nil
		}
		want = strings.TrimSpace(string(raw))
	}
	k, err := identity.ParsePublicKey(want)
	if err != nil {
		return identity.PublicKey{}, false, fmt.Errorf("CAST key %q: %w", want, err)
	}
	return k, true, nil
}

// checkCastKeyAtStart refuses to start, with RequireOnchain, when the
// CAST key already known (--cast-key or pinned) has no record on chain.
func (b *Beacon) checkCastKeyAtStart(ctx context.Context) error {
	if !b.opts.RequireOnchain {
		return nil
	}
	k, ok, err := b.knownCastKey()
	if err != nil || !ok {
		return err // unknown yet: checked when castd presents it
	}
	err = b.verifyCastKey(ctx, k)
	if errors.Is(err, ErrCastRecordUnavailable) {
		// Not proof of anything: start, and check before the first
		// registration trusts the key.
		b.log.Warn("cannot check the CAST key's on-chain record now; checking again before registering", "key", k, "err", err)
		return nil
	}
	if err != nil {
		return fmt.Errorf("beacon: --require-onchain: refusing CAST key %s: %w", k, err)
	}
	return nil
}

// VerifyCastRecord checks that key is recorded on chain: in the
// transaction sigText, or (when empty) the one castd at castURL names at
// protocol.PathCastRecord. castd's answer is only a pointer: the
// transaction is read from the chain and checked here (signed by key,
// memo onchain.CastKeyMemo(key), confirmed, succeeded).
func VerifyCastRecord(ctx context.Context, c *solrpc.Client, castURL string, key identity.PublicKey, sigText string) (onchain.Record, error) {
	if sigText == "" {
		var err error
		if sigText, err = fetchCastRecord(ctx, castURL, key); err != nil {
			return onchain.Record{}, err
		}
	}
	sig, err := onchain.ParseSignature(sigText)
	if err != nil {
		return onchain.Record{}, fmt.Errorf("%w: %w", ErrNoCastRecord, err)
	}
	rec, err := onchain.Check(ctx, c, sig, key, onchain.CastKeyMemo(key))
	switch {
	case errors.Is(err, solrpc.ErrUnavailable):
		err = fmt.Errorf("%w: %w", ErrCastRecordUnavailable, err)
	case err != nil:
		err = fmt.Errorf("%w: transaction %s: %w", ErrNoCastRecord, sig, err)
	}
	return rec, err
}

func fetchCastRecord(ctx context.Context, castURL string, key identity.PublicKey) (string, error) {
	u, err := protocol.ParseBaseURL(castURL)
	if err != nil {
		return "", fmt.Errorf("castd URL: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(u.String(), "/")+protocol.PathCastRecord, nil)
	if err != nil {
		return "", err
	}
	resp, err := (&http.Client{Timeout: 15 * time.Second}).Do(req)
	if err != nil {
		return "", fmt.Errorf("%w: asking castd where its CAST key is recorded: %w", ErrCastRecordUnavailable, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	switch {
	case err != nil || resp.StatusCode >= 500:
		return "", fmt.Errorf("%w: castd answered %s to %s: %v", ErrCastRecordUnavailable, resp.Status, protocol.PathCastRecord, err)
	case resp.StatusCode != http.StatusOK:
		return "", fmt.Errorf("%w: castd answered %s to %s (give --cast-sig, or wait until castd has published)", ErrNoCastRecord, resp.Status, protocol.PathCastRecord)
	}
	var rec protocol.CastRecord
	if err := json.Unmarshal(raw, &rec); err != nil {
		return "", fmt.Errorf("%w: castd's answer: %w", ErrNoCastRecord, err)
	}
	if rec.CastKey != key.String() {
		return "", fmt.Errorf("%w: castd's record names CAST key %q, not %s", ErrNoCastRecord, clipText(rec.CastKey), key)
	}
	return rec.Signature, nil
}

func clipText(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
