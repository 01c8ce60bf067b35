package mcrecv

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/blockcast/beacon/shared/alc"
	"github.com/blockcast/beacon/shared/amt"
	"github.com/blockcast/beacon/shared/dtlschan"
	"github.com/blockcast/beacon/shared/fec"
	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/manifest"
	"github.com/blockcast/beacon/shared/mcproto"
	"github.com/blockcast/beacon/shared/metrics"
)

// The tests stand a small sender in for castd: manifest.Build over an
// object, its ALC packets sent over real loopback UDP sockets in place of
// the multicast channel (from 127.0.0.2, the channel's source), a real
// dtlschan.Server for early media and repairs, and a real HTTP server for
// the range fallback.

var codec = fec.NewCodec()

const (
	symLen = 1024
	blkLen = 16
	parity = 8
	etag   = `"v1"`
)

func key(t testing.TB, seed byte) *identity.Keypair {
	t.Helper()
	k, err := identity.FromSeed(bytes.Repeat([]byte{seed}, identity.SeedSize))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func testObject(n int) []byte {
	r := rand.New(rand.NewPCG(uint64(n), 7))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// sender holds an object's manifest and every packet castd would send.
type sender struct {
	t     testing.TB
	obj   []byte
	m     *manifest.Manifest
	part  fec.Blocks
	lists []*manifest.HashList
	syms  [][][]byte // [sbn][esi], source (unpadded) then parity
	cast  *identity.Keypair
}

func newSender(t testing.TB, obj []byte, url string, seq uint64, cast *identity.Keypair) *sender {
	t.Helper()
	ch, err := manifest.ChannelOf("127.0.0.2", "232.1.2.3", 5001)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().Truncate(time.Second)
	m, lists, err := manifest.Build(bytes.NewReader(obj), int64(len(obj)), manifest.Params{
		URL: url, ContentType: "video/mp4", ETag: etag, LastModified: now.Add(-time.Hour), Sequence: seq,
		Issued: now, Expires: now.Add(time.Hour), TSI: 77, TOI: 5, Channel: ch,
		SymbolLen: symLen, MaxBlockLen: blkLen, MaxParity: parity,
	}, cast, codec)
	if err != nil {
		t.Fatal(err)
	}
	part, _ := fec.Partition(m.ContentLength, symLen, blkLen)
	s := &sender{t: t, obj: obj, m: m, part: part, lists: lists, cast: cast}
	for sbn := range part.N {
		src, err := part.Source(obj, sbn)
		if err != nil {
			t.Fatal(err)
		}
		par, err := codec.Parity(src, len(src), len(src)+parity)
		if err != nil {
			t.Fatal(err)
		}
		var all [][]byte
		for esi, sym := range src {
			all = append(all, sym[:part.SymbolLen(sbn, esi)])
		}
		s.syms = append(s.syms, append(all, par...))
	}
	return s
}

func (s *sender) data(sbn uint32, esi int) []byte {
	p := alc.Packet{TSI: uint64(s.m.TSI), TOI: uint64(s.m.TOI), SBN: sbn, SBL: uint16(s.part.BlockLen(sbn)), ESI: uint16(esi), Payload: s.syms[sbn][esi]}
	b, err := p.AppendTo(nil)
	if err != nil {
		s.t.Error(err)
	}
	return b
}

func (s *sender) hashPart(sbn uint32, chunk int) []byte {
	p, err := s.lists[sbn].Parts()[chunk].Packet(s.m)
	if err != nil {
		s.t.Error(err)
	}
	b, err := p.AppendTo(nil)
	if err != nil {
		s.t.Error(err)
	}
	return b
}

// block returns a block's packets: hash parts, then k source symbols.
func (s *sender) block(sbn uint32) [][]byte {
	var out [][]byte
	for c := range s.lists[sbn].Parts() {
		out = append(out, s.hashPart(sbn, c))
	}
	for esi := range s.part.BlockLen(sbn) {
		out = append(out, s.data(sbn, esi))
	}
	return out
}

func (s *sender) offer(unicast string) *http.Response {
	p, err := s.m.Packet()
	if err != nil {
		s.t.Fatal(err)
	}
	mb, err := p.AppendTo(nil)
	if err != nil {
		s.t.Fatal(err)
	}
	return offerResponse(s.t, mb, unicast)
}

func offerResponse(t testing.TB, mpkt []byte, unicast string) *http.Response {
	body, err := mcproto.EncodeOffer(&mcproto.Offer{Version: mcproto.OfferVersion, Manifest: mpkt, Unicast: unicast})
	if err != nil {
		t.Fatal(err)
	}
	return &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {mcproto.OfferType}}, Body: io.NopCloser(bytes.NewReader(body))}
}

