// Package identity is a node's Solana wallet identity: an ed25519 keypair kept
// in the Solana CLI keypair file format (a JSON array of 64 numbers, the
// 32-byte seed then the 32-byte public key, as solana-keygen writes it), whose
// base58 public key is the node ID. Files written here load in solana-keygen,
// the solana CLI and solana-go, and theirs load here.
//
// It uses only the standard library (it is linked into router firmware where
// every dependency costs flash), and it is stricter than the usual loaders: a
// key file must hold exactly 64 integers 0..255 and its public half must
// match its seed.
package identity

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"strconv"
)

// Sizes of keys and signatures, in bytes.
const (
	PublicKeySize = ed25519.PublicKeySize // 32
	SeedSize      = ed25519.SeedSize      // 32
	SignatureSize = ed25519.SignatureSize // 64
)

// Sentinel errors callers branch on.
var (
	// ErrBadPublicKey is wrapped by errors from ParsePublicKey and
	// PublicKeyFromBytes.
	ErrBadPublicKey = errors.New("identity: bad public key")
	// ErrMalformedKey is wrapped when a key file (or seed) is not a well
	// formed Solana keypair.
	ErrMalformedKey = errors.New("identity: malformed keypair")
	// ErrKeyMismatch means a keypair's public half is not the public key of
	// its seed: the file is damaged or was assembled by hand.
	ErrKeyMismatch = errors.New("identity: keypair public key does not match its seed")
)

// PublicKey is an ed25519 public key. Its base58 form is a node ID (or an
// owner wallet address).
type PublicKey [PublicKeySize]byte

// String returns the base58 form.
func (p PublicKey) String() string { return EncodeBase58(p[:]) }

// IsZero reports whether p is all zeros (the zero value, never a real key).
func (p PublicKey) IsZero() bool { return p == PublicKey{} }

// Verify reports whether sig is p's valid ed25519 signature of msg.
func (p PublicKey) Verify(msg, sig []byte) bool {
	if len(sig) != SignatureSize {
		return false
	}
	return ed25519.Verify(p[:], msg, sig)
}

// MarshalText implements encoding.TextMarshaler (JSON encodes a PublicKey as
// its base58 string).
func (p PublicKey) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (p *PublicKey) UnmarshalText(b []byte) error {
	k, err := ParsePublicKey(string(b))
	if err != nil {
		return err
	}
	*p = k
	return nil
}

// maxPublicKeyBase58 is the longest base58 form of 32 bytes.
const maxPublicKeyBase58 = 44

// ParsePublicKey parses a base58 public key (a node ID or wallet address).
func ParsePublicKey(s string) (PublicKey, error) {
	if s == "" {
		return PublicKey{}, fmt.Errorf("%w: empty", ErrBadPublicKey)
	}
	if len(s) > maxPublicKeyBase58 {
		return PublicKey{}, fmt.Errorf("%w: %d characters, more than %d", ErrBadPublicKey, len(s), maxPublicKeyBase58)
	}
	b, err := DecodeBase58(s)
	if err != nil {
		return PublicKey{}, fmt.Errorf("%w: %w", ErrBadPublicKey, err)
	}
	return PublicKeyFromBytes(b)
}

// PublicKeyFromBytes copies a 32-byte public key.
func PublicKeyFromBytes(b []byte) (PublicKey, error) {
	var p PublicKey
	if len(b) != PublicKeySize {
		return p, fmt.Errorf("%w: %d bytes, want %d", ErrBadPublicKey, len(b), PublicKeySize)
	}
	copy(p[:], b)
	return p, nil
}

// Keypair is a node's ed25519 keypair. Its String and GoString methods print
// only the public key, so logging a Keypair by mistake leaks nothing.
type Keypair struct {
	priv ed25519.PrivateKey // seed || public key
	pub  PublicKey
}

// Generate returns a new random keypair.
func Generate() (*Keypair, error) {
	seed := make([]byte, SeedSize)
	if _, err := rand.Read(seed); err != nil {
		return nil, fmt.Errorf("identity: generate key: %w", err)
	}
	return FromSeed(seed)
}

// FromSeed derives the keypair of a 32-byte ed25519 seed (the first half of
// a Solana keypair file).
func FromSeed(seed []byte) (*Keypair, error) {
	if len(seed) != SeedSize {
		return nil, fmt.Errorf("%w: seed is %d bytes, want %d", ErrMalformedKey, len(seed), SeedSize)
	}
	priv := ed25519.NewKeyFromSeed(seed)
	k := &Keypair{priv: priv}
	copy(k.pub[:], priv[SeedSize:])
	return k, nil
}

