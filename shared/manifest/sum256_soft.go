//go:build mips || mipsle

package manifest

import "github.com/blockcast/beacon/shared/sha256soft"

// sum256 is SHA-256 of a then b. On 32-bit MIPS crypto/sha256 has no
// assembly and its generic loop costs twice sha256soft's unrolled one,
// and this runs once per received symbol.
func sum256(a, b []byte) [32]byte {
	var d sha256soft.Digest
	d.Reset()
	d.Write(a)
	d.Write(b)
	return d.Sum256()
}
