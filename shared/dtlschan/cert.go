package dtlschan

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/blockcast/beacon/shared/identity"
)

// Sentinel errors of certificate checks, wrapped by what Certificate and
// PeerKey return.
var (
	// ErrCertificate: the peer's certificate is not one this channel makes
	// (not exactly one, not Ed25519, not self-signed, unparsable).
	ErrCertificate = errors.New("dtlschan: bad peer certificate")
	// ErrClaimMismatch: the certificate names a node ID that is not its key.
	ErrClaimMismatch = errors.New("dtlschan: certificate claims a node ID that is not its key")
)

// maxCertSize bounds what PeerKey parses; ours are ~300 bytes.
const maxCertSize = 2048

// Certificate makes the self-signed X.509 Ed25519 certificate a node
// presents in the handshake. Its key is the wallet key and its common name
// the node ID (the base58 key); the peer trusts nothing else in it. The
// validity is wide on purpose: routers boot without a clock, and nothing
// checks dates, since a key is revoked by unregistering it, not by expiry.
func Certificate(key *identity.Keypair) (tls.Certificate, error) {
	if key == nil {
		return tls.Certificate{}, errors.New("dtlschan: no key")
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("dtlschan: certificate serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: key.ID()},
		NotBefore:    time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC),
		NotAfter:     time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
	}
	priv := key.PrivateKey()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, priv.Public(), priv)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("dtlschan: certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: priv}, nil
}

// PeerKey checks the certificate chain a peer presented and returns its
// wallet key. It must be exactly one self-signed Ed25519 certificate whose
// common name, if any, is that key in base58: a certificate naming one node
// and holding another's key is refused, so no log line or operator is misled
// by a name. The handshake itself (CertificateVerify, ServerKeyExchange)
// proves the peer holds the private key; PeerKey proves what the key is.
func PeerKey(rawCerts [][]byte) (identity.PublicKey, error) {
	var zero identity.PublicKey
	if len(rawCerts) != 1 {
		return zero, fmt.Errorf("%w: %d certificates, want 1", ErrCertificate, len(rawCerts))
	}
	if len(rawCerts[0]) > maxCertSize {
		return zero, fmt.Errorf("%w: %d bytes, more than %d", ErrCertificate, len(rawCerts[0]), maxCertSize)
	}
	cert, err := x509.ParseCertificate(rawCerts[0])
	if err != nil {
		return zero, fmt.Errorf("%w: %w", ErrCertificate, err)
	}
	pub, ok := cert.PublicKey.(ed25519.PublicKey)
	if !ok || len(pub) != ed25519.PublicKeySize {
		return zero, fmt.Errorf("%w: key is %v, want Ed25519", ErrCertificate, cert.PublicKeyAlgorithm)
	}
	if cert.SignatureAlgorithm != x509.PureEd25519 {
		return zero, fmt.Errorf("%w: signed with %v, want Ed25519", ErrCertificate, cert.SignatureAlgorithm)
	}
	if err := cert.CheckSignature(cert.SignatureAlgorithm, cert.RawTBSCertificate, cert.Signature); err != nil {
		return zero, fmt.Errorf("%w: not self-signed by its key: %w", ErrCertificate, err)
	}
	k, err := identity.PublicKeyFromBytes(pub)
	if err != nil {
		return zero, fmt.Errorf("%w: %w", ErrCertificate, err)
	}
	if cn := cert.Subject.CommonName; cn != "" && cn != k.String() {
		return zero, fmt.Errorf("%w: names %.64q, key is %s", ErrClaimMismatch, cn, k)
	}
	return k, nil
}
