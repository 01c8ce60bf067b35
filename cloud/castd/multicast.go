package castd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/blockcast/beacon/cloud/channels"
	"github.com/blockcast/beacon/cloud/mcsend"
	"github.com/blockcast/beacon/cloud/popularity"
	"github.com/blockcast/beacon/shared/dtlschan"
	"github.com/blockcast/beacon/shared/httpcache"
	"github.com/blockcast/beacon/shared/mcproto"
	"github.com/blockcast/beacon/shared/objstore"
	"github.com/blockcast/beacon/shared/protocol"
)

// Why a multicast-capable beacon's miss was answered by unicast after all
// (castd_multicast_fallbacks_total{reason}).
const (
	fallbackOrigin   = "origin"   // the object could not be stored whole and fresh (not storable, origin failing)
	fallbackChannel  = "channel"  // no free channel, or another sender holds the object's
	fallbackSender   = "sender"   // the sender refused the object or failed to start a session
	fallbackCanceled = "canceled" // the beacon went away while castd prepared the session
	fallbackEncode   = "encode"   // the offer did not encode (a manifest packet too large)
	fallbackBusy     = "busy"     // maxSessionStarts sessions were being built already
)

var fallbackReasons = []string{fallbackOrigin, fallbackChannel, fallbackSender, fallbackCanceled, fallbackEncode, fallbackBusy}

// maxSessionStarts bounds the sessions being built at once. Building one
// reads the whole object, hashes every symbol and makes every block's
// parity: CPU that a registered node asking for many new objects under a
// --multicast-path pattern at once could otherwise multiply. A miss that
// finds every slot taken is served by unicast, which costs castd a sendfile.
const maxSessionStarts = 2

// multicast is castd's multicast object transport: it decides which misses
// get an offer, starts sessions on the sender, and runs the DTLS channel.
type multicast struct {
	log    *slog.Logger
	pop    popularity.Counter
	pool   *channels.Pool
	sender *mcsend.Sender
	// unicast is the DTLS address put in offers; set by Serve once the
	// channel listens.
	unicast atomic.Pointer[string]
	amtAddr func() string // the AMT relay's public address, "" without one
	dtls    atomic.Pointer[dtlschan.Server]

	offers      atomic.Uint64
	offerBytes  atomic.Uint64 // object bytes handed to beacons by offer (what unicast would have cost)
	fallbacks   [6]atomic.Uint64
	unfit       unfitKeys // objects the origin would not let castd store: not offered for a while
	buildMu     sync.Mutex
	building    map[string]int // keys whose session is being built → requests waiting on it (at most maxSessionStarts keys)
	fallbackLog summaryLog
	native      *mcsend.UDPSink // nil without --multicast-iface
	bodies      sync.WaitGroup  // goroutines releasing sessions' pinned bodies
}

// sessionBody is the pinned object a session reads; used tells whether
// the session Offer returned was started with it (Build reads it all) or
// was already running with another.
type sessionBody struct {
	*objstore.Pinned
	used atomic.Bool
}

func (b *sessionBody) ReadAt(p []byte, off int64) (int, error) {
	b.used.Store(true)
	return b.Pinned.ReadAt(p, off)
}

// startBuild counts a request that may build key's session; false when
// maxSessionStarts other keys are being built. Requests for a key already
// being built wait for that build (in the sender) and take no slot.
func (m *multicast) startBuild(key string) bool {
	m.buildMu.Lock()
	defer m.buildMu.Unlock()
	if m.building[key] == 0 && len(m.building) >= maxSessionStarts {
		return false
	}
	m.building[key]++
	return true
}

func (m *multicast) endBuild(key string) {
	m.buildMu.Lock()
	defer m.buildMu.Unlock()
	if m.building[key]--; m.building[key] <= 0 {
		delete(m.building, key)
	}
}

