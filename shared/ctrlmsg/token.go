package ctrlmsg

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/blockcast/beacon/shared/identity"
)

// Broker authentication. A node connects with its node ID as the MQTT
// username and a fresh token as the password:
//
//	v1.<unix seconds>.<nonce, 24 hex>.<base64 ed25519 signature>
//
// signed over "blockcast-mqtt-auth-v1\x00" + node ID + "\x00" + seconds +
// "\x00" + nonce (the decimal and hex text exactly as in the token). The
// broker accepts it within a window of its clock and only once.

const (
	tokenDomain = "blockcast-mqtt-auth-v1\x00"
	tokenPrefix = "v1."
	// maxToken bounds what VerifyToken looks at: "v1." + 19 digits + "." +
	// 24 + "." + 88, with room to spare.
	maxToken = 192
)

// MakeToken returns a broker password for kp, valid around now.
func MakeToken(kp *identity.Keypair, now time.Time) (string, error) {
	var nonce [NonceSize]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return "", fmt.Errorf("ctrlmsg: token nonce: %w", err)
	}
	return makeToken(kp, now, nonce), nil
}

func makeToken(kp *identity.Keypair, now time.Time, nonce [NonceSize]byte) string {
	ts := strconv.FormatInt(now.Unix(), 10)
	n := hex.EncodeToString(nonce[:])
	sig := kp.Sign(tokenSigned(kp.ID(), ts, n))
	return tokenPrefix + ts + "." + n + "." + base64.StdEncoding.EncodeToString(sig)
}

func tokenSigned(id, ts, nonce string) []byte {
	return []byte(tokenDomain + id + "\x00" + ts + "\x00" + nonce)
}

// VerifyToken checks a broker login: user must be a node ID and pass a token
// it signed within window of now, not seen before by replay (nil: no replay
// check). It returns the node's public key.
func VerifyToken(user, pass string, window time.Duration, now time.Time, replay *ReplayCache) (identity.PublicKey, error) {
	key, ts, nonce, sig, err := parseToken(user, pass)
	if err != nil {
		return identity.PublicKey{}, err
	}
	if !key.Verify(tokenSigned(user, strconv.FormatInt(ts.Unix(), 10), nonce), sig) {
		return identity.PublicKey{}, ErrBadSig
	}
	if !fresh(ts, window, now) {
		return identity.PublicKey{}, fmt.Errorf("%w: token is %s from now, window %s", ErrStale, now.Sub(ts).Round(time.Second), window)
	}
	if replay != nil {
		if err := replay.Check(key, nonce, ts, now); err != nil {
			return identity.PublicKey{}, err
		}
	}
	return key, nil
}

// parseToken checks the token's syntax strictly: the signed text is
// rebuilt from the parsed values, so only one spelling of each is allowed.
func parseToken(user, pass string) (key identity.PublicKey, ts time.Time, nonce string, sig []byte, err error) {
	key, err = identity.ParsePublicKey(user)
	if err != nil {
		return key, ts, "", nil, fmt.Errorf("%w: username is not a node ID: %w", ErrMalformed, err)
	}
	if len(pass) > maxToken {
		return key, ts, "", nil, fmt.Errorf("%w: token is %d bytes, limit %d", ErrMalformed, len(pass), maxToken)
	}
	rest, ok := strings.CutPrefix(pass, tokenPrefix)
	if !ok {
		return key, ts, "", nil, fmt.Errorf("%w: token does not start with %q", ErrMalformed, tokenPrefix)
	}
	secs, rest, ok1 := strings.Cut(rest, ".")
	nonce, sigText, ok2 := strings.Cut(rest, ".")
	if !ok1 || !ok2 {
		return key, ts, "", nil, fmt.Errorf("%w: token wants 4 dot-separated parts", ErrMalformed)
	}
	if secs == "" || len(secs) > 18 || (secs[0] == '0' && len(secs) > 1) || strings.Trim(secs, "0123456789") != "" {
		return key, ts, "", nil, fmt.Errorf("%w: token time %.20q", ErrMalformed, secs)
	}
	n, _ := strconv.ParseInt(secs, 10, 64) // 18 digits always fit
	if !validNonce(nonce) {
		return key, ts, "", nil, fmt.Errorf("%w: token nonce is not %d lowercase hex digits", ErrMalformed, 2*NonceSize)
	}
	sig, err = base64.StdEncoding.Strict().DecodeString(sigText)
	if err != nil || len(sig) != identity.SignatureSize {
		return key, ts, "", nil, fmt.Errorf("%w: token signature is not base64 of %d bytes", ErrMalformed, identity.SignatureSize)
	}
	return key, time.Unix(n, 0), nonce, sig, nil
}
