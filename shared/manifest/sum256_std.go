//go:build !(mips || mipsle)

package manifest

import (
	"crypto/sha256"
	"hash"
)

// hasher is SHA-256: crypto/sha256, which has assembly here (see
// sum256_soft.go for 32-bit MIPS).
type hasher struct{ h hash.Hash }

func newHasher() *hasher { return &hasher{sha256.New()} }

func (h *hasher) Write(p []byte) { h.h.Write(p) }

func (h *hasher) Sum() [32]byte {
	var sum [sha256.Size]byte
	h.h.Sum(sum[:0])
	return sum
}
