package dtlschan

// The listener reads two things from plaintext handshake records itself:
// the cookie pion's HelloVerifyRequest sends to an address, and the cookie a
// ClientHello from that address echoes. A peer that echoes the cookie sent
// to it has shown it receives at its address (RFC 6347 4.2.1), so only such
// peers get one of the few handshake slots that do public-key work; a flood
// of ClientHellos from forged addresses never gets past the cheap stage.

const (
	recordHeaderLen    = 13 // type, version(2), epoch(2), sequence(6), length(2)
	handshakeHeaderLen = 12 // type, length(3), message_seq(2), fragment_offset(3), fragment_length(3)

	contentHandshake        = 22
	typeClientHello         = 1
	typeHelloVerifyRequest  = 3
	maxCookieLen            = 255 // DTLS 1.2: opaque cookie<0..2^8-1>
	clientHelloFixedBodyLen = 2 + 32
)

// handshakeBody returns the first handshake message of a datagram's first
// record, if that record is an epoch-0 DTLS handshake record holding the
// start (fragment offset 0) of a message of type typ.
func handshakeBody(b []byte, typ byte) ([]byte, bool) {
	if len(b) < recordHeaderLen+handshakeHeaderLen || b[0] != contentHandshake || b[1] != 0xfe ||
		b[3] != 0 || b[4] != 0 {
		return nil, false
	}
	recLen := int(b[11])<<8 | int(b[12])
	rec := b[recordHeaderLen:]
	if recLen < handshakeHeaderLen || recLen > len(rec) {
		return nil, false
	}
	rec = rec[:recLen]
	if rec[0] != typ || rec[6] != 0 || rec[7] != 0 || rec[8] != 0 {
		return nil, false
	}
	fragLen := int(rec[9])<<16 | int(rec[10])<<8 | int(rec[11])
	body := rec[handshakeHeaderLen:]
	if fragLen > len(body) {
		return nil, false
	}
	return body[:fragLen], true
}

// clientHelloCookie returns the cookie of a ClientHello datagram (empty for
// a first ClientHello).
func clientHelloCookie(b []byte) ([]byte, bool) {
	body, ok := handshakeBody(b, typeClientHello)
	if !ok || len(body) < clientHelloFixedBodyLen+1 {
		return nil, false
	}
	off := clientHelloFixedBodyLen
	sid := int(body[off])
	off += 1 + sid
	if off >= len(body) {
		return nil, false
	}
	n := int(body[off])
	off++
	if off+n > len(body) {
		return nil, false
	}
	return body[off : off+n], true
}

// helloVerifyCookie returns the cookie of a HelloVerifyRequest datagram.
func helloVerifyCookie(b []byte) ([]byte, bool) {
	body, ok := handshakeBody(b, typeHelloVerifyRequest)
	if !ok || len(body) < 3 {
		return nil, false
	}
	n := int(body[2])
	if n == 0 || 3+n > len(body) {
		return nil, false
	}
	return body[3 : 3+n], true
}

// isClientHello reports whether a datagram from an unknown address starts
// with a DTLS ClientHello. Anything else from an unknown address cannot
// start a session, so it is dropped before any state is made for it.
func isClientHello(b []byte) bool {
	_, ok := clientHelloCookie(b)
	return ok
}