// keepBody releases body when the session it started ends, or now when it
// started none.
func (m *multicast) keepBody(sess *mcsend.Session, err error, body *sessionBody) {
	if err != nil || !body.used.Load() {
		body.Close()
		return
	}
	m.bodies.Add(1)
	go func() {
		defer m.bodies.Done()
		<-sess.Done()
		body.Close()
	}()
}

// newMulticast builds the transport from opts; nil when multicast is off.
func (s *Server) newMulticast() (*multicast, error) {
	o := &s.opts
	if !o.Multicast {
		return nil, nil
	}
	var patterns []string
	patterns = append(patterns, o.MulticastPaths...)
	threshold := max(o.MulticastThreshold, 0)
	pop, err := popularity.New(popularity.Options{Threshold: threshold, Window: o.MulticastWindow, Paths: patterns})
	if err != nil {
		return nil, fmt.Errorf("castd: multicast popularity: %w", err)
	}
	ranges, err := channels.ParseRanges(o.MulticastRanges)
	if err != nil {
		return nil, fieldError("MulticastRanges", err)
	}
	sources := o.MulticastSources
	var native *mcsend.UDPSink
	if o.MulticastIface != "" {
		// The channels' source is the address the sink sends from.
		if native, err = mcsend.NativeSink(o.MulticastIface, 0); err != nil {
			return nil, fieldError("MulticastIface", err)
		}
		sources = native.Sources()
	}
	closeNative := func() {
		if native != nil {
			native.Close()
		}
	}
	pool, err := channels.New(channels.Options{Ranges: ranges, Sources: sources})
	if err != nil {
		closeNative()
		return nil, fmt.Errorf("castd: multicast channels: %w", err)
	}
	shaper, err := channels.NewShaper(noCap(o.MulticastRate), noCap(o.MulticastRateTotal), 0, time.Now())
	if err != nil {
		closeNative()
		return nil, fmt.Errorf("castd: multicast rate: %w", err)
	}
	m := &multicast{log: s.log.With("component", "multicast"), pop: pop, pool: pool, amtAddr: s.amtRelayPublic,
		building: map[string]int{}}
	var amtSink mcsend.Sink
	if o.AMTListen != "" {
		amtSink = mcsend.AMTSink(s.injectAMT)
	}
	if native == nil && amtSink == nil {
		return nil, fieldError("MulticastIface", errors.New("is required without the AMT relay (AMTListen): multicast needs somewhere to send"))
	}
	opts := mcsend.Options{Key: s.key, Alloc: pool, Shaper: shaper, AMT: amtSink, Log: m.log}
	if native != nil {
		opts.Native, m.native = native, native // a nil *UDPSink in the interface would not be "none"
	}
	if m.sender, err = mcsend.New(opts); err != nil {
		closeNative()
		return nil, fmt.Errorf("castd: multicast sender: %w", err)
	}
	return m, nil
}

// noCap maps Options' "negative: no cap" to the channels package's 0.
func noCap(rate float64) float64 { return max(rate, 0) }

// injectAMT hands an inner multicast datagram to castd's own AMT relay.
func (s *Server) injectAMT(inner []byte) error {
	r := s.amtRelay
	if r == nil {
		return errors.New("castd: the AMT relay is not running")
	}
	return r.Inject(inner)
}

// amtRelayPublic is the AMT relay address told to beacons in offers.
func (s *Server) amtRelayPublic() string {
	r := s.amtRelay
	if r == nil {
		return ""
	}
	ap, err := netip.ParseAddrPort(r.Addr().String())
	if err != nil {
		return ""
	}
	if s.opts.AMTAdvertise.IsValid() {
		return netip.AddrPortFrom(s.opts.AMTAdvertise, ap.Port()).String()
	}
	if ap.Addr().IsUnspecified() {
		// Beacons reach the relay at castd's own host; without an
		// advertised address only DRIAD or the beacon's flag names it.
		return ""
	}
	return ap.String()
}

