// Package solrpc is a small Solana JSON-RPC client for the beacon: the
// calls it needs to anchor a registration and to check a record
// (getLatestBlockhash, sendTransaction, getSignatureStatuses,
// getTransaction, getBlockHeight). It is stdlib only: solana-go's rpc
// package would cost the router megabytes of flash.
//
// Every reply is parsed strictly and bounded (maxReply): the endpoint is a
// third party, and a wrong or hostile answer must give an error, never a
// panic or a transaction we did not ask for.
package solrpc

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/blockcast/beacon/shared/soltx"
)

// maxReply bounds a reply body: a transaction with its metadata and logs
// is a few KiB.
const maxReply = 1 << 20

// Sentinel errors callers branch on.
var (
	// ErrBlockhashNotFound: the transaction's blockhash is unknown or
	// expired; build it again with a fresh one.
	ErrBlockhashNotFound = errors.New("solrpc: blockhash not found (expired)")
	// ErrAlreadyProcessed: the same transaction landed before.
	ErrAlreadyProcessed = errors.New("solrpc: transaction already processed")
	// ErrBadReply: the endpoint answered something that is not the
	// JSON-RPC reply the method has.
	ErrBadReply = errors.New("solrpc: malformed reply")
	// ErrUnavailable: the endpoint could not be reached or answered an
	// HTTP error; the same call may work later.
	ErrUnavailable = errors.New("solrpc: endpoint unavailable")
)

// Error is a JSON-RPC error the endpoint answered.
type Error struct {
	Code    int             `json:"code"`
	Message string          `json:"message"`
	Data    json.RawMessage `json:"data,omitempty"`
}

func (e *Error) Error() string { return fmt.Sprintf("solana rpc error %d: %s", e.Code, e.Message) }

// Commitment levels.
const (
	Confirmed = "confirmed"
	Finalized = "finalized"
)

// Client calls one JSON-RPC endpoint.
type Client struct {
	url  string
	http *http.Client
	id   atomic.Uint64
}

// New returns a client of the endpoint at url (http or https).
func New(url string) (*Client, error) {
	if !strings.HasPrefix(url, "http://") && !strings.HasPrefix(url, "https://") {
		return nil, fmt.Errorf("solrpc: endpoint %q: want an http:// or https:// URL", url)
	}
	return &Client{url: url, http: &http.Client{Timeout: 30 * time.Second}}, nil
}

// URL is the endpoint.
func (c *Client) URL() string { return c.url }

// call makes one JSON-RPC call and returns its raw result.
func (c *Client) call(ctx context.Context, method string, params []any) (json.RawMessage, error) {
	id := c.id.Add(1)
	body, err := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": id, "method": method, "params": params})
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrUnavailable, method, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxReply+1))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrUnavailable, method, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%w: %s: HTTP %s", ErrUnavailable, method, resp.Status)
	}
	if len(raw) > maxReply {
		return nil, fmt.Errorf("%w: %s: reply over %d bytes", ErrBadReply, method, maxReply)
	}
	return decodeEnvelope(raw, id)
}

// decodeEnvelope parses a JSON-RPC 2.0 reply to request id.
func decodeEnvelope(raw []byte, id uint64) (json.RawMessage, error) {
	var env struct {
		JSONRPC string          `json:"jsonrpc"`
		ID      *uint64         `json:"id"`
		Result  json.RawMessage `json:"result"`
		Error   *Error          `json:"error"`
	}
	if err := json.Unmarshal(raw, &env); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadReply, err)
	}
	if env.Error != nil {
		return nil, classify(env.Error)
	}
	if env.JSONRPC != "2.0" || env.ID == nil || *env.ID != id {
		return nil, fmt.Errorf("%w: not the reply to request %d", ErrBadReply, id)
	}
	if len(env.Result) == 0 {
		return nil, fmt.Errorf("%w: no result", ErrBadReply)
	}
	return env.Result, nil
}

// classify wraps the errors callers branch on: the preflight's
// BlockhashNotFound and AlreadyProcessed.
func classify(e *Error) error {
	var data struct {
		Err json.RawMessage `json:"err"`
	}
	_ = json.Unmarshal(e.Data, &data)
	switch txErr := strings.Trim(string(data.Err), `"`); {
	case txErr == "BlockhashNotFound" || strings.Contains(e.Message, "Blockhash not found"):
		return fmt.Errorf("%w: %w", ErrBlockhashNotFound, e)
	case txErr == "AlreadyProcessed" || strings.Contains(e.Message, "already been processed"):
		return fmt.Errorf("%w: %w", ErrAlreadyProcessed, e)
	}
	return e
}

