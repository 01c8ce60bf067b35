// Package contracts holds capacity contracts: an owner's offer of a node's
// capacity for a period (bandwidth, hours of availability, storage),
// signed by the owner wallet as a Solana off-chain message, countersigned
// by the CAST key, stored in bbolt, and measured per period against what
// castd saw (see Evaluate).
//
// # Wire format
//
// The offer is one line of printable ASCII (off-chain message format 0, a
// single shell argument to `solana sign-offchain-message`):
//
//	Blockcast capacity offer v1; owner: <wallet>; node: <node>; cast: <CAST key>; bandwidth_mbps: <n>; availability_hours: <n>; storage_gb: <n>; start: <RFC 3339>; end: <RFC 3339>
//
// with base58 keys, decimal integers without leading zeros and UTC times in
// whole seconds. The contract ID is the hex SHA-256 of the offer's signed
// message bytes. The CAST countersigns, in the same message format (v0
// layout, the CAST key as signer):
//
//	Blockcast capacity contract v1; offer: <contract ID>; cast: <CAST key>; accepted: <RFC 3339>
//
// A Contract (JSON, testdata/contract.json) carries both messages and
// signatures, so anyone can check it with the keys alone.
package contracts

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/offchain"
)

// Sentinel errors.
var (
	ErrMalformed   = errors.New("contracts: malformed")
	ErrTerms       = errors.New("contracts: terms refused")
	ErrWrongCast   = errors.New("contracts: offer is for another castd")
	ErrBadContract = errors.New("contracts: contract does not verify")
	ErrNotFound    = errors.New("contracts: no such contract")
	ErrOverlap     = errors.New("contracts: node already has a contract for part of the period")
	ErrNotOwner    = errors.New("contracts: node is not the offering owner's")
)

// Limits on terms.
const (
	MaxBandwidthMbps = 100_000
	MaxStorageGB     = 1_000_000
	MaxPeriod        = 366 * 24 * time.Hour
	MinPeriod        = time.Hour
	// MaxBackdate is how far before its acceptance an offer may start: an
	// owner must not commit to a past already seen.
	MaxBackdate = time.Hour
)

const (
	offerTitle    = "Blockcast capacity offer v1"
	contractTitle = "Blockcast capacity contract v1"
)

// Offer is the owner's terms.
type Offer struct {
	Owner             identity.PublicKey `json:"owner"`
	Node              identity.PublicKey `json:"node"`
	Cast              identity.PublicKey `json:"cast"`
	BandwidthMbps     uint64             `json:"bandwidth_mbps"`
	AvailabilityHours uint64             `json:"availability_hours"`
	StorageGB         uint64             `json:"storage_gb"`
	Start             time.Time          `json:"start"`
	End               time.Time          `json:"end"`
}

// Text is the canonical offer text the owner signs.
func (o Offer) Text() string {
	return offerTitle + "; owner: " + o.Owner.String() + "; node: " + o.Node.String() + "; cast: " + o.Cast.String() +
		"; bandwidth_mbps: " + strconv.FormatUint(o.BandwidthMbps, 10) +
		"; availability_hours: " + strconv.FormatUint(o.AvailabilityHours, 10) +
		"; storage_gb: " + strconv.FormatUint(o.StorageGB, 10) +
		"; start: " + o.Start.UTC().Format(time.RFC3339) + "; end: " + o.End.UTC().Format(time.RFC3339)
}

// ParseOffer parses an offer text, refusing any other spelling, and checks
// the terms that do not depend on when it is accepted (see CheckTerms).
func ParseOffer(text string) (Offer, error) {
	fail := func(f string, a ...any) (Offer, error) {
		return Offer{}, fmt.Errorf("%w: offer: %s", ErrMalformed, fmt.Sprintf(f, a...))
	}
	if len(text) > 1024 {
		return fail("%d bytes", len(text))
	}
	parts := strings.Split(text, "; ")
	names := []string{"owner", "node", "cast", "bandwidth_mbps", "availability_hours", "storage_gb", "start", "end"}
	if len(parts) != len(names)+1 || parts[0] != offerTitle {
		return fail("not a %q text", offerTitle)
	}
	v := make([]string, len(names))
	for i, n := range names {
		s, ok := strings.CutPrefix(parts[i+1], n+": ")
		if !ok {
			return fail("field %d is not %s", i+1, n)
		}
		v[i] = s
	}
	var o Offer
	var err error
	for i, k := range []*identity.PublicKey{&o.Owner, &o.Node, &o.Cast} {
		if *k, err = identity.ParsePublicKey(v[i]); err != nil {
			return fail("%s: %v", names[i], err)
		}
	}
	for i, n := range []*uint64{&o.BandwidthMbps, &o.AvailabilityHours, &o.StorageGB} {
		if *n, err = strconv.ParseUint(v[3+i], 10, 64); err != nil {
			return fail("%s: %v", names[3+i], err)
		}
	}
	for i, t := range []*time.Time{&o.Start, &o.End} {
		if *t, err = time.Parse(time.RFC3339, v[6+i]); err != nil {
			return fail("%s: %v", names[6+i], err)
		}
		*t = t.UTC()
	}
	if o.Text() != text {
		return fail("not in canonical form (UTC, whole seconds, plain decimal numbers)")
	}
	if err := o.CheckTerms(); err != nil {
		return Offer{}, err
	}
	return o, nil
}

