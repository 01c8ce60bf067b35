// Package httpcache is the RFC 9111 shared HTTP cache that both tiers put in
// front of their upstream: the beacon's personal cache (upstream: castd) and
// castd's mid-tier cache (upstream: the origin). It serves GET and HEAD for
// content keys from an objstore.Store, revalidates stale objects, serves
// stale copies when the upstream fails (where allowed), answers conditional
// and single-range requests, and collapses concurrent misses for a key into
// one upstream fetch whose body every waiting client streams while it is
// written to the store.
//
// The hit path is kept cheap, since it is what a beacon mostly does: a small
// object comes from the store's RAM cache, a large one is handed to the
// http.ResponseWriter as a file, which net/http sends with sendfile(2)
// (TestHitUsesSendfile), and a hit logs nothing unless LevelTrace is enabled.
package httpcache

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/blockcast/beacon/shared/objstore"
	"github.com/blockcast/beacon/shared/protocol"
)

// ErrClosed is returned by Purge after Close.
var ErrClosed = errors.New("httpcache: closed")

// Defaults for Options.
const (
	DefaultFillTimeout  = 10 * time.Minute
	DefaultCloseTimeout = 30 * time.Second
)

// Options configures a Cache.
type Options struct {
	Store    *objstore.Store  // required; the caller opens and closes it
	Upstream Upstream         // required
	Logger   *slog.Logger     // nil means slog.Default()
	Now      func() time.Time // nil means time.Now
	// FillTimeout bounds one upstream fetch including its whole body; 0
	// means DefaultFillTimeout.
	FillTimeout time.Duration
	// CloseTimeout is how long Close lets fills in flight finish before it
	// aborts them; 0 means DefaultCloseTimeout.
	CloseTimeout time.Duration
}

// Stats are the cache's counters. Hits are responses served from a stored
// object (X-Cache: HIT), including revalidated and stale ones; Misses are
// all other answers to valid requests (X-Cache: MISS). Objects and Bytes come
// from the store.
type Stats struct {
	Hits           int64
	Misses         int64
	Revalidated    int64 // upstream answered 304 to a revalidation
	StaleServed    int64 // stale copies served (upstream failing, or client max-stale)
	BytesServed    int64 // body bytes written to clients
	UpstreamBytes  int64 // body bytes read from the upstream
	UpstreamErrors int64 // transport errors, 5xx and bodies cut midway
	// PassedOn counts responses the store gave up on while they streamed
	// (file system full, object too large) whose rest came from the
	// upstream uncached.
	PassedOn int64
	Objects  int64
	Bytes    int64
	// StoreFullSince is when the store's file system last refused a
	// write, while that lasts (see objstore.Stats.FullSince).
	StoreFullSince time.Time `json:",omitzero"`
}

// Cache is an http.Handler serving content keys through the store.
type Cache struct {
	store        *objstore.Store
	up           Upstream
	log          *slog.Logger
	now          func() time.Time
	fillTimeout  time.Duration
	closeTimeout time.Duration

	ctx    context.Context // parent of every fill; cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // fill goroutines

	mu      sync.Mutex
	flights map[string]*flight
	closed  bool

	hits, misses, revalidated, staleServed     atomic.Int64
	passedOn                                   atomic.Int64 // fills the store gave up on, finished from the upstream
	bytesServed, upstreamBytes, upstreamErrors atomic.Int64
}

// ensureDefaults gives every zero field its default.
func (o *Options) ensureDefaults() {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.FillTimeout == 0 {
		o.FillTimeout = DefaultFillTimeout
	}
	if o.CloseTimeout == 0 {
		o.CloseTimeout = DefaultCloseTimeout
	}
}

// check validates the options after ensureDefaults.
func (o *Options) check() error {
	switch {
	case o.Store == nil:
		return errors.New("httpcache: Options.Store is required")
	case o.Upstream == nil:
		return errors.New("httpcache: Options.Upstream is required")
	case o.FillTimeout < 0:
		return errors.New("httpcache: Options.FillTimeout must not be negative")
	case o.CloseTimeout < 0:
		return errors.New("httpcache: Options.CloseTimeout must not be negative")
	}
	return nil
}