// Blockhash is a recent blockhash and the last block height at which a
// transaction using it can land.
type Blockhash struct {
	Hash                 soltx.Hash
	LastValidBlockHeight uint64
}

// LatestBlockhash asks for a blockhash to build a transaction with.
func (c *Client) LatestBlockhash(ctx context.Context) (Blockhash, error) {
	raw, err := c.call(ctx, "getLatestBlockhash", []any{map[string]any{"commitment": Confirmed}})
	if err != nil {
		return Blockhash{}, err
	}
	return DecodeBlockhash(raw)
}

// DecodeBlockhash parses getLatestBlockhash's result.
func DecodeBlockhash(raw []byte) (Blockhash, error) {
	var r struct {
		Value *struct {
			Blockhash            string  `json:"blockhash"`
			LastValidBlockHeight *uint64 `json:"lastValidBlockHeight"`
		} `json:"value"`
	}
	if err := json.Unmarshal(raw, &r); err != nil || r.Value == nil || r.Value.LastValidBlockHeight == nil {
		return Blockhash{}, fmt.Errorf("%w: getLatestBlockhash: want {value:{blockhash,lastValidBlockHeight}}", ErrBadReply)
	}
	h, err := soltx.ParseHash(r.Value.Blockhash)
	if err != nil {
		return Blockhash{}, fmt.Errorf("%w: getLatestBlockhash: %w", ErrBadReply, err)
	}
	return Blockhash{Hash: h, LastValidBlockHeight: *r.Value.LastValidBlockHeight}, nil
}

// BlockHeight is the current block height (confirmed).
func (c *Client) BlockHeight(ctx context.Context) (uint64, error) {
	raw, err := c.call(ctx, "getBlockHeight", []any{map[string]any{"commitment": Confirmed}})
	if err != nil {
		return 0, err
	}
	var h uint64
	if err := json.Unmarshal(raw, &h); err != nil {
		return 0, fmt.Errorf("%w: getBlockHeight: %w", ErrBadReply, err)
	}
	return h, nil
}

// SendTransaction submits a fully signed transaction (base64, with the
// preflight checks) and returns its ID. A preflight refusal is an *Error,
// wrapped by ErrBlockhashNotFound or ErrAlreadyProcessed when it is one
// of those.
func (c *Client) SendTransaction(ctx context.Context, tx *soltx.Transaction) (soltx.Signature, error) {
	if err := tx.Verify(); err != nil {
		return soltx.Signature{}, fmt.Errorf("solrpc: not sending an incompletely signed transaction: %w", err)
	}
	b64, err := tx.Base64()
	if err != nil {
		return soltx.Signature{}, err
	}
	raw, err := c.call(ctx, "sendTransaction", []any{b64, map[string]any{"encoding": "base64", "preflightCommitment": Confirmed}})
	if err != nil {
		return soltx.Signature{}, err
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return soltx.Signature{}, fmt.Errorf("%w: sendTransaction: %w", ErrBadReply, err)
	}
	// The ID is the first signature; an endpoint that names another
	// transaction is not believed.
	if s != tx.ID().String() {
		return soltx.Signature{}, fmt.Errorf("%w: sendTransaction answered signature %q for transaction %s", ErrBadReply, s, tx.ID())
	}
	return tx.ID(), nil
}

// Status is a transaction's status (getSignatureStatuses).
type Status struct {
	Slot               uint64
	Confirmations      *uint64         // nil once finalized
	Err                json.RawMessage // nil when the transaction succeeded
	ConfirmationStatus string          // processed, confirmed or finalized
}

// Confirmed reports whether the transaction is confirmed or finalized.
func (s *Status) Confirmed() bool {
	return s.ConfirmationStatus == Confirmed || s.ConfirmationStatus == Finalized
}

// SignatureStatuses returns one status per signature, nil for one the
// endpoint does not know.
func (c *Client) SignatureStatuses(ctx context.Context, sigs ...soltx.Signature) ([]*Status, error) {
	names := make([]string, len(sigs))
	for i, s := range sigs {
		names[i] = s.String()
	}
	raw, err := c.call(ctx, "getSignatureStatuses", []any{names, map[string]any{"searchTransactionHistory": true}})
	if err != nil {
		return nil, err
	}
	return DecodeStatuses(raw, len(sigs))
}