// Public returns the public key.
func (k *Keypair) Public() PublicKey { return k.pub }

// ID returns the node ID: the base58 public key.
func (k *Keypair) ID() string { return k.pub.String() }

// Sign returns the ed25519 signature of msg.
func (k *Keypair) Sign(msg []byte) []byte { return ed25519.Sign(k.priv, msg) }

// PrivateKey returns a copy of the ed25519 private key, for APIs that take a
// crypto.Signer (x509 and DTLS certificates made from the node key).
func (k *Keypair) PrivateKey() ed25519.PrivateKey {
	return append(ed25519.PrivateKey(nil), k.priv...)
}

// String returns a description naming only the public key. It has a value
// receiver so that a dereferenced Keypair does not print its seed either.
func (k Keypair) String() string { return "identity.Keypair(" + k.pub.String() + ")" }

// GoString is String, so that %#v does not print the seed either.
func (k Keypair) GoString() string { return k.String() }

// MarshalSolana returns the keypair in the Solana CLI file format, compact
// as solana-keygen writes it: "[n,n,...,n]" with the 64 bytes of seed and
// public key, no spaces and no trailing newline.
func (k *Keypair) MarshalSolana() []byte {
	out := make([]byte, 0, 2+64*4)
	out = append(out, '[')
	for i, b := range k.priv {
		if i > 0 {
			out = append(out, ',')
		}
		out = strconv.AppendUint(out, uint64(b), 10)
	}
	return append(out, ']')
}

// ParseSolana parses a keypair in the Solana CLI file format. It is strict:
// a JSON array of exactly 64 integers 0..255 (no fractions, exponents, signs
// or leading zeros), optionally surrounded by JSON whitespace; the public
// half must be the public key of the seed (ErrKeyMismatch). Errors never
// quote the key bytes.
func ParseSolana(data []byte) (*Keypair, error) {
	var raw [64]byte
	i := skipSpace(data, 0)
	if i >= len(data) || data[i] != '[' {
		return nil, malformed(data, i, "want '['")
	}
	i++
	for n := 0; n < len(raw); n++ {
		i = skipSpace(data, i)
		start := i
		v := 0
		for i < len(data) && data[i] >= '0' && data[i] <= '9' && i-start < 4 {
			v = v*10 + int(data[i]-'0')
			i++
		}
		switch {
		case i == start:
			if n == 0 && i < len(data) && data[i] == ']' {
				return nil, fmt.Errorf("%w: empty array, want 64 numbers", ErrMalformedKey)
			}
			return nil, malformed(data, i, "want a number 0..255")
		case i-start > 1 && data[start] == '0':
			return nil, fmt.Errorf("%w: number with a leading zero at offset %d", ErrMalformedKey, start)
		case v > 255:
			return nil, fmt.Errorf("%w: number at offset %d is out of range 0..255", ErrMalformedKey, start)
		}
		raw[n] = byte(v)
		i = skipSpace(data, i)
		if n < len(raw)-1 {
			if i < len(data) && data[i] == ']' {
				return nil, fmt.Errorf("%w: %d numbers, want 64", ErrMalformedKey, n+1)
			}
			if i >= len(data) || data[i] != ',' {
				return nil, malformed(data, i, "want ','")
			}
		} else if i < len(data) && data[i] == ',' {
			return nil, fmt.Errorf("%w: more than 64 numbers", ErrMalformedKey)
		} else if i >= len(data) || data[i] != ']' {
			return nil, malformed(data, i, "want ']'")
		}
		i++
	}
	if i = skipSpace(data, i); i != len(data) {
		return nil, fmt.Errorf("%w: trailing data at offset %d", ErrMalformedKey, i)
	}
	k, err := FromSeed(raw[:SeedSize])
	if err != nil {
		return nil, err
	}
	if string(k.pub[:]) != string(raw[SeedSize:]) {
		return nil, fmt.Errorf("%w: file says %s, seed gives %s", ErrKeyMismatch, EncodeBase58(raw[SeedSize:]), k.ID())
	}
	return k, nil
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

func malformed(data []byte, i int, want string) error {
	if i >= len(data) {
		return fmt.Errorf("%w: unexpected end of data, %s", ErrMalformedKey, want)
	}
	return fmt.Errorf("%w: unexpected %q at offset %d, %s", ErrMalformedKey, data[i], i, want)
}
