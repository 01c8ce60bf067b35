// Package signedreq signs the HTTP requests a node sends to castd with the
// node key, and verifies them on the castd side.
//
// A signed request carries four headers:
//
//	X-Blockcast-Node       the node ID: base58 ed25519 public key
//	X-Blockcast-Timestamp  unix seconds, decimal, no sign or leading zeros
//	X-Blockcast-Nonce      16 random bytes, 32 lowercase hex digits
//	X-Blockcast-Signature  standard base64 (padded) of the 64-byte ed25519 signature
//
// The signature is over these bytes (see SignedBytes):
//
//	"blockcast-http-request-v1\x00" || method "\n" request-URI "\n"
//	timestamp "\n" nonce "\n" node-ID "\n" hex(SHA-256(body))
//
// where request-URI is the escaped path and query exactly as sent on the
// request line (URL.RequestURI) and the header values appear exactly as sent.
// The prefix keeps these signatures from meaning anything in another
// protocol that uses the same key (Solana transactions and off-chain messages
// start with other bytes). The body is bound by its hash, so the signed bytes
// stay small whatever the body size.
//
// The verifier accepts a timestamp within a window (60 s by default) of its
// clock, in either direction, and refuses a nonce it has already accepted
// from the same node while that nonce's timestamp is in the window: together
// these refuse replays without keeping state forever. Nonces are remembered
// only after the signature verified, so unsigned traffic cannot fill the
// table, and the table is bounded (ErrBusy when full).
//
// Not covered by the signature: the Host (a request captured on its way to
// one castd could be replayed to another that shares no nonce table within
// the window) and headers other than the four above. A signed request must
// not be redirected: the client should not follow redirects, because the
// signature names the original URI.
package signedreq

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/blockcast/beacon/shared/identity"
)

// Header names.
const (
	HeaderNode      = "X-Blockcast-Node"
	HeaderTimestamp = "X-Blockcast-Timestamp"
	HeaderNonce     = "X-Blockcast-Nonce"
	HeaderSignature = "X-Blockcast-Signature"
)

// Domain is the domain-separation prefix of the signed bytes.
const Domain = "blockcast-http-request-v1\x00"

// NonceSize is the nonce length in bytes (before hex encoding).
const NonceSize = 16

// Sentinel errors; StatusCode maps them to HTTP statuses.
var (
	ErrUnsigned     = errors.New("signedreq: request is not signed")
	ErrMalformed    = errors.New("signedreq: malformed signature header")
	ErrBadSignature = errors.New("signedreq: bad signature")
	ErrStale        = errors.New("signedreq: timestamp outside the accepted window")
	ErrReplay       = errors.New("signedreq: nonce already used")
	ErrBusy         = errors.New("signedreq: too many recent signed requests")
	ErrTooLarge     = errors.New("signedreq: request body too large")
)

// SignedBytes returns the bytes a request signature covers. method,
// requestURI, timestamp, nonce and nodeID are exactly as on the wire.
func SignedBytes(method, requestURI, timestamp, nonce, nodeID string, body []byte) []byte {
	sum := sha256.Sum256(body)
	return signedBytes(method, requestURI, timestamp, nonce, nodeID, &sum)
}

func signedBytes(method, requestURI, timestamp, nonce, nodeID string, bodySum *[sha256.Size]byte) []byte {
	n := len(Domain) + len(method) + len(requestURI) + len(timestamp) + len(nonce) + len(nodeID) + 5 + 2*sha256.Size
	b := make([]byte, 0, n)
	b = append(b, Domain...)
	b = append(b, method...)
	b = append(b, '\n')
	b = append(b, requestURI...)
	b = append(b, '\n')
	b = append(b, timestamp...)
	b = append(b, '\n')
	b = append(b, nonce...)
	b = append(b, '\n')
	b = append(b, nodeID...)
	b = append(b, '\n')
	return hex.AppendEncode(b, bodySum[:])
}

// Sign sets the signature headers on r, an outgoing request whose body is
// body (nil for none), signed by kp at time now. The caller sends body as r's
// body unchanged.
func Sign(r *http.Request, body []byte, kp *identity.Keypair, now time.Time) error {
	var nonce [NonceSize]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return fmt.Errorf("signedreq: nonce: %w", err)
	}
	return signWithNonce(r, body, kp, now, nonce)
}

func signWithNonce(r *http.Request, body []byte, kp *identity.Keypair, now time.Time, nonce [NonceSize]byte) error {
	if r.URL == nil {
		return errors.New("signedreq: request has no URL")
	}
	method := r.Method
	if method == "" {
		method = http.MethodGet // what net/http sends for an empty method
	}
	ts := strconv.FormatInt(now.Unix(), 10)
	nonceHex := hex.EncodeToString(nonce[:])
	id := kp.ID()
	sig := kp.Sign(SignedBytes(method, r.URL.RequestURI(), ts, nonceHex, id, body))
	if r.Header == nil {
		r.Header = make(http.Header)
	}
	r.Header.Set(HeaderNode, id)
	r.Header.Set(HeaderTimestamp, ts)
	r.Header.Set(HeaderNonce, nonceHex)
	r.Header.Set(HeaderSignature, base64.StdEncoding.EncodeToString(sig))
	return nil
}

// ReadBody reads r's body, refusing (ErrTooLarge) one longer than max bytes
// without reading more than max+1 of it.
func ReadBody(r *http.Request, max int64) ([]byte, error) {
	if r.Body == nil || r.Body == http.NoBody {
		return nil, nil
	}
	if max < 0 {
		max = 0
	}
	if r.ContentLength > max {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, r.ContentLength, max)
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, max+1))
	if err != nil {
		return nil, fmt.Errorf("signedreq: read body: %w", err)
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%w: more than %d bytes", ErrTooLarge, max)
	}
	return b, nil
}

// StatusCode is the HTTP status a server should answer when Verify or
// ReadBody fails with err: 400 for malformed headers, 401 for a request that
// is unsigned, badly signed, stale or replayed, 413 for a body too large, 503
// when the nonce table is full (the client may retry later), 200 for nil and
// 400 for anything else (a body that could not be read).
func StatusCode(err error) int {
	switch {
	case err == nil:
		return http.StatusOK
	case errors.Is(err, ErrTooLarge):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, ErrBusy):
		return http.StatusServiceUnavailable
	case errors.Is(err, ErrMalformed):
		return http.StatusBadRequest
	case errors.Is(err, ErrUnsigned), errors.Is(err, ErrBadSignature),
		errors.Is(err, ErrStale), errors.Is(err, ErrReplay):
		return http.StatusUnauthorized
	default:
		return http.StatusBadRequest
	}
}