// DecodeStatuses parses getSignatureStatuses' result, which must hold n
// entries.
func DecodeStatuses(raw []byte, n int) ([]*Status, error) {
	var r struct {
		Value []*struct {
			Slot               *uint64         `json:"slot"`
			Confirmations      *uint64         `json:"confirmations"`
			Err                json.RawMessage `json:"err"`
			ConfirmationStatus *string         `json:"confirmationStatus"`
		} `json:"value"`
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, fmt.Errorf("%w: getSignatureStatuses: %w", ErrBadReply, err)
	}
	if len(r.Value) != n {
		return nil, fmt.Errorf("%w: getSignatureStatuses: %d statuses for %d signatures", ErrBadReply, len(r.Value), n)
	}
	out := make([]*Status, n)
	for i, v := range r.Value {
		if v == nil {
			continue
		}
		if v.Slot == nil {
			return nil, fmt.Errorf("%w: getSignatureStatuses: status %d has no slot", ErrBadReply, i)
		}
		st := &Status{Slot: *v.Slot, Confirmations: v.Confirmations, Err: nullToNil(v.Err)}
		if v.ConfirmationStatus != nil {
			switch cs := *v.ConfirmationStatus; cs {
			case "processed", Confirmed, Finalized:
				st.ConfirmationStatus = cs
			default:
				return nil, fmt.Errorf("%w: getSignatureStatuses: confirmation status %q", ErrBadReply, clip(cs))
			}
		}
		out[i] = st
	}
	return out, nil
}

func nullToNil(m json.RawMessage) json.RawMessage {
	if len(m) == 0 || string(m) == "null" {
		return nil
	}
	return m
}

func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// ErrNotFound: the endpoint does not have the transaction (at the
// commitment asked for).
var ErrNotFound = errors.New("solrpc: transaction not found")

// Landed is a transaction read back from the chain.
type Landed struct {
	Slot      uint64
	BlockTime int64 // unix seconds, 0 when the endpoint does not know
	Tx        *soltx.Transaction
	Err       json.RawMessage // the transaction's error, nil when it succeeded
}

// Transaction reads a transaction at the confirmed commitment, in base64,
// and decodes it strictly. ErrNotFound when the endpoint has none.
func (c *Client) Transaction(ctx context.Context, sig soltx.Signature) (*Landed, error) {
	raw, err := c.call(ctx, "getTransaction", []any{sig.String(), map[string]any{
		"encoding": "base64", "commitment": Confirmed, "maxSupportedTransactionVersion": 0}})
	if err != nil {
		return nil, err
	}
	l, err := DecodeTransaction(raw)
	if err != nil {
		return nil, err
	}
	if l.Tx.ID() != sig {
		return nil, fmt.Errorf("%w: getTransaction %s answered transaction %s", ErrBadReply, sig, l.Tx.ID())
	}
	return l, nil
}

// DecodeTransaction parses getTransaction's result in the base64
// encoding; ErrNotFound for null.
func DecodeTransaction(raw []byte) (*Landed, error) {
	if string(bytes.TrimSpace(raw)) == "null" {
		return nil, ErrNotFound
	}
	var r struct {
		Slot        *uint64           `json:"slot"`
		BlockTime   *int64            `json:"blockTime"`
		Transaction []json.RawMessage `json:"transaction"`
		Meta        *struct {
			Err json.RawMessage `json:"err"`
		} `json:"meta"`
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, fmt.Errorf("%w: getTransaction: %w", ErrBadReply, err)
	}
	if r.Slot == nil || r.Meta == nil || len(r.Transaction) != 2 {
		return nil, fmt.Errorf("%w: getTransaction: want slot, meta and transaction [data, \"base64\"]", ErrBadReply)
	}
	var data, enc string
	if json.Unmarshal(r.Transaction[0], &data) != nil || json.Unmarshal(r.Transaction[1], &enc) != nil || enc != "base64" {
		return nil, fmt.Errorf("%w: getTransaction: want transaction [data, \"base64\"]", ErrBadReply)
	}
	if len(data) > base64.StdEncoding.EncodedLen(soltx.PacketDataSize) {
		return nil, fmt.Errorf("%w: getTransaction: transaction of %d base64 characters", ErrBadReply, len(data))
	}
	tx, err := soltx.DecodeBase64(data)
	if err != nil {
		return nil, fmt.Errorf("%w: getTransaction: %w", ErrBadReply, err)
	}
	l := &Landed{Slot: *r.Slot, Tx: tx, Err: nullToNil(r.Meta.Err)}
	if r.BlockTime != nil {
		l.BlockTime = *r.BlockTime
	}
	return l, nil
}