// castdSim is a real dtlschan.Server answering Join with early blocks and
// NACKs with repairs, while repairsLeft lasts.
type castdSim struct {
	t           testing.TB
	s           *sender
	srv         *dtlschan.Server
	repairsLeft atomic.Int64
	joins       atomic.Int64
	nacks       atomic.Int64
	leaves      sync.Map      // reason -> true
	dropFirst   atomic.Bool   // close the first session after its Join
	status      atomic.Uint32 // a mcproto.StatusCode: answer NACKs with this Status instead, when set
}

func newCastd(t testing.TB, s *sender, beacon *identity.Keypair, repairs int) *castdSim {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := dtlschan.Listen(ctx, "127.0.0.1:0", s.cast, func(id string) bool { return id == beacon.ID() }, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := &castdSim{t: t, s: s, srv: srv}
	c.repairsLeft.Store(int64(repairs))
	go func() {
		for {
			sess, err := srv.Accept(ctx)
			if err != nil {
				return
			}
			go c.serve(sess)
		}
	}()
	t.Cleanup(func() { cancel(); srv.Close() })
	return c
}

func (c *castdSim) waitLeave(t testing.TB, why mcproto.LeaveReason) {
	t.Helper()
	for range 300 {
		if _, ok := c.leaves.Load(why); ok {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Errorf("no Leave(%d) reached castd", why)
}

func (c *castdSim) addr() string { return c.srv.Addr().String() }

func (c *castdSim) serve(sess *dtlschan.Session) {
	buf := make([]byte, sess.MaxPayload())
	for {
		n, err := sess.Read(buf)
		if err != nil {
			if sess.Err() != nil {
				return
			}
			continue
		}
		msg, err := mcproto.Decode(buf[:n])
		if err != nil {
			c.t.Errorf("castd got a bad message: %v", err)
			continue
		}
		switch m := msg.(type) {
		case *mcproto.Join:
			c.joins.Add(1)
			for sbn := range min(uint32(m.EarlyBlocks), c.s.part.N) {
				for _, p := range c.s.block(sbn) {
					sess.Write(p)
				}
			}
			if c.dropFirst.CompareAndSwap(true, false) {
				sess.Close()
				return
			}
		case *mcproto.Nack:
			c.nacks.Add(1)
			if code := mcproto.StatusCode(c.status.Load()); code != 0 {
				st := mcproto.Status{Object: m.Object, Code: code, RetryAfterMs: 100}
				sess.Write(st.AppendTo(nil))
				continue
			}
			if c.repairsLeft.Add(-1) < 0 {
				continue
			}
			for _, r := range m.Ranges {
				for i := range int(r.Count) {
					if r.Kind == mcproto.HashChunk {
						sess.Write(c.s.hashPart(r.SBN, int(r.First)+i))
					} else {
						sess.Write(c.s.data(r.SBN, int(r.First)+i))
					}
				}
			}
		case *mcproto.Leave:
			c.leaves.Store(m.Reason, true)
		}
	}
}

// origin serves the object with ranges, as castd's unicast path does.
type origin struct {
	srv    *httptest.Server
	ranges atomic.Int64
}

func newOrigin(t testing.TB, obj []byte) *origin {
	o := &origin{}
	o.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Range") != "" {
			o.ranges.Add(1)
		}
		w.Header().Set("Etag", etag)
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(obj))
	}))
	t.Cleanup(o.srv.Close)
	return o
}

