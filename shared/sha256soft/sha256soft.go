// Package sha256soft is SHA-256 (FIPS 180-4) in portable Go, unrolled for
// CPUs that have neither SHA instructions nor a Go assembly block
// function: on 32-bit MIPS, crypto/sha256 runs the standard library's
// rolled-up generic loop, about 7,100 instructions a 64-byte block
// (counted under qemu-mipsel); block.go's unrolled rounds take about
// half. The output is SHA-256's, byte for byte (tested against
// crypto/sha256, table-driven and fuzzed). Where crypto/sha256 has
// assembly (amd64, arm64, ...) use crypto/sha256: it is faster there.
package sha256soft

import "encoding/binary"

//go:generate python3 gen.py

const (
	// Size is the length of a digest in bytes.
	Size = 32
	// BlockSize is SHA-256's block length in bytes.
	BlockSize = 64
)

// Digest is a running SHA-256; the zero value is not ready, call Reset.
// It never allocates, so it can live on the stack of a per-packet path.
type Digest struct {
	h   [8]uint32
	buf [BlockSize]byte
	nx  int
	len uint64
}

// Reset starts a new hash.
func (d *Digest) Reset() {
	d.h = [8]uint32{0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19}
	d.nx, d.len = 0, 0
}

// Write adds p to the hash.
func (d *Digest) Write(p []byte) {
	d.len += uint64(len(p))
	if d.nx > 0 {
		n := copy(d.buf[d.nx:], p)
		d.nx += n
		p = p[n:]
		if d.nx < BlockSize {
			return
		}
		block(&d.h, d.buf[:])
		d.nx = 0
	}
	if n := len(p) &^ (BlockSize - 1); n > 0 {
		block(&d.h, p[:n])
		p = p[n:]
	}
	d.nx = copy(d.buf[:], p)
}

// Sum256 returns the digest of what was written (d is left finished:
// Reset before reuse).
func (d *Digest) Sum256() [Size]byte {
	n := d.len
	var pad [BlockSize + 8]byte
	pad[0] = 0x80
	k := (55 - int(n%BlockSize) + BlockSize) % BlockSize // zero bytes after 0x80
	binary.BigEndian.PutUint64(pad[1+k:], n<<3)
	d.Write(pad[:1+k+8])
	var out [Size]byte
	for i, v := range d.h {
		binary.BigEndian.PutUint32(out[4*i:], v)
	}
	return out
}

// Sum256 returns the SHA-256 digest of data.
func Sum256(data []byte) [Size]byte {
	var d Digest
	d.Reset()
	d.Write(data)
	return d.Sum256()
}
