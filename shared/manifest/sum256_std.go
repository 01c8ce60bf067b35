//go:build !(mips || mipsle)

package manifest

import "crypto/sha256"

// sum256 is SHA-256 of a then b (see sum256_soft.go for 32-bit MIPS).
func sum256(a, b []byte) [32]byte {
	h := sha256.New()
	h.Write(a)
	h.Write(b)
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return sum
}
