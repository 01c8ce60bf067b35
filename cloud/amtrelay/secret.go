package amtrelay

import (
	"crypto/rand"
	"crypto/subtle"
	"fmt"
	"io"
	"net/netip"
	"time"

	"github.com/blockcast/beacon/shared/amt"
)

const secretLen = 32

// keyring holds the current and previous MAC secrets (RFC 7450:
// rotate no more often than every two hours and keep accepting the previous
// secret). It is immutable; rotation swaps in a new one.
type keyring struct {
	gen       uint64
	cur, prev []byte // prev is nil before the first rotation
	next      time.Time
}

func newKeyring(old *keyring, rnd io.Reader, now time.Time, period time.Duration) (*keyring, error) {
	if rnd == nil {
		rnd = rand.Reader
	}
	kr := &keyring{cur: make([]byte, secretLen), next: now.Add(period)}
	if _, err := io.ReadFull(rnd, kr.cur); err != nil {
		return nil, fmt.Errorf("amtrelay: MAC secret: %w", err)
	}
	if old != nil {
		kr.gen, kr.prev = old.gen+1, old.cur
	}
	return kr, nil
}

// mac is the response MAC for a Query sent now.
func (kr *keyring) mac(gw netip.AddrPort, nonce uint32) [6]byte {
	return amt.ComputeMAC(kr.cur, gw, nonce)
}

// verify reports whether mac is the response MAC for gw and nonce under the
// current or previous secret. With quirk, four matching leading bytes are
// enough (Cisco IOS-XE 03.16 echoes the last two wrongly).
func (kr *keyring) verify(gw netip.AddrPort, nonce uint32, mac [6]byte, quirk bool) bool {
	for _, s := range [][]byte{kr.cur, kr.prev} {
		if s == nil {
			continue
		}
		if !quirk {
			if amt.VerifyMAC(s, gw, nonce, mac) {
				return true
			}
			continue
		}
		want := amt.ComputeMAC(s, gw, nonce)
		if subtle.ConstantTimeCompare(want[:4], mac[:4]) == 1 {
			return true
		}
	}
	return false
}
