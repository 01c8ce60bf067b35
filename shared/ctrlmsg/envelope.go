package ctrlmsg

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/blockcast/beacon/shared/identity"
)

// MaxPayload is the largest payload Seal writes and Open reads. Control
// messages are small; the bound keeps a flood of big ones from costing
// memory or CPU before the signature is even checked.
const MaxPayload = 64 << 10

// NonceSize is the size of a message or token nonce, in bytes (24 hex
// digits on the wire).
const NonceSize = 12

// sigDomain separates these signatures from every other use of a node key.
const sigDomain = "blockcast-mqtt-v1\x00"

// Kind says what a message's body is. It must match the topic's leaf.
type Kind string

// Message kinds.
const (
	KindStatus Kind = "status"
	KindHealth Kind = "health"
	KindCmd    Kind = "cmd"
	KindResult Kind = "result"
	// KindReceipt (a receipt.Signed) and KindRecords (a receipt.Records,
	// the answer to an audit) travel on the receipt topic.
	KindReceipt Kind = "receipt"
	KindRecords Kind = "records"
)

// leaf returns the topic leaf a kind travels on.
func (k Kind) leaf() (Leaf, bool) {
	switch k {
	case KindStatus:
		return LeafStatus, true
	case KindHealth:
		return LeafHealth, true
	case KindCmd:
		return LeafCmd, true
	case KindResult:
		return LeafResult, true
	case KindReceipt, KindRecords:
		return LeafReceipt, true
	}
	return "", false
}

// Errors Open (and VerifyToken) return, wrapped; callers branch on them, and
// castd counts drops by them.
var (
	// ErrMalformed: not a well formed envelope, message, or token.
	ErrMalformed = errors.New("ctrlmsg: malformed")
	// ErrTooLarge: the payload is over MaxPayload.
	ErrTooLarge = errors.New("ctrlmsg: payload too large")
	// ErrBadSig: the signature does not verify.
	ErrBadSig = errors.New("ctrlmsg: bad signature")
	// ErrWrongSigner: validly signed, but by a key that may not say this:
	// not the node whose topic it is on, or not the CAST key for a command.
	ErrWrongSigner = errors.New("ctrlmsg: wrong signer")
	// ErrStale: the timestamp is outside the accepted window.
	ErrStale = errors.New("ctrlmsg: stale timestamp")
	// ErrReplay: this signer's nonce was seen before (or is too old for the
	// replay cache to vouch for).
	ErrReplay = errors.New("ctrlmsg: replayed")
	// ErrBadBody: the body does not decode as its kind's type, or fails
	// that type's checks.
	ErrBadBody = errors.New("ctrlmsg: bad body")
)

// Msg is an opened (verified) message.
type Msg struct {
	Topic  string             // the topic it arrived on
	NodeID string             // the node whose subtree Topic is in
	Leaf   Leaf               // Topic's leaf
	Signer identity.PublicKey // who signed it
	Kind   Kind
	TS     time.Time // the signer's clock, millisecond precision
	Nonce  string    // 24 lowercase hex digits
	Body   json.RawMessage
}

// Fresh reports whether m's timestamp is within window of now, either way.
func (m *Msg) Fresh(window time.Duration, now time.Time) bool {
	return fresh(m.TS, window, now)
}

func fresh(ts time.Time, window time.Duration, now time.Time) bool {
	d := now.Sub(ts)
	return d <= window && d >= -window
}

// wireMsg is the signed part of the envelope, in field order.
type wireMsg struct {
	Signer string          `json:"signer"`
	Kind   Kind            `json:"kind"`
	TS     int64           `json:"ts"`
	Nonce  string          `json:"nonce"`
	Body   json.RawMessage `json:"body"`
}

type wireEnvelope struct {
	Sig string          `json:"sig"`
	Msg json.RawMessage `json:"msg"`
}