// New returns a Cache.
func New(opts Options) (*Cache, error) {
	opts.ensureDefaults()
	if err := opts.check(); err != nil {
		return nil, err
	}
	c := &Cache{
		store:        opts.Store,
		up:           opts.Upstream,
		log:          opts.Logger,
		now:          opts.Now,
		fillTimeout:  opts.FillTimeout,
		closeTimeout: opts.CloseTimeout,
		flights:      make(map[string]*flight),
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	return c, nil
}

// Stats returns a snapshot of the counters.
func (c *Cache) Stats() Stats {
	ss := c.store.Stats()
	return Stats{
		Hits:           c.hits.Load(),
		Misses:         c.misses.Load(),
		Revalidated:    c.revalidated.Load(),
		StaleServed:    c.staleServed.Load(),
		BytesServed:    c.bytesServed.Load(),
		UpstreamBytes:  c.upstreamBytes.Load(),
		UpstreamErrors: c.upstreamErrors.Load(),
		PassedOn:       c.passedOn.Load(),
		Objects:        ss.Objects,
		Bytes:          ss.Bytes,
		StoreFullSince: ss.FullSince,
	}
}

// Purge deletes every stored object whose key starts with prefix (a content
// path; "/" means everything) and makes fills in flight under it discard
// what they fetched. It returns how many objects were deleted.
func (c *Cache) Purge(prefix string) (int, error) {
	if _, err := protocol.CleanContentPath(prefix); err != nil {
		return 0, fmt.Errorf("httpcache: purge %q: %w", prefix, err)
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return 0, ErrClosed
	}
	var hit []*flight
	for k, f := range c.flights {
		if strings.HasPrefix(k, prefix) {
			hit = append(hit, f)
			delete(c.flights, k) // later requests fetch afresh
		}
	}
	c.mu.Unlock()
	// Mark before deleting: a fill that committed before its mark is
	// removed by DeletePrefix, one that had not yet committed aborts.
	for _, f := range hit {
		f.commitMu.Lock()
		f.purged = true
		f.commitMu.Unlock()
	}
	n, err := c.store.DeletePrefix(prefix)
	if err != nil {
		return n, fmt.Errorf("httpcache: purge %q: %w", prefix, err)
	}
	c.log.Info("httpcache: purged", "prefix", prefix, "objects", n, "fills", len(hit))
	return n, nil
}

// Close stops new fills, waits up to CloseTimeout for fills in flight, then
// aborts the rest. It does not close the store. Requests that still arrive
// are served from the store or passed through from the upstream unstored.
// Close may be called more than once.
func (c *Cache) Close() error {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	done := make(chan struct{})
	go func() { c.wg.Wait(); close(done) }()
	t := time.NewTimer(c.closeTimeout)
	defer t.Stop()
	select {
	case <-done:
		c.cancel()
		return nil
	case <-t.C:
	}
	c.cancel()
	c.log.Warn("httpcache: close: aborting fills still running")
	t.Reset(5 * time.Second) // an aborted fill ends as soon as its upstream read fails
	select {
	case <-done:
		return nil
	case <-t.C:
		return errors.New("httpcache: close: fills did not stop")
	}
}

// ServeHTTP serves the content key r.URL.RequestURI().
func (c *Cache) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.ServeKey(w, r, r.URL.RequestURI())
}

var (
	hdrHit     = []string{"HIT"}
	hdrMiss    = []string{"MISS"}
	hdrBytes   = []string{"bytes"}
	hdrGetHead = []string{"GET, HEAD"}
)

// ServeKey serves the content key key (castd maps /v1/object/<key> here):
// from the store when fresh, else through a fill shared by every request for
// the key. A HEAD that misses fills the cache like a GET. The request's own
// header is never sent upstream.
func (c *Cache) ServeKey(w http.ResponseWriter, r *http.Request, key string) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		c.log.Debug("httpcache: method not allowed", "method", r.Method, "remote", r.RemoteAddr)
		w.Header()["Allow"] = hdrGetHead
		http.Error(w, "method not allowed: the cache serves GET and HEAD", http.StatusMethodNotAllowed)
		return
	}
	raw := key
	key, err := cleanKey(raw)
	if err != nil {
		c.log.Info("httpcache: bad request", "key", raw, "remote", r.RemoteAddr, "err", err)
		http.Error(w, "bad request: "+err.Error(), http.StatusBadRequest)
		return
	}
	now := c.now()
	req := requestCacheControl(r.Header)
	obj, err := c.store.Get(key)
	if err != nil {
		if !errors.Is(err, objstore.ErrNotFound) {
			c.log.Warn("httpcache: store read failed; fetching upstream", "key", key, "err", err)
		}
		obj = nil
	}
	if obj != nil && c.tryServeStored(w, r, obj, req, now) {
		return
	}
	switch {
	case req.has(ccOnlyIfCached):
		c.misses.Add(1)
		w.Header()["X-Cache"] = hdrMiss
		http.Error(w, "not cached (only-if-cached)", http.StatusGatewayTimeout)
		return
	case req.has(ccNoStore):
		// The client forbids storing what it gets: fetch for it alone.
		c.serveDirect(w, r, key)
		return
	}
	f, lead, obj := c.join(key, r, req)
	if f == nil {
		if obj != nil && c.tryServeStored(w, r, obj, req, c.now()) {
			return
		}
		// Closed, or the object we saw was replaced and is still unusable.
		c.serveDirect(w, r, key)
		return
	}
	c.serveFlight(w, r, key, f, lead)
}