func (o *origin) fetch(ctx context.Context, key string, h http.Header) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, o.srv.URL+key, nil)
	if err != nil {
		return nil, err
	}
	for k, v := range h {
		req.Header[k] = v
	}
	return http.DefaultClient.Do(req)
}

// loopChannel stands in for the native SSM join: a loopback socket whose
// address the in-test multicast sender learns.
type loopChannel struct {
	addr chan netip.AddrPort
}

func (l *loopChannel) listen(ch manifest.Channel, iface string) (nativeConn, error) {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	c.SetReadBuffer(4 << 20)
	l.addr <- c.LocalAddr().(*net.UDPAddr).AddrPort()
	return c, nil
}

// send sends pkts from src to the receiver's channel socket, pacing
// so the loopback socket's buffer does not overflow.
func send(t testing.TB, src string, to netip.AddrPort, pkts [][]byte) {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(src)})
	if err != nil {
		t.Error(err)
		return
	}
	defer c.Close()
	for i, p := range pkts {
		if _, err := c.WriteToUDPAddrPort(p, to); err != nil {
			t.Error(err)
			return
		}
		if i%16 == 15 {
			time.Sleep(time.Millisecond)
		}
	}
}

type fixture struct {
	s      *sender
	beacon *identity.Keypair
	castd  *castdSim
	origin *origin
	ch     *loopChannel
	r      *Receiver
	logs   *lockedWriter
}

func newFixture(t *testing.T, size, repairs int, mode Mode, tweak func(*Options)) *fixture {
	t.Helper()
	f := &fixture{beacon: key(t, 2), ch: &loopChannel{addr: make(chan netip.AddrPort, 4)}, logs: &lockedWriter{w: &bytes.Buffer{}}}
	cast := key(t, 1)
	f.s = newSender(t, testObject(size), "/video/a.mp4", 1, cast)
	f.castd = newCastd(t, f.s, f.beacon, repairs)
	f.origin = newOrigin(t, f.s.obj)
	opts := Options{
		Mode: mode, Key: f.beacon, CastKey: func() (identity.PublicKey, bool) { return cast.Public(), true },
		Fetch: f.origin.fetch, Logger: slog.New(slog.NewTextHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		NackGap: 50 * time.Millisecond, Stall: 600 * time.Millisecond, NativeWait: 200 * time.Millisecond,
		ListenNative: f.ch.listen,
	}
	if tweak != nil {
		tweak(&opts)
	}
	r, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	f.r = r
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("receiver log:\n%s", f.logs.String())
		}
	})
	return f
}

type lockedWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.String()
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

// take runs an offer through the receiver and reads the whole body.
func (f *fixture) take(t *testing.T) ([]byte, http.Header) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := f.r.Take(ctx, f.s.m.URL, f.s.offer(f.castd.addr()))
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("body after %d bytes: %v", len(body), err)
	}
	if resp.ContentLength != int64(len(f.s.obj)) {
		t.Errorf("Content-Length %d, want %d", resp.ContentLength, len(f.s.obj))
	}
	return body, resp.Header
}

func sameBytes(t *testing.T, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		t.Fatalf("object differs: %d bytes (sha256 %x), want %d (%x)", len(got), sha256.Sum256(got), len(want), sha256.Sum256(want))
	}
}