// wantsOffer reports whether a node's object request may be answered with
// an offer: an unconditional GET of the whole object (a miss) from a beacon
// that said it takes one. A conditional GET is a revalidation of a copy the
// beacon holds: its answer is a 304 or the new body, never the whole object
// again by multicast, and it is not a miss to count.
func wantsOffer(r *http.Request) bool {
	if r.Method != http.MethodGet || r.Header.Get(protocol.HeaderMulticast) != "1" {
		return false
	}
	for _, h := range []string{"Range", "If-Range", "If-None-Match", "If-Modified-Since", "If-Match", "If-Unmodified-Since"} {
		if _, ok := r.Header[h]; ok {
			return false
		}
	}
	return true
}

// offer answers a registered node's request for key with a multicast offer
// when the object runs or is to run on a channel; it reports whether it
// answered. Anything that fails on the way is counted, logged (at most one
// line per summaryEvery) and left to the unicast path.
func (m *multicast) offer(w http.ResponseWriter, r *http.Request, cache *httpcache.Cache, node, key string) bool {
	if !wantsOffer(r) {
		return false
	}
	now := time.Now()
	if _, running := m.pool.Lookup(key, now); !running {
		if d := m.pop.Decide(key, node, now); !d.Multicast {
			return false
		}
	}
	if _, running := m.sender.Lookup(key); !running {
		if m.unfit.has(key, now) {
			return false
		}
		if !m.startBuild(key) {
			m.fallback(fallbackBusy, key, errors.New("too many sessions being built"))
			return false
		}
		defer m.endBuild(key)
	}
	obj, expires, err := cache.Open(r.Context(), key)
	if err != nil {
		reason := fallbackOrigin
		switch {
		case r.Context().Err() != nil:
			reason = fallbackCanceled
		case errors.Is(err, httpcache.ErrNotStorable):
			// Open's fetch was not kept, so the unicast answer asks the
			// origin again: once, not on every miss of the key.
			m.unfit.add(key, now)
		}
		m.fallback(reason, key, err)
		return false
	}
	// The session reads the object for as long as it runs: pin this
	// version, so that a purge, a newer fill or eviction does not pull the
	// file from under it.
	pinned, err := obj.Pin()
	if err != nil {
		m.fallback(fallbackOrigin, key, err)
		return false
	}
	body := &sessionBody{Pinned: pinned}
	hdr := obj.Meta.Header
	mo := mcsend.Object{
		Key:         key,
		URL:         key,
		R:           body,
		Size:        obj.Meta.Size,
		ContentType: hdr.Get("Content-Type"),
		ETag:        hdr.Get("Etag"),
		Expires:     expires,
	}
	if lm, err := http.ParseTime(hdr.Get("Last-Modified")); err == nil {
		mo.LastModified = lm
	}
	sess, err := m.sender.Offer(r.Context(), mo)
	m.keepBody(sess, err, body)
	if err != nil {
		reason := fallbackSender
		switch {
		case r.Context().Err() != nil:
			reason = fallbackCanceled
		case errors.Is(err, channels.ErrExhausted), errors.Is(err, mcsend.ErrHeldElsewhere):
			reason = fallbackChannel
		}
		m.fallback(reason, key, err)
		return false
	}
	unicast := ""
	if p := m.unicast.Load(); p != nil {
		unicast = *p
	}
	doc, err := mcproto.EncodeOffer(&mcproto.Offer{
		Version:  mcproto.OfferVersion,
		Manifest: sess.ManifestPacket(),
		AMTRelay: m.amtAddr(),
		Unicast:  unicast,
	})
	if err != nil {
		m.fallback(fallbackEncode, key, err)
		return false
	}
	m.offers.Add(1)
	m.offerBytes.Add(uint64(obj.Meta.Size))
	h := w.Header()
	h.Set("Content-Type", mcproto.OfferType)
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Length", strconv.Itoa(len(doc)))
	w.WriteHeader(http.StatusOK)
	w.Write(doc)
	m.log.Debug("multicast offer", "key", key, "node", node, "size", obj.Meta.Size)
	return true
}