// requestCacheControl parses the request's Cache-Control; a bare
// "Pragma: no-cache" counts as no-cache when there is none (RFC 9111 §5.4).
func requestCacheControl(h http.Header) cacheControl {
	cc := parseCacheControl(h["Cache-Control"])
	if len(h["Cache-Control"]) == 0 {
		for _, p := range h["Pragma"] {
			if strings.Contains(strings.ToLower(p), "no-cache") {
				cc.flags |= ccNoCache
			}
		}
	}
	return cc
}

// tryServeStored serves obj if the request may use it without contacting
// the upstream: fresh, or stale within the client's max-stale.
func (c *Cache) tryServeStored(w http.ResponseWriter, r *http.Request, obj *objstore.Object, req cacheControl, now time.Time) bool {
	m := &obj.Meta
	st := stateOf(m.Status, m.Header, m.RequestTime, m.ResponseTime, now)
	if st.fresh(req) {
		c.serveObject(w, r, obj, st.age)
		return true
	}
	if req.maxStale >= 0 && !st.cc.has(ccNoCache|ccMustRevalidate|ccProxyRevalidate) && st.cc.sMaxAge < 0 &&
		!req.has(ccNoCache) && req.maxAge != 0 &&
		st.age-st.lifetime <= time.Duration(min(req.maxStale, maxDelta))*time.Second {
		c.staleServed.Add(1)
		c.serveObject(w, r, obj, st.age)
		return true
	}
	return false
}

// serveObject serves a stored object as a HIT.
func (c *Cache) serveObject(w http.ResponseWriter, r *http.Request, obj *objstore.Object, age time.Duration) {
	c.hits.Add(1)
	m := &obj.Meta
	off, n, body := c.writeHead(w, r, m.Header, m.Size, age, hdrHit)
	var sent int64
	if body && n > 0 {
		var err error
		sent, err = obj.WriteRange(w, off, n)
		c.bytesServed.Add(sent)
		if err != nil {
			c.logRequest(r, m.Key, "HIT", sent, err)
			// Headers promised n bytes: break the connection rather than
			// end a short body that could look complete.
			panic(http.ErrAbortHandler)
		}
	}
	c.logRequest(r, m.Key, "HIT", sent, nil)
}

// writeHead evaluates conditionals and Range against a 200 representation
// with header hdr and body size (-1 when not known yet), writes the response
// head, and returns the body range to send. age < 0 leaves Age as received.
func (c *Cache) writeHead(w http.ResponseWriter, r *http.Request, hdr http.Header, size int64, age time.Duration, xcache []string) (off, n int64, body bool) {
	status, off, n := plan(r, hdr, size)
	h := w.Header()
	if status == http.StatusRequestedRangeNotSatisfiable {
		h["X-Cache"] = xcache
		h["Content-Range"] = []string{"bytes */" + strconv.FormatInt(size, 10)}
		h["Content-Length"] = []string{"0"}
		w.WriteHeader(status)
		return 0, 0, false
	}
	for k, v := range hdr {
		h[k] = v // stored slices are never mutated, only replaced
	}
	h["X-Cache"] = xcache
	vals := make([]string, 2) // Age and Content-Length, one allocation
	if age >= 0 {
		vals[0] = strconv.FormatInt(int64(age/time.Second), 10)
		h["Age"] = vals[0:1:1]
	}
	if status == http.StatusNotModified {
		delete(h, "Content-Type")
		delete(h, "Content-Length")
		delete(h, "Content-Encoding")
		w.WriteHeader(status)
		return 0, 0, false
	}
	if size >= 0 {
		h["Accept-Ranges"] = hdrBytes
		vals[1] = strconv.FormatInt(n, 10)
		h["Content-Length"] = vals[1:2:2]
	} else {
		delete(h, "Content-Length")
	}
	if status == http.StatusPartialContent {
		h["Content-Range"] = []string{"bytes " + strconv.FormatInt(off, 10) + "-" +
			strconv.FormatInt(off+n-1, 10) + "/" + strconv.FormatInt(size, 10)}
	}
	w.WriteHeader(status)
	return off, n, r.Method != http.MethodHead
}

// LevelTrace is the level of the line logged for each request served
// without error ("httpcache: served"); failures are logged at Debug. It is
// below Debug because on the hit path formatting and writing a line costs
// more than the hit itself.
const LevelTrace = slog.LevelDebug - 4

func (c *Cache) logRequest(r *http.Request, key, cache string, sent int64, err error) {
	level := LevelTrace
	if err != nil {
		level = slog.LevelDebug
	}
	if !c.log.Enabled(r.Context(), level) {
		return
	}
	c.log.LogAttrs(r.Context(), level, "httpcache: served",
		slog.String("method", r.Method), slog.String("key", key), slog.String("cache", cache),
		slog.Int64("bytes", sent), slog.Any("err", err))
}