// Seal signs body as a message of kind on topic with kp and returns the
// payload to publish. body must encode as a JSON object (one of this
// package's body types). The kind must match the topic's leaf.
func Seal(kp *identity.Keypair, topic string, kind Kind, body any, now time.Time) ([]byte, error) {
	var nonce [NonceSize]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return nil, fmt.Errorf("ctrlmsg: nonce: %w", err)
	}
	return seal(kp, topic, kind, body, now, nonce)
}

func seal(kp *identity.Keypair, topic string, kind Kind, body any, now time.Time, nonce [NonceSize]byte) ([]byte, error) {
	if kp == nil {
		return nil, errors.New("ctrlmsg: seal: no key")
	}
	_, leaf, err := ParseTopic(topic)
	if err != nil {
		return nil, err
	}
	if want, ok := kind.leaf(); !ok || want != leaf {
		return nil, fmt.Errorf("%w: kind %q on a %q topic", ErrMalformed, kind, leaf)
	}
	b, err := json.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("ctrlmsg: encode body: %w", err)
	}
	if len(b) == 0 || b[0] != '{' {
		return nil, fmt.Errorf("%w: body is not a JSON object", ErrMalformed)
	}
	msg, err := json.Marshal(wireMsg{
		Signer: kp.ID(),
		Kind:   kind,
		TS:     now.UnixMilli(),
		Nonce:  hex.EncodeToString(nonce[:]),
		Body:   b,
	})
	if err != nil {
		return nil, fmt.Errorf("ctrlmsg: encode message: %w", err)
	}
	sig := kp.Sign(signedBytes(topic, msg))
	// Built by hand rather than with json.Marshal so that msg goes out as
	// the exact bytes that were signed.
	out := make([]byte, 0, len(msg)+128)
	out = append(out, `{"sig":"`...)
	out = base64.StdEncoding.AppendEncode(out, sig)
	out = append(out, `","msg":`...)
	out = append(out, msg...)
	out = append(out, '}')
	if len(out) > MaxPayload {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(out), MaxPayload)
	}
	return out, nil
}

func signedBytes(topic string, msg []byte) []byte {
	b := make([]byte, 0, len(sigDomain)+len(topic)+1+len(msg))
	b = append(b, sigDomain...)
	b = append(b, topic...)
	b = append(b, 0)
	return append(b, msg...)
}

