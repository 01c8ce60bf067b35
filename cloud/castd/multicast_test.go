package castd

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/blockcast/beacon/cloud/web"
	"github.com/blockcast/beacon/shared/alc"
	"github.com/blockcast/beacon/shared/dtlschan"
	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/manifest"
	"github.com/blockcast/beacon/shared/mcproto"
	"github.com/blockcast/beacon/shared/objrecv"
	"github.com/blockcast/beacon/shared/protocol"
	"github.com/blockcast/beacon/shared/signedreq"
	"github.com/blockcast/beacon/test/harness"
)

// mcEnv is a serving castd with multicast on (AMT relay as the sink, the
// DTLS channel on loopback) in front of an origin that counts requests.
type mcEnv struct {
	s      *Server
	base   string
	body   []byte // every object the origin serves
	pulls  atomic.Int64
	cancel context.CancelFunc
	done   chan error
}

func newMCEnv(t *testing.T, mod func(*Options)) *mcEnv { return newMCEnvIn(t, mod, nil) }

// newMCEnvIn is newMCEnv with New run through do (in a network namespace).
func newMCEnvIn(t *testing.T, mod func(*Options), do func(func() error) error) *mcEnv {
	t.Helper()
	e := &mcEnv{body: bytes.Repeat([]byte("0123456789abcdef"), 20000)} // 320 KB: two blocks
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.pulls.Add(1)
		switch {
		case strings.HasPrefix(r.URL.Path, "/fail"):
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		case strings.HasPrefix(r.URL.Path, "/nostore"):
			w.Header().Set("Cache-Control", "no-store")
			io.WriteString(w, "private "+r.URL.Path)
			return
		}
		w.Header().Set("Cache-Control", "max-age=300")
		w.Header().Set("Content-Type", "video/mp2t")
		w.Header().Set("Etag", `"v1"`)
		w.Write(e.body)
	}))
	t.Cleanup(origin.Close)
	opts := Options{StateDir: t.TempDir(), Origin: origin.URL, CacheSize: 64 << 20, Version: "test",
		Logger:           slog.New(slog.NewTextHandler(io.Discard, nil)),
		RegistrationRate: -1, AdminToken: testToken,
		Multicast: true, MulticastSources: nil, AMTListen: "127.0.0.1:0", DTLSListen: "127.0.0.1:0",
	}
	opts.MulticastSources = append(opts.MulticastSources, netip.MustParseAddr("127.0.0.1"))
	if mod != nil {
		mod(&opts)
	}
	if do == nil {
		do = func(f func() error) error { return f() }
	}
	var s *Server
	if err := do(func() (err error) { s, err = New(opts); return err }); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.s, e.base, e.cancel, e.done = s, "http://"+ln.Addr().String(), cancel, make(chan error, 1)
	go func() { e.done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-e.done:
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return")
		}
		s.Close()
	})
	for deadline := time.Now().Add(5 * time.Second); s.mc.dtls.Load() == nil; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the DTLS channel never started")
		}
	}
	return e
}

// beacon registers a new node and returns its key.
func (e *mcEnv) beacon(t *testing.T) *identity.Keypair {
	t.Helper()
	kp, _ := identity.Generate()
	registerNode(t, e.base, kp, protocol.Registration{Role: protocol.RoleBeacon, LANURL: "http://192.168.1.1:8081", Version: "v"})
	return kp
}

// get makes a node's signed object GET; hdr are name, value pairs.
func (e *mcEnv) get(t *testing.T, kp *identity.Keypair, key string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, e.base+protocol.PathObjectPrefix+key, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	signedreq.Sign(req, nil, kp, time.Now())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

var multicastHdr = []string{protocol.HeaderMulticast, "1"}

// isOffer reports whether an answer is an offer, and checks it: a signed
// manifest of castd's key naming the object, the DTLS address to use.
func (e *mcEnv) isOffer(t *testing.T, key string, resp *http.Response, body []byte) bool {
	t.Helper()
	if resp.StatusCode != 200 {
		t.Fatalf("%s: %d %s", key, resp.StatusCode, body)
	}
	if resp.Header.Get("Content-Type") != mcproto.OfferType {
		if !bytes.Equal(body, e.body) {
			t.Fatalf("%s: unicast answer of %d bytes is not the object", key, len(body))
		}
		return false
	}
	o, err := mcproto.DecodeOffer(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("%s: offer: %v", key, err)
	}
	m := offerManifest(t, o, e.s.key.Public())
	if m.URL != key || m.ContentLength != uint64(len(e.body)) || m.ContentType != "video/mp2t" || m.ETag != `"v1"` {
		t.Fatalf("%s: manifest %v", key, m)
	}
	if o.Unicast != e.s.mc.dtls.Load().Addr().String() {
		t.Errorf("offer's unicast %q, DTLS listens on %v", o.Unicast, e.s.mc.dtls.Load().Addr())
	}
	if resp.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("offer may be cached: %v", resp.Header)
	}
	return true
}

