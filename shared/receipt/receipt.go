package receipt

import (
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"time"

	"github.com/blockcast/beacon/shared/identity"
)

// Version is the receipt format this package writes and reads.
const Version = 1

// Limits on what a receipt may hold; a signed receipt is bounded by
// MaxSigned, which fits a control-plane message with room to spare.
const (
	MaxObjects  = 256      // per-object claims listed in one receipt
	MaxSigned   = 48 << 10 // bytes of a signed receipt
	MaxInterval = 24 * time.Hour
)

// PathBytes are body bytes by delivery path.
type PathBytes struct {
	Hit       uint64 `json:"hit"`
	Fill      uint64 `json:"fill"`
	Multicast uint64 `json:"multicast"`
}

// Sum is the total.
func (p PathBytes) Sum() uint64 { return p.Hit + p.Fill + p.Multicast }

// Add counts n bytes on path.
func (p *PathBytes) Add(path Path, n uint64) {
	switch path {
	case PathHit:
		p.Hit += n
	case PathFill:
		p.Fill += n
	case PathMulticast:
		p.Multicast += n
	}
}

// Object is what a receipt claims for one object.
type Object struct {
	Key      HexHash `json:"k"`
	Requests uint64  `json:"r"`
	Bytes    uint64  `json:"b"`
}

// Receipt is what a beacon says it served in [Start, End).
type Receipt struct {
	V        int       `json:"v"`
	Node     string    `json:"node"` // base58 node ID, the signer
	Seq      uint64    `json:"seq"`  // 1, 2, ... per node, never reused
	Start    int64     `json:"start"`
	End      int64     `json:"end"` // unix ms
	Requests uint64    `json:"requests"`
	Bytes    uint64    `json:"bytes"`
	Objects  uint64    `json:"objects"` // distinct object keys
	ByPath   PathBytes `json:"by_path"`
	// Records is the number of leaves under Root; Requests - Records
	// requests were over the beacon's per-interval record bound and are
	// counted only.
	Records uint64  `json:"records"`
	Root    HexHash `json:"root"`
	// Top lists the objects with the most bytes (at most MaxObjects); the
	// rest are summed in Other.
	Top   []Object `json:"top,omitempty"`
	Other Object   `json:"other"`
}

// StartTime and EndTime are the interval's ends.
func (r *Receipt) StartTime() time.Time { return time.UnixMilli(r.Start) }
func (r *Receipt) EndTime() time.Time   { return time.UnixMilli(r.End) }

// Validate checks that r is internally consistent: the sums add up, the
// interval is sane. It does not check the signature or anything castd knows.
func (r *Receipt) Validate() error {
	bad := func(f string, a ...any) error { return fmt.Errorf("%w: "+f, append([]any{ErrMalformed}, a...)...) }
	switch {
	case r.V != Version:
		return bad("version %d, want %d", r.V, Version)
	case r.Seq == 0 || r.Seq > maxCount:
		return bad("seq %d", r.Seq)
	case r.Start <= 0 || r.End <= r.Start:
		return bad("interval [%d, %d)", r.Start, r.End)
	case time.Duration(r.End-r.Start)*time.Millisecond > MaxInterval:
		return bad("interval of %s, limit %s", time.Duration(r.End-r.Start)*time.Millisecond, MaxInterval)
	case r.Requests > maxCount || r.Bytes > maxCount || r.Objects > maxCount:
		return bad("counter over 2^53")
	case r.ByPath.Hit > maxCount || r.ByPath.Fill > maxCount || r.ByPath.Multicast > maxCount:
		return bad("path counter over 2^53")
	case r.ByPath.Sum() != r.Bytes:
		return bad("bytes by path sum to %d, bytes %d", r.ByPath.Sum(), r.Bytes)
	case r.Records > r.Requests:
		return bad("%d records for %d requests", r.Records, r.Requests)
	case len(r.Top) > MaxObjects:
		return bad("%d objects listed, limit %d", len(r.Top), MaxObjects)
	case uint64(len(r.Top)) > r.Objects:
		return bad("%d objects listed of %d", len(r.Top), r.Objects)
	case r.Records == 0 && r.Root != HexHash(Root(nil)):
		return bad("no records but a root")
	}
	if _, err := identity.ParsePublicKey(r.Node); err != nil {
		return bad("node: %v", err)
	}
	var req, byt uint64
	seen := make(map[HexHash]bool, len(r.Top))
	for _, o := range r.Top {
		if seen[o.Key] {
			return bad("object %s listed twice", o.Key)
		}
		seen[o.Key] = true
		if o.Requests == 0 || o.Requests > maxCount || o.Bytes > maxCount {
			return bad("object %s: %d requests, %d bytes", o.Key, o.Requests, o.Bytes)
		}
		req += o.Requests
		byt += o.Bytes
	}
	if r.Other.Requests > maxCount || r.Other.Bytes > maxCount {
		return bad("other objects' counters over 2^53")
	}
	if req+r.Other.Requests != r.Requests || byt+r.Other.Bytes != r.Bytes {
		return bad("objects sum to %d requests and %d bytes; receipt says %d and %d",
			req+r.Other.Requests, byt+r.Other.Bytes, r.Requests, r.Bytes)
	}
	if r.Other.Key != (HexHash{}) {
		return bad("other objects have a key")
	}
	return nil
}

