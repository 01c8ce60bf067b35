package registry

// b58Digit maps a byte to its value in the Bitcoin base58 alphabet (the one
// Solana uses), or -1.
var b58Digit = func() (t [256]int8) {
	const alphabet = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
	for i := range t {
		t[i] = -1
	}
	for i := 0; i < len(alphabet); i++ {
		t[alphabet[i]] = int8(i)
	}
	return t
}()

// plausibleKey reports whether s is the base58 text of exactly 32 bytes, as
// an ed25519 public key (node ID or owner wallet) is written. It does not
// check that the bytes are a point on the curve: the signature check that
// precedes registration does. Base58 is a bijection between strings and
// byte strings, so a key has one spelling and an ID cannot be aliased.
func plausibleKey(s string) bool {
	// 32 zero bytes are 32 '1's; any 32 bytes fit in 44 digits.
	if len(s) < 32 || len(s) > 44 {
		return false
	}
	zeros := 0
	for zeros < len(s) && s[zeros] == '1' {
		zeros++
	}
	// Accumulate the rest as a 256-bit big-endian number in 32-bit limbs,
	// failing on overflow.
	var n [8]uint32
	for i := zeros; i < len(s); i++ {
		d := b58Digit[s[i]]
		if d < 0 {
			return false
		}
		carry := uint64(d)
		for j := len(n) - 1; j >= 0; j-- {
			v := uint64(n[j])*58 + carry
			n[j] = uint32(v)
			carry = v >> 32
		}
		if carry != 0 {
			return false
		}
	}
	// The decoded bytes are the leading zeros plus the number's
	// significant bytes; together they must make exactly 32.
	sig := 32
	for _, limb := range n {
		if limb != 0 {
			for limb>>24 == 0 {
				limb <<= 8
				sig--
			}
			break
		}
		sig -= 4
	}
	return zeros+sig == 32
}
