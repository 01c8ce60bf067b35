// Package receipt is the wire format of signed delivery receipts: the
// request records a beacon keeps, the Merkle tree over them, the receipt it
// signs for an interval, the records-and-proofs reply to an audit, and the
// arguments castd acknowledges and audits with.
//
// A receipt is signed by the node key over "blockcast-receipt-v1\x00" and
// the exact bytes of the receipt object, so that it can be stored, shown
// and checked again later on its own, apart from the control-plane
// envelope it travelled in (which has its own, short-lived, signature).
//
// No end-user data: a record holds the time, a hash of the object's key
// (content path), the bytes, the HTTP status and the delivery path; never
// the client's address (design.md, "End users' privacy").
//
// This package uses only the standard library and shared/identity: it is
// linked into router firmware.
package receipt

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// Path is how the bytes of a response reached the beacon.
type Path uint8

// Delivery paths.
const (
	PathHit       Path = iota // served from the beacon's cache
	PathFill                  // fetched from castd by unicast for this request
	PathMulticast             // received on a multicast channel
	numPaths
)

var pathNames = [numPaths]string{"hit", "fill", "multicast"}

func (p Path) String() string {
	if p < numPaths {
		return pathNames[p]
	}
	return fmt.Sprintf("path(%d)", uint8(p))
}

// MarshalText writes the path's name.
func (p Path) MarshalText() ([]byte, error) {
	if p >= numPaths {
		return nil, fmt.Errorf("receipt: unknown path %d", p)
	}
	return []byte(pathNames[p]), nil
}

// UnmarshalText reads a path's name.
func (p *Path) UnmarshalText(b []byte) error {
	for i, n := range pathNames {
		if string(b) == n {
			*p = Path(i)
			return nil
		}
	}
	return fmt.Errorf("%w: unknown path %.20q", ErrMalformed, b)
}

// ErrMalformed is wrapped by every decoding and validation error.
var ErrMalformed = errors.New("receipt: malformed")

// KeyHash is the hash of an object key (its clean content path) that
// records and receipts carry instead of the path: castd, which knows the
// paths a node fetched, computes the same hash; the receipt itself does not
// spell out what a home watched.
func KeyHash(key string) Hash {
	h := sha256.New()
	h.Write([]byte("blockcast-objkey-v1\x00"))
	h.Write([]byte(key))
	var out Hash
	h.Sum(out[:0])
	return out
}

// HexHash is a Hash written as 64 lowercase hex digits in JSON.
type HexHash Hash

// MarshalText writes h in hex.
func (h HexHash) MarshalText() ([]byte, error) {
	return []byte(hex.EncodeToString(h[:])), nil
}

// UnmarshalText reads 64 hex digits.
func (h *HexHash) UnmarshalText(b []byte) error {
	if len(b) != 2*sha256.Size {
		return fmt.Errorf("%w: hash is %d characters, want 64 hex digits", ErrMalformed, len(b))
	}
	if _, err := hex.Decode(h[:], b); err != nil {
		return fmt.Errorf("%w: hash: %w", ErrMalformed, err)
	}
	return nil
}

func (h HexHash) String() string { return hex.EncodeToString(h[:]) }

// Record is one request the beacon answered.
type Record struct {
	TS     int64   `json:"t"` // unix ms, when the response ended
	Key    HexHash `json:"k"` // KeyHash of the object's key
	Bytes  uint64  `json:"b"` // body bytes sent
	Status uint16  `json:"s"` // HTTP status
	Path   Path    `json:"p"`
}

// RecordSize is the size of a record's binary form.
const RecordSize = 8 + sha256.Size + 8 + 2 + 1

// AppendBinary appends r's fixed-size binary form (big-endian), which is
// what the beacon stores and what a leaf hash covers.
func (r Record) AppendBinary(b []byte) []byte {
	b = binary.BigEndian.AppendUint64(b, uint64(r.TS))
	b = append(b, r.Key[:]...)
	b = binary.BigEndian.AppendUint64(b, r.Bytes)
	b = binary.BigEndian.AppendUint16(b, r.Status)
	return append(b, byte(r.Path))
}

// ParseRecord reads one record's binary form.
func ParseRecord(b []byte) (Record, error) {
	if len(b) != RecordSize {
		return Record{}, fmt.Errorf("%w: record is %d bytes, want %d", ErrMalformed, len(b), RecordSize)
	}
	var r Record
	r.TS = int64(binary.BigEndian.Uint64(b))
	copy(r.Key[:], b[8:])
	r.Bytes = binary.BigEndian.Uint64(b[8+sha256.Size:])
	r.Status = binary.BigEndian.Uint16(b[16+sha256.Size:])
	r.Path = Path(b[18+sha256.Size])
	return r, r.Validate()
}

// Validate checks r's fields.
func (r Record) Validate() error {
	if r.TS <= 0 {
		return fmt.Errorf("%w: record time %d", ErrMalformed, r.TS)
	}
	if r.Path >= numPaths {
		return fmt.Errorf("%w: record path %d", ErrMalformed, r.Path)
	}
	if r.Status < 100 || r.Status > 599 {
		return fmt.Errorf("%w: record status %d", ErrMalformed, r.Status)
	}
	if r.Bytes > maxCount {
		return fmt.Errorf("%w: record bytes %d", ErrMalformed, r.Bytes)
	}
	return nil
}

// recordDomain separates leaf hashes from every other SHA-256 in the system.
const recordDomain = "blockcast-record-v1\x00"

// LeafHash is r's leaf in the Merkle tree: SHA-256 of 0x00, the domain and
// the binary form.
func (r Record) LeafHash() Hash {
	b := make([]byte, 0, 1+len(recordDomain)+RecordSize)
	b = append(b, 0)
	b = append(b, recordDomain...)
	b = r.AppendBinary(b)
	return sha256.Sum256(b)
}

// maxCount bounds counters in records and receipts (2^53, so that they
// survive any JSON reader, JavaScript included, exactly).
const maxCount = 1 << 53

// jsonStrict decodes b into v refusing unknown fields and trailing data.
func jsonStrict(b []byte, v any) error {
	if len(b) == 0 || b[0] != '{' {
		return fmt.Errorf("%w: not a JSON object", ErrMalformed)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("%w: data after the JSON object", ErrMalformed)
	}
	return nil
}