// offerManifest decodes and verifies an offer's manifest packet.
func offerManifest(t *testing.T, o *mcproto.Offer, cast identity.PublicKey) *manifest.Manifest {
	t.Helper()
	p, err := alc.Decode(o.Manifest)
	if err != nil {
		t.Fatalf("manifest packet: %v", err)
	}
	m, err := manifest.FromPacket(p)
	if err != nil {
		t.Fatalf("manifest: %v", err)
	}
	if err := m.Verify(cast); err != nil {
		t.Fatalf("manifest signature: %v", err)
	}
	return m
}

// TestMulticastThreshold: with a threshold of 3, the first two distinct
// beacons asking for an object get it by unicast and the third an offer;
// one beacon asking again and again does not count twice, and once the
// session runs every capable beacon is offered it. The origin is asked once.
func TestMulticastThreshold(t *testing.T) {
	e := newMCEnv(t, func(o *Options) { o.MulticastThreshold = 3 })
	a, b, c := e.beacon(t), e.beacon(t), e.beacon(t)
	const key = "/vod/popular.ts"
	for i, kp := range []*identity.Keypair{a, a, a, b} {
		if resp, body := e.get(t, kp, key, multicastHdr...); e.isOffer(t, key, resp, body) {
			t.Fatalf("request %d (below the threshold) got an offer", i)
		}
	}
	if resp, body := e.get(t, c, key, multicastHdr...); !e.isOffer(t, key, resp, body) {
		t.Fatal("the third distinct beacon got no offer")
	}
	if resp, body := e.get(t, a, key, multicastHdr...); !e.isOffer(t, key, resp, body) {
		t.Fatal("a beacon asking during the session got no offer")
	}
	if n := e.pulls.Load(); n != 1 {
		t.Errorf("origin asked %d times, want 1", n)
	}
	m := scrape(t, e.base)
	if m["castd_multicast_offers_total"] != 2 || m["castd_multicast_sessions_total"] != 1 || m[`castd_multicast_offered_bytes_total`] != float64(2*len(e.body)) {
		t.Errorf("metrics: offers %v sessions %v offered bytes %v", m["castd_multicast_offers_total"], m["castd_multicast_sessions_total"], m["castd_multicast_offered_bytes_total"])
	}
}

// TestMulticastNeverOffered: a request without the header (an old beacon,
// or a fallback Range fetch), a Range request, a HEAD and a conditional
// range never get an offer, however popular the object or whatever path
// pattern names it.
func TestMulticastNeverOffered(t *testing.T) {
	e := newMCEnv(t, func(o *Options) { o.MulticastPaths = []string{"/live/*"} })
	kp := e.beacon(t)
	const key = "/live/ch1/seg1.ts"
	if resp, body := e.get(t, kp, key); e.isOffer(t, key, resp, body) {
		t.Fatal("a GET without the header got an offer")
	}
	if resp, body := e.get(t, kp, key, protocol.HeaderMulticast, "yes"); e.isOffer(t, key, resp, body) {
		t.Fatal("a header other than 1 got an offer")
	}
	resp, body := e.get(t, kp, key, protocol.HeaderMulticast, "1", "Range", "bytes=100-199")
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, e.body[100:200]) {
		t.Fatalf("range with the header: %d %q", resp.StatusCode, body[:min(len(body), 40)])
	}
	req, _ := http.NewRequest(http.MethodHead, e.base+protocol.PathObjectPrefix+key, nil)
	req.Header.Set(protocol.HeaderMulticast, "1")
	signedreq.Sign(req, nil, kp, time.Now())
	hr, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	hr.Body.Close()
	if hr.Header.Get("Content-Type") == mcproto.OfferType || hr.Header.Get("Content-Length") != strconv.Itoa(len(e.body)) {
		t.Fatalf("HEAD: %v", hr.Header)
	}
	// Nothing above started a session: the pattern's first GET with the
	// header does.
	if m := scrape(t, e.base); m["castd_multicast_sessions_total"] != 0 {
		t.Fatalf("%v sessions before any offer", m["castd_multicast_sessions_total"])
	}
	if resp, body := e.get(t, kp, key, multicastHdr...); !e.isOffer(t, key, resp, body) {
		t.Fatal("a --multicast-path object got no offer at once")
	}
}

