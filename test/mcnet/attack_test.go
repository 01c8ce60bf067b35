package mcnet

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/blockcast/beacon/shared/alc"
	"github.com/blockcast/beacon/shared/amt"
	"github.com/blockcast/beacon/shared/dtlschan"
	"github.com/blockcast/beacon/shared/fec"
	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/manifest"
	"github.com/blockcast/beacon/shared/mcproto"
	"github.com/blockcast/beacon/shared/protocol"
	"github.com/blockcast/beacon/shared/signedreq"
)

// attacker is a host on the segment with a registered node key: it gets
// offers like a beacon, so it knows the channel and the manifest.
type attacker struct {
	l       *lab
	key     *identity.Keypair
	client  *http.Client
	castKey identity.PublicKey
}

func newAttacker(l *lab) *attacker {
	t := l.tb
	t.Helper()
	key, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	a := &attacker{l: l, key: key, client: l.attacker.HTTPClient(10 * time.Second)}
	body, _ := json.Marshal(protocol.Registration{Role: protocol.RoleBeacon, LANURL: "http://" + attackerIP + ":8081"})
	resp, err := a.do(http.MethodPost, protocol.PathRegister, body, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("attacker's registration: %s", resp.Status)
	}
	resp, err = a.client.Get("http://" + castHTTP + protocol.PathCastKey)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if a.castKey, err = identity.ParsePublicKey(strings.TrimSpace(string(b))); err != nil {
		t.Fatalf("castd's key %q: %v", b, err)
	}
	return a
}

