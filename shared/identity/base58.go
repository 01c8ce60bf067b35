package identity

import (
	"errors"
	"fmt"
)

// ErrBase58 is wrapped by every base58 decoding error.
var ErrBase58 = errors.New("identity: invalid base58")

// MaxBase58Len bounds the input of DecodeBase58. Decoding is quadratic in
// the input length, so an unbounded input would be a cheap way to burn CPU;
// the longest thing Solana writes in base58 (a 1232-byte transaction) is
// well under it.
const MaxBase58Len = 4096

const base58Alphabet = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"

// base58Index maps an ASCII byte to its digit value, or 0xff if it is not in
// the alphabet.
var base58Index = func() (t [256]byte) {
	for i := range t {
		t[i] = 0xff
	}
	for i := 0; i < len(base58Alphabet); i++ {
		t[base58Alphabet[i]] = byte(i)
	}
	return t
}()

// EncodeBase58 encodes b with the Bitcoin alphabet, as Solana writes public
// keys and signatures. Each leading zero byte becomes a leading '1'.
func EncodeBase58(b []byte) string {
	zeros := 0
	for zeros < len(b) && b[zeros] == 0 {
		zeros++
	}
	// log(256)/log(58) < 1.38, so this many digits always suffice.
	size := (len(b)-zeros)*138/100 + 1
	buf := make([]byte, size)
	high := size - 1
	for _, c := range b[zeros:] {
		carry := int(c)
		j := size - 1
		for ; j > high || carry != 0; j-- {
			carry += 256 * int(buf[j])
			buf[j] = byte(carry % 58)
			carry /= 58
		}
		high = j
	}
	i := 0
	for i < size && buf[i] == 0 {
		i++
	}
	out := make([]byte, zeros+size-i)
	for k := 0; k < zeros; k++ {
		out[k] = '1'
	}
	for k, d := range buf[i:] {
		out[zeros+k] = base58Alphabet[d]
	}
	return string(out)
}

// DecodeBase58 decodes a Bitcoin-alphabet base58 string. Each leading '1'
// becomes a leading zero byte. It refuses characters outside the alphabet
// (including whitespace) and inputs longer than MaxBase58Len.
func DecodeBase58(s string) ([]byte, error) {
	if len(s) > MaxBase58Len {
		return nil, fmt.Errorf("%w: %d characters, more than %d", ErrBase58, len(s), MaxBase58Len)
	}
	ones := 0
	for ones < len(s) && s[ones] == '1' {
		ones++
	}
	// log(58)/log(256) < 0.733.
	size := (len(s)-ones)*733/1000 + 1
	buf := make([]byte, size)
	high := size - 1
	for i := ones; i < len(s); i++ {
		d := base58Index[s[i]]
		if d == 0xff {
			return nil, fmt.Errorf("%w: character %q at offset %d", ErrBase58, s[i], i)
		}
		carry := int(d)
		j := size - 1
		for ; j > high || carry != 0; j-- {
			carry += 58 * int(buf[j])
			buf[j] = byte(carry)
			carry >>= 8
		}
		high = j
	}
	i := 0
	for i < size && buf[i] == 0 {
		i++
	}
	out := make([]byte, ones+size-i)
	copy(out[ones:], buf[i:])
	return out, nil
}