// TestMulticastFallback: an object that cannot be stored whole and fresh
// (the origin says no-store, or fails) is served by unicast as before, and
// the fallback is counted; nothing is offered.
func TestMulticastFallback(t *testing.T) {
	e := newMCEnv(t, func(o *Options) { o.MulticastPaths = []string{"/*"} })
	kp := e.beacon(t)
	resp, body := e.get(t, kp, "/nostore", multicastHdr...)
	if resp.Header.Get("Content-Type") == mcproto.OfferType || string(body) != "private /nostore" {
		t.Fatalf("no-store object: %v %q", resp.Header, body)
	}
	resp, _ = e.get(t, kp, "/fail", multicastHdr...)
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("failing origin: %d", resp.StatusCode)
	}
	if m := scrape(t, e.base); m[`castd_multicast_fallbacks_total{reason="origin"}`] != 2 || m["castd_multicast_offers_total"] != 0 {
		t.Fatalf("fallbacks %v offers %v", m[`castd_multicast_fallbacks_total{reason="origin"}`], m["castd_multicast_offers_total"])
	}
}

// takeOffer plays a beacon that takes an offer over the DTLS channel alone
// (loopback carries no native multicast): Join for early media, then NACK
// what is missing until the object is whole. It returns the bytes and the
// assembler's counters.
func takeOffer(t *testing.T, e *mcEnv, kp *identity.Keypair, o *mcproto.Offer) ([]byte, objrecv.Stats) {
	t.Helper()
	cast := e.s.key.Public()
	m := offerManifest(t, o, cast)
	var out bytes.Buffer
	asm, err := objrecv.New(m, cast, &out, objrecv.Config{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sess, err := dtlschan.Dial(ctx, o.Unicast, kp, cast)
	if err != nil {
		t.Fatalf("DTLS dial: %v", err)
	}
	defer sess.Close()
	obj := mcproto.Object{TSI: m.TSI, TOI: m.TOI}
	join := mcproto.Join{Object: obj, EarlyBlocks: 2}
	if _, err := sess.Write(join.AppendTo(nil)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, sess.MaxPayload())
	for !asm.Done() {
		if ctx.Err() != nil {
			t.Fatalf("object incomplete after 20 s: %+v", asm.Stats())
		}
		sess.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		n, err := sess.Read(buf)
		if err == nil {
			if !mcproto.IsALC(buf[:n]) {
				msg, _ := mcproto.Decode(buf[:n])
				if st, ok := msg.(*mcproto.Status); ok && st.Code == mcproto.StatusLimited {
					continue // over the node's repair budget: NACK again later
				}
				t.Fatalf("castd answered %#v", msg)
			}
			if p, err := alc.Decode(buf[:n]); err == nil && p.TOI == manifest.ManifestTOI {
				continue // the manifest again: a beacon's, not the assembler's
			}
			asm.Feed(buf[:n], "unicast")
			continue
		}
		if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
			t.Fatalf("read: %v", err)
		}
		miss := asm.Missing(mcproto.MaxRanges(sess.MaxPayload()))
		nack := mcproto.Nack{Object: obj}
		for _, r := range miss {
			nack.Ranges = append(nack.Ranges, mcproto.Range{SBN: r.SBN, Kind: mcproto.Kind(r.Kind), First: r.First, Count: r.Count, Need: r.Need})
		}
		b, err := nack.AppendTo(nil)
		if err != nil {
			t.Fatal(err)
		}
		sess.Write(b)
	}
	leave := mcproto.Leave{Object: obj, Reason: mcproto.LeaveDone}
	sess.Write(leave.AppendTo(nil))
	return out.Bytes(), asm.Stats()
}

// TestMulticastOfferTaken: a beacon that takes the offer gets the object,
// byte-identical, from early media and repairs over the DTLS channel; the
// bytes by path show it (history and metrics), with one origin pull.
func TestMulticastOfferTaken(t *testing.T) {
	e := newMCEnv(t, func(o *Options) { o.MulticastPaths = []string{"/sw/*"}; o.RepairRate = -1 })
	kp := e.beacon(t)
	const key = "/sw/update.bin"
	resp, body := e.get(t, kp, key, multicastHdr...)
	if !e.isOffer(t, key, resp, body) {
		t.Fatal("no offer")
	}
	o, _ := mcproto.DecodeOffer(bytes.NewReader(body))
	got, st := takeOffer(t, e, kp, o)
	if sha256.Sum256(got) != sha256.Sum256(e.body) {
		t.Fatalf("object differs: %d bytes, want %d", len(got), len(e.body))
	}
	if len(st.Rejected) > 0 {
		t.Errorf("packets rejected: %v", st.Rejected)
	}
	m := scrape(t, e.base)
	if m[`castd_multicast_bytes_total{kind="early"}`]+m[`castd_multicast_bytes_total{kind="repair"}`] < float64(len(e.body)) {
		t.Errorf("early %v + repair %v bytes < the object", m[`castd_multicast_bytes_total{kind="early"}`], m[`castd_multicast_bytes_total{kind="repair"}`])
	}
	if m["castd_multicast_dtls_handshakes_total"] != 1 || m["castd_multicast_joins_total"] != 1 {
		t.Errorf("handshakes %v joins %v", m["castd_multicast_dtls_handshakes_total"], m["castd_multicast_joins_total"])
	}
	if e.pulls.Load() != 1 {
		t.Errorf("origin asked %d times", e.pulls.Load())
	}
	var h web.History
	if code, b := adminCall(t, "GET", e.base+protocol.PathMulticastHistory, testToken, "", &h); code != 200 || len(h.Minutes) != 1 {
		t.Fatalf("history: %d %s", code, b)
	}
	if mm := h.Minutes[0]; mm.Origin != int64(len(e.body)) || mm.Repair < int64(len(e.body)) || mm.Unicast != 0 {
		t.Errorf("history minute %+v", mm)
	}
}

// TestMulticastDTLSRefusals: the DTLS channel takes only registered nodes
// (a valid wallet key that castd does not know is refused and counted),
// and a Join for an object castd never offered gets StatusUnknown, no data.
func TestMulticastDTLSRefusals(t *testing.T) {
	e := newMCEnv(t, nil)
	addr := e.s.mc.dtls.Load().Addr().String()
	cast := e.s.key.Public()
	stranger, _ := identity.Generate()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if sess, err := dtlschan.Dial(ctx, addr, stranger, cast); err == nil {
		sess.Close()
		t.Fatal("an unregistered key got a DTLS session")
	}
	// The client may see the refusal a moment before castd counts it.
	var refused float64
	harness.WaitFor(5*time.Second, func() bool {
		refused = scrape(t, e.base)[`castd_multicast_dtls_refused_total{reason="unregistered"}`]
		return refused == 1
	})
	if refused != 1 {
		t.Errorf("unregistered refusals %v", refused)
	}
	kp := e.beacon(t)
	sess, err := dtlschan.Dial(ctx, addr, kp, cast)
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	join := mcproto.Join{Object: mcproto.Object{TSI: 7, TOI: 1}, EarlyBlocks: 100}
	sess.Write(join.AppendTo(nil))
	buf := make([]byte, sess.MaxPayload())
	sess.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := sess.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := mcproto.Decode(buf[:n])
	if st, ok := msg.(*mcproto.Status); err != nil || !ok || st.Code != mcproto.StatusUnknown {
		t.Fatalf("answer to a Join for nothing: %#v %v", msg, err)
	}
}

// TestMulticastServeJoined: with a session on its channel and a beacon's
// DTLS session open, Serve stops everything it started before it returns
// (the sender's carousel, the repair service, the DTLS listener).
func TestMulticastServeJoined(t *testing.T) {
	before := goroutines()
	e := newMCEnv(t, func(o *Options) { o.MulticastPaths = []string{"/*"} })
	kp := e.beacon(t)
	resp, body := e.get(t, kp, "/a.bin", multicastHdr...)
	if !e.isOffer(t, "/a.bin", resp, body) {
		t.Fatal("no offer")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sess, err := dtlschan.Dial(ctx, e.s.mc.dtls.Load().Addr().String(), kp, e.s.key.Public())
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	if m := scrape(t, e.base); m["castd_multicast_sessions"] != 1 {
		t.Fatalf("%v sessions running", m["castd_multicast_sessions"])
	}
	e.cancel()
	select {
	case err := <-e.done:
		e.done <- err // for the cleanup
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return")
	}
	if st := e.s.mc.sender.Stats(); st.Active != 0 || e.s.mc.dtls.Load().Sessions() != 0 {
		t.Fatalf("after Serve: %d object sessions, %d DTLS sessions", st.Active, e.s.mc.dtls.Load().Sessions())
	}
	if l := leaked(before, "cloud/castd.", "cloud/mcsend.", "shared/dtlschan.", "cloud/amtrelay."); len(l) > 0 {
		t.Fatalf("%d goroutines outlive Serve:\n%s", len(l), strings.Join(l, "\n\n"))
	}
}

// TestMulticastDeletedNodeLosesChannel: the DTLS handshake checks the
// registry once; a node the operator deletes must lose its channel at once
// (it used to keep early media and repairs until the session went idle),
// and cannot open a new one.
func TestMulticastDeletedNodeLosesChannel(t *testing.T) {
	e := newMCEnv(t, nil)
	kp := e.beacon(t)
	addr := e.s.mc.dtls.Load().Addr().String()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sess, err := dtlschan.Dial(ctx, addr, kp, e.s.key.Public())
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	// The server side has the session once the node's first datagram is in.
	leave := mcproto.Leave{Object: mcproto.Object{TSI: 1, TOI: 1}}
	sess.Write(leave.AppendTo(nil))
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if _, ok := e.s.mc.dtls.Load().Session(kp.ID()); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("castd never had the node's DTLS session")
		}
	}
	if code, b := adminCall(t, "DELETE", e.base+protocol.PathNodes+"/"+kp.ID(), testToken, "", nil); code != http.StatusNoContent {
		t.Fatalf("delete: %d %s", code, b)
	}
	if _, ok := e.s.mc.dtls.Load().Session(kp.ID()); ok {
		t.Fatal("the deleted node's DTLS session is still open")
	}
	sess.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, sess.MaxPayload())
	for {
		if _, err := sess.Read(buf); err != nil {
			if !errors.Is(err, dtlschan.ErrPeerClosed) {
				t.Fatalf("the node's side: %v, want the peer's close", err)
			}
			break
		}
	}
	if s2, err := dtlschan.Dial(ctx, addr, kp, e.s.key.Public()); err == nil {
		s2.Close()
		t.Fatal("a deleted node opened a new DTLS session")
	}
}

