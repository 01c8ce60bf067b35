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

// FuzzIsClientHello: the check that decides whether a datagram from a new
// address makes state must hold to what it promises on any input.
func FuzzIsClientHello(f *testing.F) {
	f.Add(clientHello())
	f.Add([]byte{22, 0xfe, 0xfd})
	f.Add([]byte{23, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 1, 0, 20, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		if !isClientHello(b) {
			return
		}
		if len(b) < 25 || b[0] != 22 || b[1] != 0xfe || b[3]|b[4] != 0 || b[13] != 1 {
			t.Fatalf("accepted % x", b)
		}
	})
}
