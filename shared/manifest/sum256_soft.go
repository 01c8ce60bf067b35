//go:build mips || mipsle

package manifest

import "github.com/blockcast/beacon/shared/sha256soft"

// hasher is SHA-256. On 32-bit MIPS crypto/sha256 has no assembly and
// its generic loop costs ~1.7 times sha256soft's unrolled one (counted
// under qemu-mipsel), and the receive path hashes every symbol.
type hasher struct{ d sha256soft.Digest }

func newHasher() *hasher {
	h := new(hasher)
	h.d.Reset()
	return h
}

func (h *hasher) Write(p []byte) { h.d.Write(p) }

func (h *hasher) Sum() [32]byte { return h.d.Sum256() }