func (a *attacker) do(method, path string, body []byte, hdr http.Header) (*http.Response, error) {
	req, err := http.NewRequest(method, "http://"+castHTTP+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if err := signedreq.Sign(req, body, a.key, time.Now()); err != nil {
		return nil, err
	}
	return a.client.Do(req)
}

// offer asks castd for path as a multicast-capable beacon would and returns
// the offer's manifest packet and the manifest.
func (a *attacker) offer(path string) ([]byte, *manifest.Manifest, error) {
	resp, err := a.do(http.MethodGet, protocol.PathObjectPrefix+path, nil, http.Header{protocol.HeaderMulticast: {"1"}})
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != mcproto.OfferType {
		return nil, nil, fmt.Errorf("GET %s: %s %q, want an offer", path, resp.Status, resp.Header.Get("Content-Type"))
	}
	o, err := mcproto.DecodeOffer(resp.Body)
	if err != nil {
		return nil, nil, err
	}
	p, err := alc.Decode(o.Manifest)
	if err != nil {
		return nil, nil, err
	}
	m, err := manifest.FromPacket(p)
	return o.Manifest, m, err
}

// rawSender sends whole IPv4 datagrams (any source address) from the
// attacker's namespace.
type rawSender struct{ fd int }

func (a *attacker) raw() (*rawSender, error) {
	var fd int
	err := a.l.attacker.Do(func() (err error) {
		fd, err = syscall.Socket(syscall.AF_INET, syscall.SOCK_RAW, syscall.IPPROTO_RAW)
		return err
	})
	return &rawSender{fd: fd}, err
}

func (r *rawSender) send(src netip.Addr, ch manifest.Channel, payload []byte) error {
	pkt, err := amt.AppendInnerUDP(nil, amt.Datagram{Src: src, Dst: ch.Group, SrcPort: ch.Port, DstPort: ch.Port, TTL: 4, Payload: payload})
	if err != nil {
		return err
	}
	return syscall.Sendto(r.fd, pkt, 0, &syscall.SockaddrInet4{Addr: ch.Group.As4()})
}

func (r *rawSender) close() { syscall.Close(r.fd) }

// forged is a data packet of m's object with the right header and wrong
// bytes.
func forged(m *manifest.Manifest, rng *rand.Rand) []byte {
	part, err := fec.Partition(m.ContentLength, int(m.FEC.SymbolLen), int(m.FEC.MaxBlockLen))
	if err != nil {
		return nil
	}
	sbn := uint32(rng.IntN(int(part.N)))
	k := part.BlockLen(sbn)
	esi := rng.IntN(k + int(m.FEC.MaxParity))
	payload := make([]byte, part.SymbolLen(sbn, esi))
	for i := range payload {
		payload[i] = byte(rng.Uint32())
	}
	p := alc.Packet{Codepoint: alc.EncodingID, TSI: uint64(m.TSI), TOI: uint64(m.TOI), SBN: sbn, SBL: uint16(k),
		ESI: uint16(esi), Payload: payload}
	b, _ := p.AppendTo(nil)
	return b
}

// TestAttacks: while castd sends an object to beacons on the segment and
// through AMT, a registered node on the segment attacks: forged data
// packets from castd's address at a high rate, the same from its own
// address, a tampered manifest and a replayed old one in-band (TOI 0), a
// DTLS client with an unregistered key, and a NACK flood over DTLS. The
// honest transfer completes with the exact bytes everywhere, and the
// attacks are counted.
func TestAttacks(t *testing.T) {
	require(t)
	const size = 4 << 20
	l := newLab(t, 5, 1, true)
	const repairRate = 1 << 20 // bytes a second: 8Mbit
	l.startCastd("", "--multicast-rate", "24Mbit", "--repair-rate", "8Mbit")
	// On the path of nb3, a proxy alters one byte of each offer's signed
	// manifest; on nb4's, it swaps in an old manifest of another object.
	var old atomic.Pointer[[]byte]
	l.nodes[3].refuse, l.nodes[4].refuse = true, true
	tampered := l.onPath(l.nodes[3], func(m []byte) []byte { m[len(m)-70] ^= 0x01; return m })
	replayed := l.onPath(l.nodes[4], func(m []byte) []byte { return *old.Load() })
	for _, n := range l.nodes {
		if n.refuse {
			l.startBeacon(n, "", "--cast-url", "http://"+proxyAddr)
		} else {
			l.startBeacon(n, "")
		}
	}
	a := newAttacker(l)
	l.waitReady(l.nodes)

	// An old manifest to replay: the attacker's own session of another object.
	oldPath := "/obj/65536/old.bin"
	oldPkt, oldM, err := a.offer(oldPath)
	if err != nil {
		t.Fatal(err)
	}
	old.Store(&oldPkt)

	path := fmt.Sprintf("/obj/%d/attacked.bin", size)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var forgedSent, wrongSent, nackSent, attackerGot atomic.Int64
	attackErr := make(chan error, 8)
	wg.Add(1)
	go func() {
		defer wg.Done()
		// Let the honest beacons' requests start the session, then join it.
		time.Sleep(100 * time.Millisecond)
		pkt, m, err := a.offer(path)
		if err != nil {
			attackErr <- err
			return
		}
		castSrc := netip.MustParseAddr(castSegIP)
		if m.Channel.Source != castSrc {
			attackErr <- fmt.Errorf("channel source %v, want %v", m.Channel.Source, castSrc)
			return
		}
		raw, err := a.raw()
		if err != nil {
			attackErr <- err
			return
		}
		defer raw.close()
		tampered := bytes.Clone(pkt)
		tampered[len(tampered)-70] ^= 0x01 // inside the signed fields or the signature
		rng := rand.New(rand.NewPCG(1, 2))

		wg.Add(1)
		go func() { defer wg.Done(); attackErr <- a.nackFlood(m, stop, &nackSent, &attackerGot) }()

		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			// Forged data from castd's address: passes the SSM filter.
			if err := raw.send(castSrc, m.Channel, forged(m, rng)); err != nil {
				attackErr <- fmt.Errorf("forged: %w", err)
				return
			}
			forgedSent.Add(1)
			// The same from the attacker's own address.
			if err := raw.send(netip.MustParseAddr(attackerIP), m.Channel, forged(m, rng)); err == nil {
				wrongSent.Add(1)
			}
			if i%50 == 0 {
				raw.send(castSrc, m.Channel, tampered)
				raw.send(castSrc, m.Channel, oldPkt)
				raw.send(castSrc, oldM.Channel, oldPkt)
			}
			if i%200 == 0 {
				time.Sleep(time.Millisecond) // ~100k packets a second at most
			}
		}
	}()

	// A DTLS client with a key castd never registered.
	stranger, _ := identity.Generate()
	var dialErr error
	l.attacker.Do(func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var s *dtlschan.Session
		s, dialErr = dtlschan.Dial(ctx, castDTLS, stranger, a.castKey)
		if dialErr == nil {
			s.Close()
		}
		return nil
	})
	if dialErr == nil {
		t.Error("castd accepted a DTLS client with an unregistered key")
	}

	start := time.Now()
	l.run(path, size, nil)
	close(stop)
	wg.Wait()
	elapsed := time.Since(start)
	close(attackErr)
	for err := range attackErr {
		if err != nil {
			t.Errorf("attacker: %v", err)
		}
	}
	t.Logf("attacker sent %d forged packets from castd's address, %d from its own, %d NACKs; got %d bytes of repairs in %s",
		forgedSent.Load(), wrongSent.Load(), nackSent.Load(), attackerGot.Load(), elapsed.Round(time.Millisecond))
	if forgedSent.Load() < 1000 || nackSent.Load() < 100 {
		t.Errorf("the attack was too weak to mean anything")
	}

	if tampered.Load() < 1 || replayed.Load() < 1 {
		t.Errorf("the on-path proxies altered %d and %d offers, want at least 1 each", tampered.Load(), replayed.Load())
	}
	cm := l.castdMetrics()
	if v := sample(cm, `castd_multicast_dtls_refused_total{reason="unregistered"}`); v < 1 {
		t.Errorf("castd counted %v unregistered DTLS clients, want at least 1", v)
	}
	t.Logf("castd refused: %s", grepLines(cm, "castd_multicast_refused_total{", "castd_multicast_dtls_refused_total{"))
	if sum(cm, "castd_multicast_refused_total", "") == 0 {
		t.Error("castd refused none of the NACK flood")
	}
	// The flood gets no more than the node's repair budget.
	if limit := int64(repairRate*elapsed.Seconds()) + 2*repairRate; attackerGot.Load() > limit {
		t.Errorf("the NACK flood drew %d bytes in %s, over the per-node budget (%d)", attackerGot.Load(), elapsed, limit)
	}
	var digest float64
	for _, n := range l.nodes {
		if !n.viaAMT {
			digest += sample(l.beaconMetrics(n), `beacon_multicast_packets_rejected_total{reason="digest"}`)
		}
	}
	if digest == 0 {
		t.Error("no native beacon rejected a forged packet by its digest")
	}
}