// waitIdle waits for the object's bookkeeping to finish.
func waitIdle(t *testing.T, r *Receiver) Stats {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		st := r.Stats()
		if st.Active == 0 {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("still %d objects active", st.Active)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestNoMulticast: nothing arrives on the channel at all. Early media, a
// few repairs, then the HTTP fallback deliver the object.
func TestNoMulticast(t *testing.T) {
	f := newFixture(t, 14*blkLen*symLen-333, 1, Native, func(o *Options) { o.Stall = 1500 * time.Millisecond })
	body, hdr := f.take(t)
	sameBytes(t, body, f.s.obj)
	st := waitIdle(t, f.r)
	if st.Bytes[labelMulticast] != 0 || st.Bytes[labelEarly] == 0 || st.Bytes[labelRepair] == 0 || st.Bytes[labelFallback] == 0 {
		t.Errorf("bytes by path %v: want early, repair and fallback, no multicast", st.Bytes)
	}
	if f.origin.ranges.Load() == 0 || st.Objects["fallback"] != 1 {
		t.Errorf("%d range requests, outcomes %v", f.origin.ranges.Load(), st.Objects)
	}
	for k, want := range map[string]string{"Content-Type": "video/mp4", "Etag": etag, "Last-Modified": f.s.m.LastModified.UTC().Format(http.TimeFormat)} {
		if got := hdr.Get(k); got != want {
			t.Errorf("%s %q, want %q", k, got, want)
		}
	}
	if cc := hdr.Get("Cache-Control"); !strings.HasPrefix(cc, "max-age=") {
		t.Errorf("Cache-Control %q", cc)
	}
	f.castd.waitLeave(t, mcproto.LeaveFallback)
}

// TestLossAndForgery: the channel loses 10% of the packets; an attacker
// sends forged packets (right header, wrong bytes) spoofing the source,
// and packets from another source. Repairs cover the loss; the forgeries
// are rejected and counted; the object is byte-identical.
func TestLossAndForgery(t *testing.T) {
	f := newFixture(t, 12*blkLen*symLen-100, 1000, Native, nil)
	go func() {
		to := <-f.ch.addr
		rng := rand.New(rand.NewPCG(1, 2))
		var pkts, forged, wrongSrc [][]byte
		for sbn := range f.s.part.N {
			for _, p := range f.s.block(sbn) {
				// forge first, so a forgery races the genuine symbol
				if rng.IntN(4) == 0 {
					bad := bytes.Clone(p)
					bad[len(bad)-1] ^= 0x5a
					forged = append(forged, bad)
					pkts = append(pkts, bad)
					wrongSrc = append(wrongSrc, p)
				}
				if rng.IntN(10) != 0 {
					pkts = append(pkts, p)
				}
			}
		}
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); send(t, "127.0.0.2", to, pkts) }()
		go func() { defer wg.Done(); send(t, "127.0.0.3", to, wrongSrc) }()
		wg.Wait()
	}()
	body, _ := f.take(t)
	sameBytes(t, body, f.s.obj)
	st := waitIdle(t, f.r)
	if st.Bytes[labelMulticast] == 0 || st.Bytes[labelRepair] == 0 {
		t.Errorf("bytes by path %v: want multicast and repair", st.Bytes)
	}
	if st.Rejected["source"] == 0 {
		t.Errorf("no packet from the wrong source counted: %v", st.Rejected)
	}
	if st.Rejected["digest"]+st.Rejected["hashpart"] == 0 {
		t.Errorf("no forged packet rejected: %v", st.Rejected)
	}
	if st.Objects["multicast"] != 1 || st.Nacks == 0 {
		t.Errorf("outcomes %v, %d NACKs", st.Objects, st.Nacks)
	}
	f.castd.waitLeave(t, mcproto.LeaveDone)

	reg := metrics.NewRegistry()
	f.r.RegisterMetrics(reg, "beacon_multicast")
	var out strings.Builder
	reg.WriteTo(&out)
	for _, want := range []string{
		`beacon_multicast_bytes_total{path="multicast"} ` + strconv.FormatUint(st.Bytes[labelMulticast], 10),
		`beacon_multicast_packets_rejected_total{reason="source"} `,
		`beacon_multicast_packets_rejected_total{reason="digest"} `,
		`beacon_multicast_offers_total{result="taken"} 1`,
		`beacon_multicast_objects_total{outcome="multicast"} 1`,
		`beacon_multicast_channels{via="native"} 0`,
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("metrics lack %q:\n%s", want, out.String())
		}
	}
}