// CheckTerms checks the terms on their own.
func (o Offer) CheckTerms() error {
	period := o.End.Sub(o.Start)
	switch {
	case o.Owner.IsZero() || o.Node.IsZero() || o.Cast.IsZero():
		return fmt.Errorf("%w: zero key", ErrTerms)
	case period < MinPeriod || period > MaxPeriod:
		return fmt.Errorf("%w: period of %s, want %s to %s", ErrTerms, period, MinPeriod, MaxPeriod)
	case o.BandwidthMbps == 0 || o.BandwidthMbps > MaxBandwidthMbps:
		return fmt.Errorf("%w: bandwidth_mbps %d, want 1 to %d", ErrTerms, o.BandwidthMbps, MaxBandwidthMbps)
	case o.StorageGB == 0 || o.StorageGB > MaxStorageGB:
		return fmt.Errorf("%w: storage_gb %d, want 1 to %d", ErrTerms, o.StorageGB, MaxStorageGB)
	case o.AvailabilityHours == 0 || float64(o.AvailabilityHours) > period.Hours():
		return fmt.Errorf("%w: availability_hours %d, want 1 to the %.0f hours of the period", ErrTerms, o.AvailabilityHours, period.Hours())
	}
	return nil
}

// Signed is a text with its off-chain message (base64) and signature
// (base58).
type Signed struct {
	Message   string `json:"message"`
	Signature string `json:"signature"`
}

// Contract is an accepted offer, countersigned by the CAST.
type Contract struct {
	Version  int       `json:"version"` // 1
	ID       string    `json:"id"`
	Offer    Offer     `json:"offer"`
	Owner    Signed    `json:"owner_signed"`
	Accepted time.Time `json:"accepted"`
	Cast     Signed    `json:"cast_signed"`
}

// ID is the contract ID of an offer's signed message bytes.
func ID(offerMessage []byte) string {
	sum := sha256.Sum256(offerMessage)
	return hex.EncodeToString(sum[:])
}

func acceptText(id string, cast identity.PublicKey, at time.Time) string {
	return contractTitle + "; offer: " + id + "; cast: " + cast.String() + "; accepted: " + at.UTC().Format(time.RFC3339)
}

// Accept checks an owner's signed offer (message optional, see
// offchain.VerifyText) for this CAST at now and countersigns it. It does
// not check that the owner owns the node or for overlaps: the Store does.
func Accept(cast *identity.Keypair, owner identity.PublicKey, text, message, signature string, now time.Time) (Contract, error) {
	o, err := ParseOffer(text)
	if err != nil {
		return Contract{}, err
	}
	if o.Owner != owner {
		return Contract{}, fmt.Errorf("%w: offer names owner %s, signer is %s", ErrTerms, o.Owner, owner)
	}
	if o.Cast != cast.Public() {
		return Contract{}, fmt.Errorf("%w: it names %s, this is %s", ErrWrongCast, o.Cast, cast.Public())
	}
	raw, err := offchain.VerifyText(owner, text, message, signature)
	if err != nil {
		return Contract{}, err
	}
	now = now.UTC().Truncate(time.Second)
	if o.Start.Before(now.Add(-MaxBackdate)) {
		return Contract{}, fmt.Errorf("%w: starts %s, more than %s before now", ErrTerms, o.Start.Format(time.RFC3339), MaxBackdate)
	}
	c := Contract{Version: 1, ID: ID(raw), Offer: o, Accepted: now,
		Owner: Signed{Message: base64.StdEncoding.EncodeToString(raw), Signature: signature}}
	c.Cast.Message, c.Cast.Signature, err = offchain.SignText(cast, acceptText(c.ID, cast.Public(), now))
	if err != nil {
		return Contract{}, err
	}
	return c, nil
}

// Verify checks every signature and that the fields are what was signed.
func (c Contract) Verify() error {
	fail := func(f string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrBadContract, fmt.Sprintf(f, a...))
	}
	if c.Version != 1 {
		return fail("version %d", c.Version)
	}
	text := c.Offer.Text()
	o, err := ParseOffer(text)
	if err != nil {
		return fail("%v", err)
	}
	raw, err := offchain.VerifyText(o.Owner, text, c.Owner.Message, c.Owner.Signature)
	if err != nil {
		return fail("owner: %v", err)
	}
	if ID(raw) != c.ID {
		return fail("id is not the offer's")
	}
	if c.Accepted.IsZero() || !c.Accepted.Equal(c.Accepted.UTC().Truncate(time.Second)) {
		return fail("accepted time not in whole seconds")
	}
	if _, err := offchain.VerifyText(o.Cast, acceptText(c.ID, o.Cast, c.Accepted), c.Cast.Message, c.Cast.Signature); err != nil {
		return fail("cast: %v", err)
	}
	return nil
}

// maxContractJSON bounds a contract record: two messages of at most
// offchain.MaxLenLedger, base64, and the fields.
const maxContractJSON = 8 << 10

// Decode parses and verifies a contract record.
func Decode(b []byte) (Contract, error) {
	if len(b) > maxContractJSON {
		return Contract{}, fmt.Errorf("%w: %d bytes", ErrMalformed, len(b))
	}
	var c Contract
	if err := json.Unmarshal(b, &c); err != nil {
		return Contract{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if err := c.Verify(); err != nil {
		return Contract{}, err
	}
	return c, nil
}

// Encode returns the record of c (indented, as in testdata).
func Encode(c Contract) ([]byte, error) {
	return json.MarshalIndent(c, "", "  ")
}