// TestMulticastObjectGoneMidSession: the session reads the object from
// castd's cache while it runs; the object being purged, replaced or
// evicted from the cache meanwhile must not break the session (its symbols
// used to come from a file that was gone), so a beacon that takes the offer
// still gets the offered bytes.
func TestMulticastObjectGoneMidSession(t *testing.T) {
	e := newMCEnv(t, func(o *Options) { o.MulticastPaths = []string{"/*"}; o.RepairRate = -1 })
	kp := e.beacon(t)
	resp, body := e.get(t, kp, "/big.bin", multicastHdr...)
	if !e.isOffer(t, "/big.bin", resp, body) {
		t.Fatal("no offer")
	}
	if n, err := e.s.cache.Purge("/"); err != nil || n != 1 {
		t.Fatalf("purge: %d %v", n, err)
	}
	o, _ := mcproto.DecodeOffer(bytes.NewReader(body))
	got, _ := takeOffer(t, e, kp, o)
	if !bytes.Equal(got, e.body) {
		t.Fatalf("object differs: %d bytes", len(got))
	}
}

// TestMulticastStartsBounded: while maxSessionStarts sessions are being
// built, a miss for yet another new object is served by unicast (and
// counted) rather than make castd build one more; a running session is
// still offered, and once a slot frees the new object gets its offer.
// Many beacons asking for one new object at once take one slot: they all
// get the offer (TestMulticastConcurrentMisses).
func TestMulticastStartsBounded(t *testing.T) {
	e := newMCEnv(t, func(o *Options) { o.MulticastPaths = []string{"/*"} })
	kp := e.beacon(t)
	if resp, body := e.get(t, kp, "/running.bin", multicastHdr...); !e.isOffer(t, "/running.bin", resp, body) {
		t.Fatal("no offer")
	}
	for i := range maxSessionStarts {
		e.s.mc.startBuild(fmt.Sprintf("/building/%d", i)) // builds in progress
	}
	if resp, body := e.get(t, kp, "/new.bin", multicastHdr...); e.isOffer(t, "/new.bin", resp, body) {
		t.Fatal("a new session was built with every slot taken")
	}
	if resp, body := e.get(t, kp, "/running.bin", multicastHdr...); !e.isOffer(t, "/running.bin", resp, body) {
		t.Fatal("the running session was not offered while builds were busy")
	}
	if m := scrape(t, e.base); m[`castd_multicast_fallbacks_total{reason="busy"}`] != 1 {
		t.Errorf("busy fallbacks %v", m[`castd_multicast_fallbacks_total{reason="busy"}`])
	}
	e.s.mc.endBuild("/building/0")
	if resp, body := e.get(t, kp, "/new.bin", multicastHdr...); !e.isOffer(t, "/new.bin", resp, body) {
		t.Fatal("no offer once a slot was free")
	}
}