// TestStatusEnded: castd answers the NACKs with Status Ended: the receiver
// falls back to HTTP at once, not after the stall.
func TestStatusEnded(t *testing.T) {
	f := newFixture(t, 6*blkLen*symLen, 0, Native, func(o *Options) { o.Stall = time.Minute })
	f.castd.status.Store(uint32(mcproto.StatusEnded))
	start := time.Now()
	body, _ := f.take(t)
	sameBytes(t, body, f.s.obj)
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("took %s: Status Ended did not end the wait", d)
	}
	if st := waitIdle(t, f.r); st.Objects["fallback"] != 1 {
		t.Errorf("outcomes %v", st.Objects)
	}
}

// resign re-encodes a manifest changed by fn, keeping the old signature
// unless cast is given.
func manifestPacket(t *testing.T, m *manifest.Manifest) []byte {
	p, err := m.Packet()
	if err != nil {
		t.Fatal(err)
	}
	b, err := p.AppendTo(nil)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestOfferRefused: manifests that must not be used are refused with a
// clear reason, counted, and nothing is joined.
func TestOfferRefused(t *testing.T) {
	f := newFixture(t, 3*blkLen*symLen, 0, Native, nil)
	tampered := *f.s.m
	tampered.ContentLength-- // a changed field: the signature no longer matches
	otherKey := *f.s.m
	otherKey.Sign(key(t, 9))
	wrongURL := *f.s.m
	wrongURL.URL = "/other"
	wrongURL.Sign(f.s.cast)
	newer := *f.s.m
	newer.Sequence = 5
	newer.Sign(f.s.cast)
	expired := *f.s.m
	expired.URL, expired.Issued, expired.Expires = "/exp", time.Now().Add(-time.Hour).Truncate(time.Second), time.Now().Add(-time.Minute)
	expired.Sign(f.s.cast)
	ctx := context.Background()
	for _, tc := range []struct {
		name, key, result string
		m                 *manifest.Manifest
		raw               []byte
	}{
		{"tampered", f.s.m.URL, "bad_signature", &tampered, nil},
		{"signed by another key", f.s.m.URL, "bad_signature", &otherKey, nil},
		{"another object's manifest", f.s.m.URL, "wrong_object", &wrongURL, nil},
		{"newer first", f.s.m.URL, "", &newer, nil},
		{"replayed older", f.s.m.URL, "replay", f.s.m, nil},
		{"expired", "/exp", "expired", &expired, nil},
		{"garbage", f.s.m.URL, "malformed", nil, []byte{0x10, 0, 0, 0}},
	} {
		raw := tc.raw
		if tc.m != nil {
			raw = manifestPacket(t, tc.m)
		}
		resp, err := f.r.Take(ctx, tc.key, offerResponse(t, raw, f.castd.addr()))
		if tc.result == "" {
			if err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			resp.Body.Close()
			continue
		}
		if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), tc.result) {
			t.Errorf("%s: err %v, want a refusal for %s", tc.name, err, tc.result)
		}
	}
	waitIdle(t, f.r)
	st := f.r.Stats()
	for res, n := range map[string]uint64{"bad_signature": 2, "wrong_object": 1, "replay": 1, "expired": 1, "malformed": 1, "taken": 1} {
		if st.Offers[res] != n {
			t.Errorf("offers %s = %d, want %d (%v)", res, st.Offers[res], n, st.Offers)
		}
	}
	if !strings.Contains(f.logs.String(), "not signed by the pinned CAST key") {
		t.Error("no clear log line for the bad signature")
	}
}

