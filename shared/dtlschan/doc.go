// Package dtlschan is the unicast channel between a beacon and castd: DTLS
// 1.2 (pion/dtls) over UDP, mutually authenticated by the nodes' wallet keys.
//
// Each side presents a self-signed Ed25519 certificate made from its
// identity.Keypair and checks the other's by its key alone, with no CA and no
// names: castd (Listen) accepts a node only if its Accept callback says the
// node ID is registered and hands each session over with that node ID; the
// beacon (Dial) pins the CAST key. Sessions carry whole datagrams no larger
// than MaxPayload, so that one datagram sent is one UDP datagram on the path
// and one read on the other side, the shape the ALC packets of the multicast
// channel have.
//
// The listener keeps one address from taking the handshake capacity meant
// for all: a token bucket per source address for new handshakes and a bound
// on those it holds at once. A new peer then waits in a pool, evicting its
// oldest, until it echoes the cookie of pion's HelloVerifyRequest, which
// proves it receives at its address; only then does it get one of the
// MaxHandshakes slots where certificates are checked, and each handshake
// has a timeout. So ClientHellos from forged addresses cannot lock honest
// nodes out. Each session has an idle timeout, and a node has one session:
// a newer handshake replaces the older.
package dtlschan
