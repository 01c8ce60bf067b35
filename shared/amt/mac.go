package amt

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"net/netip"
)

// ComputeMAC returns the 48-bit response MAC a relay puts in a Membership
// Query for the gateway at gwAddr (the source address and port the relay
// saw) and the request nonce: HMAC-SHA256 keyed with a relay-only secret,
// truncated to 6 bytes. RFC 7450 §5.1.4.6 leaves the function to the relay;
// only the relay ever computes or checks it.
//
// The address is hashed in its 16-byte wire form (an IPv4 address as
// IPv4-compatible IPv6, the zone dropped), so an IPv4 gateway gets the same
// MAC whether the relay's socket reports it as IPv4 or IPv4-mapped IPv6, and
// whether it is taken from a datagram or from a Teardown's gateway fields.
func ComputeMAC(secret []byte, gwAddr netip.AddrPort, nonce uint32) [6]byte {
	var msg [gatewayFieldsLen + 4]byte
	appendGateway(msg[:0], gwAddr)
	binary.BigEndian.PutUint32(msg[gatewayFieldsLen:], nonce)
	h := hmac.New(sha256.New, secret)
	h.Write(msg[:])
	var sum [sha256.Size]byte
	var mac [6]byte
	copy(mac[:], h.Sum(sum[:0]))
	return mac
}

// VerifyMAC reports, in constant time, whether mac is the response MAC for
// gwAddr and nonce under secret. A relay that rotates its secret calls it
// with the current and then the previous secret.
func VerifyMAC(secret []byte, gwAddr netip.AddrPort, nonce uint32, mac [6]byte) bool {
	want := ComputeMAC(secret, gwAddr, nonce)
	return subtle.ConstantTimeCompare(want[:], mac[:]) == 1
}