// nackFlood dials castd's DTLS channel with the attacker's registered key,
// joins m's object, then sends NACKs for everything, for blocks that do not
// exist and for an object never offered, as fast as it can, counting the
// bytes castd answers with.
func (a *attacker) nackFlood(m *manifest.Manifest, stop <-chan struct{}, sent, got *atomic.Int64) error {
	var s *dtlschan.Session
	err := a.l.attacker.Do(func() (err error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s, err = dtlschan.Dial(ctx, castDTLS, a.key, a.castKey)
		return err
	})
	if err != nil {
		return fmt.Errorf("registered DTLS dial: %w", err)
	}
	defer s.Close()
	go func() {
		buf := make([]byte, 2048)
		for {
			n, err := s.Read(buf)
			if err != nil {
				return
			}
			got.Add(int64(n))
		}
	}()
	obj := mcproto.Object{TSI: m.TSI, TOI: m.TOI}
	join := mcproto.Join{Object: obj, EarlyBlocks: 65535}
	if _, err := s.Write(join.AppendTo(nil)); err != nil {
		return err
	}
	nr := mcproto.MaxRanges(s.MaxPayload())
	for i := 0; ; i++ {
		select {
		case <-stop:
			return nil
		default:
		}
		n := mcproto.Nack{Object: obj}
		if i%10 == 9 {
			n.Object.TOI = 0x7fff0000 + uint32(i) // never offered
		}
		for j := 0; j < nr; j++ {
			n.Ranges = append(n.Ranges, mcproto.Range{SBN: uint32(j * 7919), Kind: mcproto.Symbols, First: 0, Count: 65535, Need: 65535})
		}
		b, err := n.AppendTo(nil)
		if err != nil {
			return err
		}
		if _, err := s.Write(b); err != nil {
			if i > 0 {
				return nil // castd may close a flooding peer
			}
			return err
		}
		sent.Add(1)
		if i%20 == 0 {
			time.Sleep(time.Millisecond)
		}
	}
}

// grepLines returns page's lines that start with any of prefixes.
func grepLines(page string, prefixes ...string) string {
	var out []string
	for _, line := range strings.Split(page, "\n") {
		for _, p := range prefixes {
			if strings.HasPrefix(line, p) {
				out = append(out, line)
			}
		}
	}
	return strings.Join(out, "; ")
}
