package dtlschan

import (
	"bytes"
	"crypto/ed25519"
	"crypto/x509"
	"testing"
)

// FuzzPeerKey feeds PeerKey what a peer may put in its Certificate message.
// It must never panic, and a key it accepts must be the certificate's own
// Ed25519 key.
func FuzzPeerKey(f *testing.F) {
	k, other := newKey(f), newKey(f)
	good, err := Certificate(k)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good.Certificate[0])
	f.Add(forgedCertTB(f, other.ID(), pub(k), k.PrivateKey()))
	f.Add(forgedCertTB(f, k.ID(), pub(k), other.PrivateKey()))
	f.Add([]byte{0x30, 0x82, 0x01, 0x00})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, der []byte) {
		key, err := PeerKey([][]byte{der})
		if err != nil {
			return
		}
		cert, perr := x509.ParseCertificate(der)
		if perr != nil {
			t.Fatalf("accepted a certificate x509 cannot parse: %v", perr)
		}
		pk, ok := cert.PublicKey.(ed25519.PublicKey)
		if !ok || !bytes.Equal(pk, key[:]) {
			t.Fatalf("returned key %s is not the certificate's", key)
		}
	})
}

// FuzzHelloCookies feeds the listener's hello parsers what anyone may send
// to its port (and what pion sends back). They must never panic, and what
// they return must be what the datagram says.
func FuzzHelloCookies(f *testing.F) {
	ch := clientHello(f)
	f.Add(ch)
	// The same hello with a 20-byte cookie, as a second hello carries.
	f.Add(withCookie(ch, bytes.Repeat([]byte{0xc0}, 20)))
	// A HelloVerifyRequest: record, handshake header, version, cookie.
	hvr := []byte{22, 0xfe, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 35,
		3, 0, 0, 23, 0, 0, 0, 0, 0, 0, 0, 23, 0xfe, 0xff, 20}
	f.Add(append(hvr, bytes.Repeat([]byte{7}, 20)...))
	f.Add([]byte{22, 0xfe, 0xfd})
	f.Fuzz(func(t *testing.T, b []byte) {
		if ck, ok := clientHelloCookie(b); ok {
			if len(ck) > maxCookieLen || !isClientHello(b) || b[recordHeaderLen] != typeClientHello {
				t.Fatalf("cookie %x from % x", ck, b)
			}
		}
		if ck, ok := helloVerifyCookie(b); ok {
			if len(ck) == 0 || len(ck) > maxCookieLen || b[recordHeaderLen] != typeHelloVerifyRequest {
				t.Fatalf("cookie %x from % x", ck, b)
			}
			if _, ok := clientHelloCookie(b); ok {
				t.Fatal("one datagram parsed as both hellos")
			}
		}
	})
}

// withCookie returns a copy of a first ClientHello with cookie put in, its
// lengths fixed up.
func withCookie(ch, cookie []byte) []byte {
	body, _ := handshakeBody(ch, typeClientHello)
	off := recordHeaderLen + handshakeHeaderLen + clientHelloFixedBodyLen + 1 + int(body[clientHelloFixedBodyLen])
	out := append([]byte(nil), ch[:off]...)
	out = append(out, byte(len(cookie)))
	out = append(out, cookie...)
	out = append(out, ch[off+1:]...)
	grow := func(b []byte, n int) {
		v := int(b[0])<<16 | int(b[1])<<8 | int(b[2]) + n
		b[0], b[1], b[2] = byte(v>>16), byte(v>>8), byte(v)
	}
	recLen := int(out[11])<<8 | int(out[12]) + len(cookie)
	out[11], out[12] = byte(recLen>>8), byte(recLen)
	grow(out[recordHeaderLen+1:], len(cookie))
	grow(out[recordHeaderLen+9:], len(cookie))
	return out
}

func TestHelloCookies(t *testing.T) {
	ch := clientHello(t)
	if ck, ok := clientHelloCookie(ch); !ok || len(ck) != 0 {
		t.Fatalf("first hello: cookie %x, %v", ck, ok)
	}
	want := []byte("0123456789abcdefghij")
	if ck, ok := clientHelloCookie(withCookie(ch, want)); !ok || !bytes.Equal(ck, want) {
		t.Fatalf("second hello: cookie %x, %v", ck, ok)
	}
	for _, cut := range []int{1, 13, 30, 60, len(ch) - 1} {
		// A record length longer than the datagram is refused.
		if _, ok := clientHelloCookie(ch[:cut]); ok && cut < len(ch) {
			t.Fatalf("hello cut to %d bytes accepted", cut)
		}
	}
}