// sigDomain separates receipt signatures from every other use of a node key.
const sigDomain = "blockcast-receipt-v1\x00"

func signedBytes(raw []byte) []byte {
	return append([]byte(sigDomain), raw...)
}

// Signed is a receipt with its signature, as published and stored. Raw is
// the exact bytes signed; Receipt is their decoding.
type Signed struct {
	Receipt Receipt
	Raw     []byte
	Sig     []byte
}

// Hash identifies a receipt: SHA-256 of its signed bytes.
func (s *Signed) Hash() Hash { return sha256.Sum256(s.Raw) }

// Sign validates r, encodes it and signs it with kp, which must be r.Node.
func Sign(kp *identity.Keypair, r Receipt) (*Signed, error) {
	if kp == nil || kp.ID() != r.Node {
		return nil, fmt.Errorf("receipt: sign: key is not node %s", r.Node)
	}
	if err := r.Validate(); err != nil {
		return nil, err
	}
	raw, err := marshal(r)
	if err != nil {
		return nil, err
	}
	s := &Signed{Receipt: r, Raw: raw, Sig: kp.Sign(signedBytes(raw))}
	if len(s.Marshal()) > MaxSigned {
		return nil, fmt.Errorf("receipt: sign: %d bytes, limit %d", len(s.Marshal()), MaxSigned)
	}
	return s, nil
}

// Marshal returns the wire form: {"sig":"<base64>","receipt":{...}}, with
// the receipt as the exact bytes signed.
func (s *Signed) Marshal() []byte {
	out := make([]byte, 0, len(s.Raw)+112)
	out = append(out, `{"sig":"`...)
	out = base64.StdEncoding.AppendEncode(out, s.Sig)
	out = append(out, `","receipt":`...)
	out = append(out, s.Raw...)
	return append(out, '}')
}

type wireSigned struct {
	Sig     string       `json:"sig"`
	Receipt rawJSONBytes `json:"receipt"`
}

// Errors Open returns, wrapped; castd counts refusals by them.
var (
	ErrBadSig    = fmt.Errorf("receipt: bad signature")
	ErrWrongNode = fmt.Errorf("receipt: signed for another node")
)

// Decode parses a signed receipt without checking its signature (Open
// does): for reading back what was already verified and stored.
func Decode(b []byte) (*Signed, error) {
	if len(b) > MaxSigned {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrMalformed, len(b), MaxSigned)
	}
	var w wireSigned
	if err := jsonStrict(b, &w); err != nil {
		return nil, err
	}
	sig, err := base64.StdEncoding.Strict().DecodeString(w.Sig)
	if err != nil || len(sig) != identity.SignatureSize {
		return nil, fmt.Errorf("%w: sig is not a base64 ed25519 signature", ErrMalformed)
	}
	s := &Signed{Raw: []byte(w.Receipt), Sig: sig}
	if err := jsonStrict(s.Raw, &s.Receipt); err != nil {
		return nil, err
	}
	if err := s.Receipt.Validate(); err != nil {
		return nil, err
	}
	return s, nil
}

// Open decodes b and verifies that node signed it for node.
func Open(b []byte, node identity.PublicKey) (*Signed, error) {
	s, err := Decode(b)
	if err != nil {
		return nil, err
	}
	if s.Receipt.Node != node.String() {
		return nil, fmt.Errorf("%w: receipt names %s, sent by %s", ErrWrongNode, s.Receipt.Node, node)
	}
	if !node.Verify(signedBytes(s.Raw), s.Sig) {
		return nil, ErrBadSig
	}
	return s, nil
}