// TestMulticastConcurrentMisses: beacons that miss one popular object at
// the same moment all get the offer of its one session (none is turned
// away because the others are building it), and the origin is asked once.
func TestMulticastConcurrentMisses(t *testing.T) {
	e := newMCEnv(t, func(o *Options) { o.MulticastPaths = []string{"/*"} })
	const n = 3 * maxSessionStarts
	kps := make([]*identity.Keypair, n)
	for i := range kps {
		kps[i] = e.beacon(t)
	}
	var wg sync.WaitGroup
	offered := make([]bool, n)
	for i, kp := range kps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, body := e.get(t, kp, "/hot.bin", multicastHdr...)
			offered[i] = resp.Header.Get("Content-Type") == mcproto.OfferType && len(body) > 0
		}()
	}
	wg.Wait()
	for i, ok := range offered {
		if !ok {
			t.Errorf("beacon %d got no offer", i)
		}
	}
	if m := scrape(t, e.base); m["castd_multicast_sessions_total"] != 1 || e.pulls.Load() != 1 {
		t.Errorf("sessions %v, origin pulls %d", m["castd_multicast_sessions_total"], e.pulls.Load())
	}
}

// TestMulticastStrangersDoNotCount: requests from keys castd does not know
// are refused before they reach the popularity counter, so strangers
// cannot make an object "popular" (and make castd send it by multicast).
func TestMulticastStrangersDoNotCount(t *testing.T) {
	e := newMCEnv(t, func(o *Options) { o.MulticastThreshold = 2 })
	for range 5 {
		stranger, _ := identity.Generate()
		if resp, _ := e.get(t, stranger, "/x.bin", multicastHdr...); resp.StatusCode != http.StatusForbidden {
			t.Fatalf("stranger: %d", resp.StatusCode)
		}
	}
	if resp, body := e.get(t, e.beacon(t), "/x.bin", multicastHdr...); e.isOffer(t, "/x.bin", resp, body) {
		t.Fatal("strangers' requests counted toward the threshold")
	}
}