// Open verifies payload as received on topic and returns the message.
//
// The signer must be the node whose subtree the topic is in, except on a
// cmd topic, where it must be expect (the CAST key; a cmd is refused when
// expect is nil). When expect is set it is required on every topic.
//
// When window > 0 the timestamp must be within window of now (ErrStale) and,
// if replay is not nil, the signer's nonce must be new (ErrReplay). With
// window <= 0 neither is checked: the caller applies its own rule (castd
// does so for last-will statuses, which are signed long before they are
// sent) and may call Fresh and ReplayCache.Check itself.
func Open(payload []byte, topic string, expect *identity.PublicKey, window time.Duration, now time.Time, replay *ReplayCache) (Msg, error) {
	if len(payload) > MaxPayload {
		return Msg{}, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(payload), MaxPayload)
	}
	id, idKey, leaf, err := parseTopic(topic)
	if err != nil {
		return Msg{}, err
	}
	var env wireEnvelope
	var w wireMsg
	if !openFast(payload, &env, &w) {
		env, w = wireEnvelope{}, wireMsg{}
		if err := json.Unmarshal(payload, &env); err != nil {
			return Msg{}, fmt.Errorf("%w: envelope: %w", ErrMalformed, err)
		}
		if len(env.Msg) == 0 || env.Msg[0] != '{' {
			return Msg{}, fmt.Errorf("%w: envelope has no msg object", ErrMalformed)
		}
		if err := json.Unmarshal(env.Msg, &w); err != nil {
			return Msg{}, fmt.Errorf("%w: msg: %w", ErrMalformed, err)
		}
	}
	sig, err := base64.StdEncoding.Strict().DecodeString(env.Sig)
	if err != nil || len(sig) != identity.SignatureSize {
		return Msg{}, fmt.Errorf("%w: sig is not a base64 ed25519 signature", ErrMalformed)
	}
	m := Msg{Topic: topic, NodeID: id, Leaf: leaf, Kind: w.Kind, Nonce: w.Nonce, Body: w.Body}
	if want, ok := w.Kind.leaf(); !ok || want != leaf {
		return Msg{}, fmt.Errorf("%w: kind %.20q on a %q topic", ErrMalformed, w.Kind, leaf)
	}
	if w.TS <= 0 {
		return Msg{}, fmt.Errorf("%w: ts %d", ErrMalformed, w.TS)
	}
	m.TS = time.UnixMilli(w.TS)
	if !validNonce(w.Nonce) {
		return Msg{}, fmt.Errorf("%w: nonce is not %d lowercase hex digits", ErrMalformed, 2*NonceSize)
	}
	if body := bytes.TrimLeft(w.Body, " \t\r\n"); len(body) == 0 || body[0] != '{' {
		return Msg{}, fmt.Errorf("%w: body is not a JSON object", ErrMalformed)
	}
	if w.Signer == id {
		m.Signer = idKey // the usual case: decoded once, with the topic
	} else if m.Signer, err = identity.ParsePublicKey(w.Signer); err != nil {
		return Msg{}, fmt.Errorf("%w: signer: %w", ErrMalformed, err)
	}

	// Who may sign is checked before the (costlier) signature.
	switch {
	case expect != nil && m.Signer != *expect:
		return Msg{}, fmt.Errorf("%w: signed by %s, want %s", ErrWrongSigner, m.Signer, *expect)
	case leaf == LeafCmd && expect == nil:
		return Msg{}, fmt.Errorf("%w: no CAST key to check a command against", ErrWrongSigner)
	case leaf != LeafCmd && w.Signer != id:
		return Msg{}, fmt.Errorf("%w: signed by %s on node %s's topic", ErrWrongSigner, m.Signer, id)
	}
	if !m.Signer.Verify(signedBytes(topic, env.Msg), sig) {
		return Msg{}, ErrBadSig
	}
	if window > 0 {
		if !fresh(m.TS, window, now) {
			return Msg{}, fmt.Errorf("%w: ts %s is %s from now, window %s", ErrStale,
				m.TS.UTC().Format(time.RFC3339Nano), now.Sub(m.TS).Round(time.Millisecond), window)
		}
		if replay != nil {
			if err := replay.Check(m.Signer, m.Nonce, m.TS, now); err != nil {
				return Msg{}, err
			}
		}
	}
	return m, nil
}

// Seal's exact envelope shape, which openFast recognizes.
const (
	envPrefix = `{"sig":"`
	envMid    = `","msg":`
	sigB64Len = 88 // base64 of 64 bytes
)

// openFast decodes an envelope in exactly Seal's shape without decoding it
// as JSON twice, the envelope and then msg (it is most of Open's cost after
// the signature). It reports false for anything else, and the caller then
// decodes in full; for what it accepts, the result is the same as the full
// decode's: the shape leaves no room for escapes, duplicate keys or
// whitespace around msg.
func openFast(p []byte, env *wireEnvelope, w *wireMsg) bool {
	n := len(envPrefix) + sigB64Len
	if len(p) < n+len(envMid)+3 || string(p[:len(envPrefix)]) != envPrefix || string(p[n:n+len(envMid)]) != envMid {
		return false
	}
	sig := p[len(envPrefix):n]
	for _, c := range sig {
		if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '+' || c == '/' || c == '=') {
			return false
		}
	}
	msg := p[n+len(envMid) : len(p)-1]
	// msg must be one object, nothing around it: it starts with '{' and
	// ends with '}' (so no trailing space), and Unmarshal refuses anything
	// after the value.
	if p[len(p)-1] != '}' || msg[0] != '{' || msg[len(msg)-1] != '}' {
		return false
	}
	if err := json.Unmarshal(msg, w); err != nil {
		return false
	}
	env.Sig, env.Msg = string(sig), msg
	return true
}

func validNonce(s string) bool {
	if len(s) != 2*NonceSize {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}