// TestAMTWhenNativeSilent: in auto mode, a channel silent natively is
// joined through the AMT gateway too, and its packets complete the object.
func TestAMTWhenNativeSilent(t *testing.T) {
	gw := &fakeGateway{}
	f := newFixture(t, 4*blkLen*symLen, 0, Auto, func(o *Options) { o.Gateway = gw; o.Stall = 5 * time.Second })
	go func() {
		<-f.ch.addr // native joined; never sends
		gw.waitJoined(t)
		ch := f.s.m.Channel
		for sbn := range f.s.part.N {
			for _, p := range f.s.block(sbn) {
				gw.deliver(ch.Source, ch.Group, ch.Port, p)
			}
		}
		// a datagram claiming the channel from another source
		gw.deliver(netip.MustParseAddr("127.0.0.9"), ch.Group, ch.Port, f.s.data(0, 0))
	}()
	body, _ := f.take(t)
	sameBytes(t, body, f.s.obj)
	st := waitIdle(t, f.r)
	if st.Joins["amt"] != 1 || st.Joins["native"] != 1 || st.Bytes[labelFallback] != 0 {
		t.Errorf("joins %v, bytes %v", st.Joins, st.Bytes)
	}
	if st.ChannelsAMT != 0 || st.ChannelsNative != 0 || gw.left.Load() != 1 {
		t.Errorf("channels still joined: %d AMT, %d native; gateway leaves %d", st.ChannelsAMT, st.ChannelsNative, gw.left.Load())
	}
}

// fakeGateway stands in for amtgw.Gateway inside this package's tests
// (the gateway's own tests run it against a real relay).
type fakeGateway struct {
	mu     sync.Mutex
	joined []netip.Addr
	fn     func(ch amt.Channel, d amt.Datagram)
	left   atomic.Int64
}

func (g *fakeGateway) waitJoined(t testing.TB) {
	for range 500 {
		g.mu.Lock()
		ok := g.fn != nil
		g.mu.Unlock()
		if ok {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Error("never joined through AMT")
}

func (g *fakeGateway) deliver(src, grp netip.Addr, port uint16, b []byte) {
	g.mu.Lock()
	fn := g.fn
	g.mu.Unlock()
	fn(amt.Channel{Source: src, Group: grp}, amt.Datagram{Src: src, Dst: grp, SrcPort: 9, DstPort: port, Payload: b})
}

func TestParseMode(t *testing.T) {
	for _, s := range []string{"auto", "native", "amt", "off"} {
		m, err := ParseMode(s)
		if err != nil || m.String() != s {
			t.Errorf("%s: %v %v", s, m, err)
		}
	}
	if _, err := ParseMode("yes"); err == nil {
		t.Error("yes accepted")
	}
}

func FuzzParseContentRange(f *testing.F) {
	for _, s := range []string{"bytes 0-99/100", "bytes */100", "bytes 5-/7", "", "bytes 18446744073709551615-1/2", "bytes 01-/0", "bytes 0-0/1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		start, end, total, ok := parseContentRange(s)
		if !ok {
			return
		}
		if want := fmt.Sprintf("bytes %d-%d/%d", start, end, total); s != want || start > end || end >= total {
			t.Fatalf("%q accepted as %q", s, want)
		}
	})
}

func TestMain(m *testing.M) { os.Exit(m.Run()) }

func (g *fakeGateway) Join(ch amt.Channel, relay netip.AddrPort, reemit bool) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.joined = append(g.joined, ch.Group)
	return nil
}

func (g *fakeGateway) Leave(ch amt.Channel) error { g.left.Add(1); return nil }

func (g *fakeGateway) Joined() []amt.Channel { return nil }

func (g *fakeGateway) Subscribe(fn func(ch amt.Channel, d amt.Datagram)) func() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.fn = fn
	return func() {}
}