// TestMulticastNackFlood: a registered node that floods the DTLS channel
// with NACKs for every symbol of a running session is held to its budget
// (refusals counted), and another beacon still completes the object.
func TestMulticastNackFlood(t *testing.T) {
	e := newMCEnv(t, func(o *Options) { o.MulticastPaths = []string{"/*"}; o.RepairRate = 1e6 })
	attacker, honest := e.beacon(t), e.beacon(t)
	resp, body := e.get(t, attacker, "/f.bin", multicastHdr...)
	if !e.isOffer(t, "/f.bin", resp, body) {
		t.Fatal("no offer")
	}
	o, _ := mcproto.DecodeOffer(bytes.NewReader(body))
	m := offerManifest(t, o, e.s.key.Public())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sess, err := dtlschan.Dial(ctx, o.Unicast, attacker, e.s.key.Public())
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	nack := mcproto.Nack{Object: mcproto.Object{TSI: m.TSI, TOI: m.TOI}}
	for sbn := uint32(0); len(nack.Ranges) < mcproto.MaxRanges(sess.MaxPayload()); sbn = (sbn + 1) % 2 {
		nack.Ranges = append(nack.Ranges, mcproto.Range{SBN: sbn, Kind: mcproto.Symbols, First: 0, Count: 200, Need: 200})
	}
	pkt, err := nack.AppendTo(nil)
	if err != nil {
		t.Fatal(err)
	}
	for range 2000 {
		sess.Write(pkt)
	}
	var refused float64
	harness.WaitFor(5*time.Second, func() bool {
		mm := scrape(t, e.base)
		refused = mm[`castd_multicast_refused_total{reason="rate"}`] + mm[`castd_multicast_refused_total{reason="ranges"}`] +
			mm[`castd_multicast_refused_total{reason="pending"}`] + mm[`castd_multicast_refused_total{reason="limited"}`]
		return refused > 0
	})
	if refused == 0 {
		t.Error("a NACK flood was not refused or counted")
	}
	resp, body = e.get(t, honest, "/f.bin", multicastHdr...)
	if !e.isOffer(t, "/f.bin", resp, body) {
		t.Fatal("no offer for the honest beacon")
	}
	o, _ = mcproto.DecodeOffer(bytes.NewReader(body))
	if got, _ := takeOffer(t, e, honest, o); !bytes.Equal(got, e.body) {
		t.Fatal("the honest beacon's object differs")
	}
}

