package receipt

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"math/bits"
)

// The Merkle tree is RFC 9162's (Certificate Transparency v2, section
// 2.1): leaves hashed with a 0x00 prefix and inner nodes with 0x01, so that
// a leaf can never be passed off as an inner node, and the tree of n leaves
// is split at the largest power of two below n. Its proofs are the
// standard inclusion proofs, checkable by any CT library.

// Hash is a SHA-256 digest.
type Hash = [sha256.Size]byte

// MaxProofLen bounds an inclusion proof: a tree of 2^63 leaves needs 63.
const MaxProofLen = 64

// ErrBadProof is returned by VerifyInclusion for a proof that does not
// lead to the root.
var ErrBadProof = errors.New("receipt: inclusion proof does not verify")

func nodeHash(l, r Hash) Hash {
	var b [1 + 2*sha256.Size]byte
	b[0] = 1
	copy(b[1:], l[:])
	copy(b[1+sha256.Size:], r[:])
	return sha256.Sum256(b[:])
}

// split is the largest power of two below n (n > 1).
func split(n int) int {
	return 1 << (bits.Len(uint(n-1)) - 1)
}

// Root is the Merkle tree hash of leaves (leaf hashes, see Record.LeafHash).
// The root of no leaves is SHA-256 of nothing.
func Root(leaves []Hash) Hash {
	if len(leaves) == 0 {
		return sha256.Sum256(nil)
	}
	// Bottom-up, level by level: an odd node is carried up unchanged,
	// which gives the same tree as RFC 9162's recursive split.
	level := append([]Hash(nil), leaves...)
	for len(level) > 1 {
		next := level[:0]
		for i := 0; i < len(level); i += 2 {
			if i+1 < len(level) {
				next = append(next, nodeHash(level[i], level[i+1]))
			} else {
				next = append(next, level[i])
			}
		}
		level = next
	}
	return level[0]
}

// Proof returns the inclusion proof of leaf i in the tree of leaves.
func Proof(leaves []Hash, i int) ([]Hash, error) {
	if i < 0 || i >= len(leaves) {
		return nil, fmt.Errorf("receipt: proof of leaf %d in a tree of %d", i, len(leaves))
	}
	var path []Hash
	for len(leaves) > 1 {
		k := split(len(leaves))
		if i < k {
			path = append(path, Root(leaves[k:]))
			leaves = leaves[:k]
		} else {
			path = append(path, Root(leaves[:k]))
			leaves, i = leaves[k:], i-k
		}
	}
	// Built top-down; verification goes bottom-up.
	for l, r := 0, len(path)-1; l < r; l, r = l+1, r-1 {
		path[l], path[r] = path[r], path[l]
	}
	return path, nil
}

// VerifyInclusion checks that leaf is leaf i of the n-leaf tree with root
// (RFC 9162 section 2.1.3.2).
func VerifyInclusion(leaf Hash, i, n uint64, proof []Hash, root Hash) error {
	if i >= n || len(proof) > MaxProofLen {
		return fmt.Errorf("%w: leaf %d of %d, %d hashes", ErrBadProof, i, n, len(proof))
	}
	fn, sn := i, n-1
	r := leaf
	for _, p := range proof {
		if sn == 0 {
			return fmt.Errorf("%w: proof too long", ErrBadProof)
		}
		if fn&1 == 1 || fn == sn {
			r = nodeHash(p, r)
			if fn&1 == 0 {
				for fn&1 == 0 && fn != 0 {
					fn >>= 1
					sn >>= 1
				}
			}
		} else {
			r = nodeHash(r, p)
		}
		fn >>= 1
		sn >>= 1
	}
	if sn != 0 || r != root {
		return ErrBadProof
	}
	return nil
}