// fallback counts and (rate-limited) logs a miss answered by unicast
// although the object was to go by multicast.
func (m *multicast) fallback(reason, key string, err error) {
	for i, r := range fallbackReasons {
		if r == reason {
			m.fallbacks[i].Add(1)
		}
	}
	if n, ok := m.fallbackLog.due(time.Now()); ok {
		m.log.Warn("multicast offer failed; serving by unicast", "reason", reason, "key", truncate(key, 200), "err", err, "fallbacks", n)
	}
}

// startMulticast opens the DTLS channel and serves it with the sender until
// ctx ends; the returned channel closes when everything has stopped.
func (s *Server) startMulticast(ctx context.Context) (<-chan struct{}, error) {
	done := make(chan struct{})
	m := s.mc
	if m == nil {
		close(done)
		return done, nil
	}
	lc := dtlschan.ListenConfig{SendRate: noCap(s.opts.RepairRate)}
	srv, err := lc.Listen(ctx, s.opts.DTLSListen, s.key, s.router.Has, s.log.With("component", "dtls"))
	if err != nil {
		close(done)
		m.sender.Close()
		return done, fmt.Errorf("castd: DTLS channel: %w", err)
	}
	m.dtls.Store(srv)
	public := s.opts.DTLSPublic
	if public == "" {
		public = srv.Addr().String()
	}
	m.unicast.Store(&public)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := m.sender.Serve(ctx, srv); err != nil && ctx.Err() == nil {
			s.log.Error("multicast repair service stopped", "err", err)
		}
	}()
	go func() {
		defer close(done)
		<-ctx.Done()
		srv.Close()
		wg.Wait()
		m.sender.Close()
		m.bodies.Wait()
		if m.native != nil {
			m.native.Close()
		}
	}()
	if s.amtRelay != nil && s.amtRelayPublic() == "" {
		s.log.Warn("multicast offers name no AMT relay: the relay listens on a wildcard address; set --amt-advertise so that tunnelled beacons join castd's own relay")
	}
	s.log.Info("multicast on", "dtls", srv.Addr().String(), "dtls_public", public, "native_iface", s.opts.MulticastIface,
		"amt_relay", s.amtRelayPublic(), "threshold", s.opts.MulticastThreshold, "window", s.opts.MulticastWindow,
		"paths", len(s.opts.MulticastPaths))
	return done, nil
}

// forgetNode ends a node's DTLS session when it leaves the registry: the
// handshake checked registration only once, and a deleted node must not keep
// early media and repairs (nor its state in the repair service).
func (m *multicast) forgetNode(id string) {
	if m == nil {
		return
	}
	if srv := m.dtls.Load(); srv != nil {
		if sess, ok := srv.Session(id); ok {
			sess.Close()
			m.log.Info("closed the removed node's DTLS session", "id", truncate(id, 64))
		}
	}
	m.sender.Forget(id)
}

// unfitFor is how long an object the origin would not let castd store is
// served by unicast without trying multicast again.
const unfitFor = time.Minute

// maxUnfit bounds the keys remembered; when full the list starts afresh
// (a key forgotten early only costs one more origin request).
const maxUnfit = 4096

// unfitKeys remembers objects whose origin answer castd may not store
// (no-store, private, not 200, no freshness): each multicast try of one
// costs an extra origin request, since the answer that was not kept must
// be fetched again for the unicast reply.
type unfitKeys struct {
	mu   sync.Mutex
	keys map[string]time.Time // key → until
}

func (u *unfitKeys) add(key string, now time.Time) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.keys == nil || len(u.keys) >= maxUnfit {
		u.keys = map[string]time.Time{}
	}
	u.keys[key] = now.Add(unfitFor)
}

func (u *unfitKeys) has(key string, now time.Time) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	until, ok := u.keys[key]
	if ok && !now.Before(until) {
		delete(u.keys, key)
		return false
	}
	return ok
}