// TestMulticastRevalidationNotOffered: a beacon revalidating its stale copy
// (a conditional GET, which carries the multicast header too) gets the
// 304 it asked for, not an offer that would send the whole object again,
// and its revalidation does not count as a miss toward the threshold.
func TestMulticastRevalidationNotOffered(t *testing.T) {
	e := newMCEnv(t, func(o *Options) { o.MulticastPaths = []string{"/live/*"}; o.MulticastThreshold = 2 })
	kp := e.beacon(t)
	for _, key := range []string{"/live/a.ts", "/vod/b.ts"} {
		e.get(t, kp, key) // in castd's cache (no header: unicast)
		for _, cond := range [][]string{{"If-None-Match", `"v1"`}, {"If-Modified-Since", time.Now().UTC().Format(http.TimeFormat)}} {
			for range 2 {
				resp, body := e.get(t, e.beacon(t), key, protocol.HeaderMulticast, "1", cond[0], cond[1])
				if resp.StatusCode != http.StatusNotModified || len(body) != 0 {
					t.Fatalf("%s %s: %d %s, want 304", key, cond[0], resp.StatusCode, resp.Header.Get("Content-Type"))
				}
			}
		}
	}
	if m := scrape(t, e.base); m["castd_multicast_sessions_total"] != 0 {
		t.Fatalf("revalidations started %v sessions", m["castd_multicast_sessions_total"])
	}
}

// TestMulticastUnstorableOncePerWindow: an object the origin forbids
// storing costs castd a second origin request when it tries multicast (the
// answer it was not allowed to keep must be fetched again for unicast).
// That may happen once per unfitFor, not on every miss, or a --multicast-path
// over no-store content would double the origin's load.
func TestMulticastUnstorableOncePerWindow(t *testing.T) {
	e := newMCEnv(t, func(o *Options) { o.MulticastPaths = []string{"/*"} })
	kp := e.beacon(t)
	const n = 5
	for range n {
		if resp, body := e.get(t, kp, "/nostore/x", multicastHdr...); string(body) != "private /nostore/x" {
			t.Fatalf("%d %q", resp.StatusCode, body)
		}
	}
	if got := e.pulls.Load(); got != n+1 {
		t.Errorf("origin asked %d times for %d misses, want %d", got, n, n+1)
	}
}