// TestFallbackRefusesWrongRanges: answers to the fallback's range request
// that are not the bytes asked for (the whole object, another range,
// another length, a short body) fail the object rather than putting bytes
// at the wrong place; the cache's fill then aborts and stores nothing.
func TestFallbackRefusesWrongRanges(t *testing.T) {
	for name, serve := range map[string]func(w http.ResponseWriter, obj []byte, start, end int){
		"full object": func(w http.ResponseWriter, obj []byte, start, end int) { w.Write(obj) },
		"other start": func(w http.ResponseWriter, obj []byte, start, end int) {
			w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start+1, end, len(obj)))
			w.WriteHeader(http.StatusPartialContent)
			w.Write(obj[start+1 : end+1])
		},
		"other total": func(w http.ResponseWriter, obj []byte, start, end int) {
			w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, end, len(obj)+1))
			w.WriteHeader(http.StatusPartialContent)
			w.Write(obj[start : end+1])
		},
		"short body": func(w http.ResponseWriter, obj []byte, start, end int) {
			w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, end, len(obj)))
			w.WriteHeader(http.StatusPartialContent)
			w.Write(obj[start : start+10])
		},
	} {
		t.Run(name, func(t *testing.T) {
			var f *fixture
			f = newFixture(t, 3*blkLen*symLen, 0, Native, func(o *Options) {
				o.Stall = 200 * time.Millisecond
				o.EarlyBlocks = 1
				o.Fetch = func(ctx context.Context, key string, h http.Header) (*http.Response, error) {
					var start, end int
					fmt.Sscanf(h.Get("Range"), "bytes=%d-%d", &start, &end)
					rec := httptest.NewRecorder()
					serve(rec, f.s.obj, start, end)
					return rec.Result(), nil
				}
			})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			resp, err := f.r.Take(ctx, f.s.m.URL, f.s.offer(f.castd.addr()))
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			if err == nil || len(body) >= len(f.s.obj) {
				t.Fatalf("read %d bytes, err %v: want a failed body", len(body), err)
			}
			if !bytes.Equal(body, f.s.obj[:len(body)]) {
				t.Fatal("bytes served differ from the object")
			}
			if st := waitIdle(t, f.r); st.Objects["failed"] != 1 {
				t.Errorf("outcomes %v", st.Objects)
			}
		})
	}
}

// TestUnicastRedial: castd drops the DTLS session after the first Join;
// the receiver dials again, joins again (no early blocks the second time)
// and completes by repairs, with nothing on the channel.
func TestUnicastRedial(t *testing.T) {
	f := newFixture(t, 4*blkLen*symLen, 1000, Native, func(o *Options) { o.Stall = 3 * time.Second })
	f.castd.dropFirst.Store(true)
	body, _ := f.take(t)
	sameBytes(t, body, f.s.obj)
	st := waitIdle(t, f.r)
	if f.castd.joins.Load() < 2 || st.Bytes[labelRepair] == 0 || st.Objects["multicast"] != 1 {
		t.Errorf("%d joins, bytes %v, outcomes %v", f.castd.joins.Load(), st.Bytes, st.Objects)
	}
}

// TestReaderNeverReads: the body is never read and the context ends: the
// reception ends too, its slot comes back, and nothing blocks.
func TestReaderNeverReads(t *testing.T) {
	f := newFixture(t, 6*blkLen*symLen, 1000, Native, func(o *Options) { o.MaxBuffered = symLen; o.MaxObjects = 1 })
	ctx, cancel := context.WithCancel(context.Background())
	resp, err := f.r.Take(ctx, f.s.m.URL, f.s.offer(f.castd.addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	time.Sleep(300 * time.Millisecond) // early blocks fill the pipe, then the writer blocks
	cancel()
	if st := waitIdle(t, f.r); st.Objects["failed"] != 1 {
		t.Errorf("outcomes %v", st.Objects)
	}
	select {
	case f.r.slots <- struct{}{}:
		<-f.r.slots
	default:
		t.Error("the object's slot was not given back")
	}
}
