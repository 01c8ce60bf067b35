package httpcache

import (
	"bufio"
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
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/blockcast/beacon/shared/objstore"
)

// clock is a settable Now for tests.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// tlog sends log lines to t.Log until the test ends.
type tlog struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (l *tlog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.done {
		l.t.Log(strings.TrimSpace(string(p)))
	}
	return len(p), nil
}

func testLogger(t testing.TB) *slog.Logger {
	l := &tlog{t: t}
	t.Cleanup(func() { l.mu.Lock(); l.done = true; l.mu.Unlock() })
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// origin is a test upstream that counts requests and records the last
// request's header.
type origin struct {
	*httptest.Server
	n       atomic.Int64
	mu      sync.Mutex
	last    http.Header
	handler http.HandlerFunc
}

func newOrigin(t testing.TB, h http.HandlerFunc) *origin {
	o := &origin{handler: h}
	o.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o.n.Add(1)
		o.mu.Lock()
		o.last = r.Header.Clone()
		h := o.handler
		o.mu.Unlock()
		h(w, r)
	}))
	t.Cleanup(o.Close)
	return o
}

func (o *origin) setHandler(h http.HandlerFunc) { o.mu.Lock(); o.handler = h; o.mu.Unlock() }
func (o *origin) lastHeader() http.Header       { o.mu.Lock(); defer o.mu.Unlock(); return o.last }

type env struct {
	cache *Cache
	store *objstore.Store
	srv   *httptest.Server
	clock *clock
	up    *HTTPUpstream
}

func newEnv(t testing.TB, originURL string, maxBytes int64) *env {
	t.Helper()
	st, err := objstore.Open(filepath.Join(t.TempDir(), "cache.db"), objstore.Options{MaxBytes: maxBytes, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	up, err := NewHTTPUpstream(originURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	clk := &clock{t: t0}
	c, err := New(Options{Store: st, Upstream: up, Logger: testLogger(t), Now: clk.Now, CloseTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Error(err)
		}
	})
	srv := httptest.NewServer(c)
	t.Cleanup(srv.Close)
	return &env{cache: c, store: st, srv: srv, clock: clk, up: up}
}

type result struct {
	status int
	header http.Header
	body   string
	err    error // reading the body
}

func (e *env) do(t testing.TB, method, path string, hdr ...string) result {
	t.Helper()
	r, err := e.fetch(method, path, hdr...)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	return r
}

// fetch makes one request through the cache (hdr is name, value pairs; empty
// values are skipped), then waits until no fill is in flight, so that the
// next request sees what this one stored.
func (e *env) fetch(method, path string, hdr ...string) (result, error) {
	req, err := http.NewRequest(method, e.srv.URL+path, nil)
	if err != nil {
		return result{}, err
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i+1] != "" {
			req.Header.Set(hdr[i], hdr[i+1])
		}
	}
	req.Header.Set("Accept-Encoding", "identity")
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		return result{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	e.waitIdle()
	return result{resp.StatusCode, resp.Header, string(b), err}, nil
}

func (e *env) waitIdle() { waitIdle(e.cache) }

// waitIdle waits (bounded) until c has no fill in flight.
func waitIdle(c *Cache) {
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		c.mu.Lock()
		n := len(c.flights)
		c.mu.Unlock()
		if n == 0 {
			return
		}
	}
}

// fixed serves body with the given header fields and a fixed Date of t0.
func fixed(body string, hdr ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Date", httpDate(t0))
		for i := 0; i+1 < len(hdr); i += 2 {
			w.Header().Add(hdr[i], hdr[i+1])
		}
		io.WriteString(w, body)
	}
}

func expect(t testing.TB, r result, status int, xcache, body string) {
	t.Helper()
	if r.err != nil {
		t.Fatalf("body: %v", r.err)
	}
	if r.status != status || r.header.Get("X-Cache") != xcache || r.body != body {
		t.Fatalf("got %d X-Cache=%q body %s; want %d %q %s", r.status, r.header.Get("X-Cache"), describe(r.body), status, xcache, describe(body))
	}
}

func TestMissThenHit(t *testing.T) {
	o := newOrigin(t, fixed("hello world", "Cache-Control", "max-age=60", "Etag", `"v1"`, "Content-Type", "text/plain",
		"Connection", "X-Hop", "X-Hop", "secret"))
	e := newEnv(t, o.URL, 1<<20)

	r := e.do(t, "GET", "/a/b.txt?q=1")
	expect(t, r, 200, "MISS", "hello world")
	e.clock.Advance(5 * time.Second)
	r = e.do(t, "GET", "/a/b.txt?q=1")
	expect(t, r, 200, "HIT", "hello world")
	if o.n.Load() != 1 {
		t.Errorf("origin saw %d requests, want 1", o.n.Load())
	}
	for k, want := range map[string]string{
		"Age": "5", "Accept-Ranges": "bytes", "Content-Length": "11", "Etag": `"v1"`,
		"Content-Type": "text/plain", "Cache-Control": "max-age=60", "Date": httpDate(t0), "X-Hop": "",
	} {
		if got := r.header.Get(k); got != want {
			t.Errorf("HIT %s = %q, want %q", k, got, want)
		}
	}
	if got := o.lastHeader().Get("Accept-Encoding"); got != "identity" {
		t.Errorf("upstream saw Accept-Encoding %q", got)
	}
	// Another query string is another object.
	expect(t, e.do(t, "GET", "/a/b.txt?q=2"), 200, "MISS", "hello world")
	// The handler counts bytes after the client has them all: let it finish.
	var s Stats
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if s = e.cache.Stats(); s.BytesServed == 33 {
			break
		}
	}
	if s.Hits != 1 || s.Misses != 2 || s.Objects != 2 || s.BytesServed != 33 || s.UpstreamBytes != 22 {
		t.Errorf("stats %+v", s)
	}
}

func TestConditional(t *testing.T) {
	lm := httpDate(t0.Add(-time.Hour))
	o := newOrigin(t, fixed("0123456789", "Cache-Control", "max-age=60", "Etag", `"v1"`, "Last-Modified", lm, "Content-Type", "text/plain"))
	e := newEnv(t, o.URL, 1<<20)
	for _, miss := range []bool{true, false} {
		name, xc := "HIT", "HIT"
		if miss {
			name, xc = "MISS", "MISS"
			e.cache.Purge("/")
		}
		tests := []struct {
			hdr    []string
			status int
			body   string
		}{
			{[]string{"If-None-Match", `"v1"`}, 304, ""},
			{[]string{"If-None-Match", `"v0", W/"v1"`}, 304, ""},
			{[]string{"If-None-Match", `*`}, 304, ""},
			{[]string{"If-None-Match", `"v0"`}, 200, "0123456789"},
			{[]string{"If-Modified-Since", lm}, 304, ""},
			{[]string{"If-Modified-Since", httpDate(t0.Add(-2 * time.Hour))}, 200, "0123456789"},
			{[]string{"If-None-Match", `"v0"`, "If-Modified-Since", lm}, 200, "0123456789"},
		}
		for i, tt := range tests {
			if miss && i > 0 {
				e.cache.Purge("/")
			}
			r := e.do(t, "GET", "/c", tt.hdr...)
			if r.status != tt.status || r.body != tt.body || r.header.Get("X-Cache") != xc {
				t.Errorf("%s %q: %d %q %q; want %d %q", name, tt.hdr, r.status, r.header.Get("X-Cache"), r.body, tt.status, tt.body)
			}
			if r.status == 304 && (r.header.Get("Etag") != `"v1"` || r.header.Get("Content-Type") != "") {
				t.Errorf("%s %q: 304 header %v", name, tt.hdr, r.header)
			}
		}
	}
}

func TestRange(t *testing.T) {
	o := newOrigin(t, fixed("0123456789", "Cache-Control", "max-age=60", "Etag", `"v1"`))
	e := newEnv(t, o.URL, 1<<20)
	tests := []struct {
		rng, ifRange string
		status       int
		body, cr     string
	}{
		{"bytes=2-4", "", 206, "234", "bytes 2-4/10"},
		{"bytes=7-", "", 206, "789", "bytes 7-9/10"},
		{"bytes=-2", "", 206, "89", "bytes 8-9/10"},
		{"bytes=0-100", "", 206, "0123456789", "bytes 0-9/10"},
		{"bytes=10-", "", 416, "", "bytes */10"},
		{"bytes=0-1,5-6", "", 200, "0123456789", ""},
		{"bytes=2-4", `"v1"`, 206, "234", "bytes 2-4/10"},
		{"bytes=2-4", `"v2"`, 200, "0123456789", ""},
	}
	for _, miss := range []bool{true, false} {
		for _, tt := range tests {
			if miss {
				e.cache.Purge("/")
			}
			r := e.do(t, "GET", "/r", "Range", tt.rng, "If-Range", tt.ifRange)
			if r.err != nil || r.status != tt.status || r.body != tt.body || r.header.Get("Content-Range") != tt.cr {
				t.Errorf("miss=%v %s If-Range %s: %d %q Content-Range %q err %v; want %d %q %q",
					miss, tt.rng, tt.ifRange, r.status, r.body, r.header.Get("Content-Range"), r.err, tt.status, tt.body, tt.cr)
			}
			if tt.status == 206 && r.header.Get("Content-Length") != fmt.Sprint(len(tt.body)) {
				t.Errorf("%s: Content-Length %q", tt.rng, r.header.Get("Content-Length"))
			}
		}
	}
}

func TestHead(t *testing.T) {
	o := newOrigin(t, fixed("some body", "Cache-Control", "max-age=60"))
	e := newEnv(t, o.URL, 1<<20)
	r := e.do(t, "HEAD", "/h")
	expect(t, r, 200, "MISS", "")
	if r.header.Get("Content-Length") != "9" {
		t.Errorf("HEAD MISS Content-Length %q", r.header.Get("Content-Length"))
	}
	// The HEAD filled the cache (upstream fetches are always GET).
	r = e.do(t, "HEAD", "/h")
	expect(t, r, 200, "HIT", "")
	if r.header.Get("Content-Length") != "9" {
		t.Errorf("HEAD HIT Content-Length %q", r.header.Get("Content-Length"))
	}
	expect(t, e.do(t, "GET", "/h"), 200, "HIT", "some body")
	if o.n.Load() != 1 {
		t.Errorf("origin saw %d requests", o.n.Load())
	}
}

func TestRevalidate(t *testing.T) {
	lm := httpDate(t0.Add(-time.Hour))
	var version atomic.Int64
	version.Store(1)
	o := newOrigin(t, nil)
	o.setHandler(func(w http.ResponseWriter, r *http.Request) {
		etag := fmt.Sprintf(`"v%d"`, version.Load())
		w.Header().Set("Cache-Control", "max-age=10")
		w.Header().Set("Etag", etag)
		w.Header().Set("Last-Modified", lm)
		w.Header().Set("X-Origin-Seq", fmt.Sprint(o.n.Load()))
		if r.Header.Get("If-None-Match") == etag {
			w.WriteHeader(304)
			return
		}
		fmt.Fprintf(w, "body %s", etag)
	})
	e := newEnv(t, o.URL, 1<<20)
	expect(t, e.do(t, "GET", "/v"), 200, "MISS", `body "v1"`)

	// Stale: the upstream sees the validators and answers 304.
	e.clock.Advance(11 * time.Second)
	r := e.do(t, "GET", "/v")
	expect(t, r, 200, "HIT", `body "v1"`)
	if h := o.lastHeader(); h.Get("If-None-Match") != `"v1"` || h.Get("If-Modified-Since") != lm {
		t.Errorf("revalidation sent %v", h)
	}
	if r.header.Get("X-Origin-Seq") != "2" || r.header.Get("Age") != "0" {
		t.Errorf("304 header not merged: seq %q age %q", r.header.Get("X-Origin-Seq"), r.header.Get("Age"))
	}
	// Fresh again for 10 s from the 304.
	e.clock.Advance(5 * time.Second)
	expect(t, e.do(t, "GET", "/v"), 200, "HIT", `body "v1"`)
	if o.n.Load() != 2 {
		t.Errorf("origin saw %d requests, want 2", o.n.Load())
	}
	// A client reload forces revalidation even while fresh.
	expect(t, e.do(t, "GET", "/v", "Cache-Control", "no-cache"), 200, "HIT", `body "v1"`)
	expect(t, e.do(t, "GET", "/v", "Pragma", "no-cache"), 200, "HIT", `body "v1"`)
	expect(t, e.do(t, "GET", "/v", "Cache-Control", "max-age=0"), 200, "HIT", `body "v1"`)
	if o.n.Load() != 5 {
		t.Errorf("origin saw %d requests, want 5", o.n.Load())
	}

	// Stale and changed: 200 replaces the object.
	version.Store(2)
	e.clock.Advance(11 * time.Second)
	expect(t, e.do(t, "GET", "/v"), 200, "MISS", `body "v2"`)
	expect(t, e.do(t, "GET", "/v"), 200, "HIT", `body "v2"`)
	if s := e.cache.Stats(); s.Revalidated != 4 || s.Objects != 1 {
		t.Errorf("stats %+v", s)
	}
}

func TestStaleOnError(t *testing.T) {
	tests := []struct {
		name   string
		cc     string
		fail   string // "500" or "down"
		status int
		body   string
	}{
		{"5xx", "max-age=10", "500", 200, "old"},
		{"down", "max-age=10", "down", 200, "old"},
		{"stale-if-error", "max-age=10, stale-if-error=60", "500", 200, "old"},
		{"must-revalidate 5xx", "max-age=10, must-revalidate", "500", 504, ""},
		{"must-revalidate down", "max-age=10, must-revalidate", "down", 504, ""},
		{"proxy-revalidate", "max-age=10, proxy-revalidate", "500", 504, ""},
		{"no-cache", "no-cache", "500", 504, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := newOrigin(t, fixed("old", "Cache-Control", tt.cc, "Etag", `"x"`))
			e := newEnv(t, o.URL, 1<<20)
			expect(t, e.do(t, "GET", "/s"), 200, "MISS", "old")
			e.clock.Advance(20 * time.Second)
			if tt.fail == "down" {
				o.Close()
			} else {
				o.setHandler(func(w http.ResponseWriter, r *http.Request) { http.Error(w, "boom", 500) })
			}
			r := e.do(t, "GET", "/s")
			if r.status != tt.status || (tt.status == 200 && (r.body != tt.body || r.header.Get("X-Cache") != "HIT")) {
				t.Fatalf("got %d %q %q", r.status, r.header.Get("X-Cache"), r.body)
			}
			s := e.cache.Stats()
			if s.UpstreamErrors != 1 || (tt.status == 200) != (s.StaleServed == 1) {
				t.Errorf("stats %+v", s)
			}
		})
	}
}

func TestNotStored(t *testing.T) {
	tests := []struct {
		name string
		h    http.HandlerFunc
		req  []string
	}{
		{"no-store", fixed("x", "Cache-Control", "no-store, max-age=60"), nil},
		{"private", fixed("x", "Cache-Control", "private, max-age=60"), nil},
		{"Set-Cookie", fixed("x", "Cache-Control", "max-age=60", "Set-Cookie", "a=b"), nil},
		{"Vary *", fixed("x", "Cache-Control", "max-age=60", "Vary", "*"), nil},
		{"Vary Cookie", fixed("x", "Cache-Control", "max-age=60", "Vary", "Cookie"), nil},
		{"Authorization", fixed("x", "Cache-Control", "max-age=60"), []string{"Authorization", "Bearer t"}},
		{"request no-store", fixed("x", "Cache-Control", "max-age=60"), []string{"Cache-Control", "no-store"}},
		{"404", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Cache-Control", "max-age=60")
			http.Error(w, "x", 404)
		}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := newOrigin(t, tt.h)
			e := newEnv(t, o.URL, 1<<20)
			for i := 0; i < 2; i++ {
				r := e.do(t, "GET", "/n", tt.req...)
				if r.header.Get("X-Cache") != "MISS" || !strings.HasPrefix(r.body, "x") || r.err != nil {
					t.Fatalf("request %d: %d %q %q %v", i, r.status, r.header.Get("X-Cache"), r.body, r.err)
				}
			}
			if o.n.Load() != 2 || e.cache.Stats().Objects != 0 {
				t.Errorf("origin %d requests, %d objects stored", o.n.Load(), e.cache.Stats().Objects)
			}
		})
	}
	t.Run("Vary Accept-Encoding is stored", func(t *testing.T) {
		o := newOrigin(t, fixed("x", "Cache-Control", "max-age=60", "Vary", "Accept-Encoding"))
		e := newEnv(t, o.URL, 1<<20)
		e.do(t, "GET", "/n")
		expect(t, e.do(t, "GET", "/n"), 200, "HIT", "x")
	})
}

func TestUpstreamStatusPassThrough(t *testing.T) {
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Why", "gone")
		w.WriteHeader(http.StatusGone)
		io.WriteString(w, "it is gone")
	})
	e := newEnv(t, o.URL, 1<<20)
	r := e.do(t, "GET", "/g")
	expect(t, r, 410, "MISS", "it is gone")
	if r.header.Get("X-Why") != "gone" {
		t.Errorf("header not passed: %v", r.header)
	}
	o.Close()
	r = e.do(t, "GET", "/g")
	if r.status != 502 || !strings.Contains(r.body, "upstream") {
		t.Errorf("origin down: %d %q", r.status, r.body)
	}
}

func TestCollapse(t *testing.T) {
	body := strings.Repeat("collapsed forwarding ", 50000) // ~1 MiB
	release := make(chan struct{})
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		io.WriteString(w, body[:1000])
		w.(http.Flusher).Flush()
		<-release // clients pile up on the fill meanwhile
		io.WriteString(w, body[1000:])
	})
	e := newEnv(t, o.URL, 8<<20)
	const clients = 50
	var wg sync.WaitGroup
	results := make([]result, clients)
	for i := range results {
		wg.Add(1)
		go func() { defer wg.Done(); results[i], _ = e.fetch("GET", "/big") }()
	}
	time.Sleep(200 * time.Millisecond)
	close(release)
	wg.Wait()
	for i, r := range results {
		if r.err != nil || r.status != 200 || r.body != body {
			t.Fatalf("client %d: %d err %v, %d bytes", i, r.status, r.err, len(r.body))
		}
	}
	if o.n.Load() != 1 {
		t.Errorf("origin saw %d requests, want 1", o.n.Load())
	}
}

func TestFillSurvivesClientLeaving(t *testing.T) {
	release := make(chan struct{})
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		io.WriteString(w, "first ")
		w.(http.Flusher).Flush()
		<-release
		io.WriteString(w, "second")
	})
	e := newEnv(t, o.URL, 1<<20)
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", e.srv.URL+"/leave", nil)
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 6)
	if _, err := io.ReadFull(resp.Body, buf); err != nil || string(buf) != "first " {
		t.Fatalf("read %q %v", buf, err)
	}
	cancel()
	resp.Body.Close()
	close(release)
	deadline := time.Now().Add(5 * time.Second)
	for e.cache.Stats().Objects != 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	expect(t, e.do(t, "GET", "/leave"), 200, "HIT", "first second")
}

// genReader yields n deterministic bytes without holding them.
type genReader struct{ n, off int64 }

func (g *genReader) Read(p []byte) (int, error) {
	if g.off >= g.n {
		return 0, io.EOF
	}
	p = p[:min(int64(len(p)), g.n-g.off)]
	for i := range p {
		x := uint64(g.off + int64(i))
		p[i] = byte(x ^ x>>8 ^ x>>16)
	}
	g.off += int64(len(p))
	return len(p), nil
}

func TestLargeStreamed(t *testing.T) {
	if testing.Short() {
		t.Skip("64 MiB")
	}
	const size = 64 << 20
	for _, chunked := range []bool{false, true} {
		t.Run(fmt.Sprintf("chunked=%v", chunked), func(t *testing.T) {
			o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Cache-Control", "max-age=60")
				if !chunked {
					w.Header().Set("Content-Length", fmt.Sprint(size))
				}
				io.Copy(w, &genReader{n: size})
			})
			e := newEnv(t, o.URL, 256<<20)
			want := sha256.New()
			io.Copy(want, &genReader{n: size})

			runtime.GC()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			base := ms.HeapInuse
			var peak atomic.Uint64
			stop := make(chan struct{})
			sampled := make(chan struct{})
			go func() {
				defer close(sampled)
				var ms runtime.MemStats
				for {
					runtime.ReadMemStats(&ms)
					if ms.HeapInuse > peak.Load() {
						peak.Store(ms.HeapInuse)
					}
					select {
					case <-stop:
						return
					case <-time.After(20 * time.Millisecond):
					}
				}
			}()
			resp, err := e.srv.Client().Get(e.srv.URL + "/large")
			if err != nil {
				t.Fatal(err)
			}
			got := sha256.New()
			n, err := io.Copy(got, resp.Body)
			resp.Body.Close()
			close(stop)
			<-sampled
			if err != nil || n != size || !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
				t.Fatalf("got %d bytes, err %v, hash match %v", n, err, bytes.Equal(got.Sum(nil), want.Sum(nil)))
			}
			if p := peak.Load(); p > base && p-base > size/4 {
				t.Errorf("heap in use grew by %d MiB streaming %d MiB", (p-base)>>20, size>>20)
			} else {
				t.Logf("heap growth %d KiB", (int64(p)-int64(base))>>10)
			}
		})
	}
}

func TestTooLarge(t *testing.T) {
	body := strings.Repeat("z", 300<<10)
	o := newOrigin(t, nil)
	o.setHandler(fixed(body, "Cache-Control", "max-age=60", "Content-Length", fmt.Sprint(len(body))))
	e := newEnv(t, o.URL, 128<<10)
	// Known to be larger than the store: passed through, not stored.
	for i := 0; i < 2; i++ {
		expect(t, e.do(t, "GET", "/huge"), 200, "MISS", body)
	}
	if o.n.Load() != 2 || e.cache.Stats().Objects != 0 {
		t.Errorf("origin saw %d, stored %d", o.n.Load(), e.cache.Stats().Objects)
	}
	// Found out midway (no length): nothing is stored, and the client
	// still gets the whole body, the rest fetched from the upstream.
	o.setHandler(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Etag", `"huge2"`)
		if r.Header.Get("Range") == "" {
			// Headers out before the body: no Content-Length, so the
			// cache finds out midway. (Not for a Range request, whose
			// 206 ServeContent must still be able to send.)
			w.(http.Flusher).Flush()
		}
		http.ServeContent(w, r, "", time.Time{}, strings.NewReader(body))
	})
	expect(t, e.do(t, "GET", "/huge2"), 200, "MISS", body)
	if st := e.cache.Stats(); st.Objects != 0 || st.PassedOn != 1 || st.UpstreamErrors != 0 {
		t.Errorf("stats %+v", st)
	}
}

// cutOrigin sends part of a body and then breaks the connection.
func cutOrigin(withLength bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		if withLength {
			w.Header().Set("Content-Length", "200000")
		}
		w.Write(bytes.Repeat([]byte("c"), 100000))
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	}
}

func TestUpstreamCutMidway(t *testing.T) {
	for _, withLength := range []bool{true, false} {
		t.Run(fmt.Sprintf("length=%v", withLength), func(t *testing.T) {
			o := newOrigin(t, cutOrigin(withLength))
			e := newEnv(t, o.URL, 1<<20)
			for i := 0; i < 2; i++ {
				r := e.do(t, "GET", "/cut")
				if r.err == nil {
					t.Fatalf("request %d: complete-looking %d response of %d bytes", i, r.status, len(r.body))
				}
				if r.header.Get("X-Cache") != "MISS" {
					t.Errorf("request %d: X-Cache %q", i, r.header.Get("X-Cache"))
				}
			}
			if o.n.Load() != 2 || e.cache.Stats().Objects != 0 {
				t.Errorf("origin saw %d, stored %d", o.n.Load(), e.cache.Stats().Objects)
			}
			// A good body after the cut ones is stored.
			o.setHandler(fixed("whole", "Cache-Control", "max-age=60"))
			expect(t, e.do(t, "GET", "/cut"), 200, "MISS", "whole")
			expect(t, e.do(t, "GET", "/cut"), 200, "HIT", "whole")
		})
	}
}

func rawRequest(t *testing.T, addr, line string) (int, string) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "%s\r\nHost: x\r\nConnection: close\r\n\r\n", line)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestBadRequests(t *testing.T) {
	o := newOrigin(t, fixed("x"))
	e := newEnv(t, o.URL, 1<<20)
	addr := strings.TrimPrefix(e.srv.URL, "http://")
	for _, p := range []string{"/../etc/passwd", "/a/%2e%2e/etc/passwd", "/%2E%2E/x", "/a/./b", "/a\\b", "/a%00b", "/a//b", "/a%2fb"} {
		status, body := rawRequest(t, addr, "GET "+p+" HTTP/1.1")
		if status != 400 || !strings.Contains(body, "bad content path") {
			t.Errorf("GET %s: %d %q", p, status, body)
		}
	}
	for _, key := range []string{"/a\x01b", "/a\x7f", "a/b", "", "/" + strings.Repeat("a", 5000)} {
		w := httptest.NewRecorder()
		e.cache.ServeKey(w, httptest.NewRequest("GET", "/", nil), key)
		if w.Code != 400 || !strings.Contains(w.Body.String(), "bad content path") {
			t.Errorf("ServeKey(%q): %d %q", key, w.Code, w.Body.String())
		}
	}
	for _, m := range []string{"POST", "PUT", "DELETE", "OPTIONS"} {
		r := e.do(t, m, "/x")
		if r.status != 405 || r.header.Get("Allow") != "GET, HEAD" {
			t.Errorf("%s: %d Allow %q", m, r.status, r.header.Get("Allow"))
		}
	}
	if o.n.Load() != 0 {
		t.Errorf("bad requests reached the origin %d times", o.n.Load())
	}
}

func TestOnlyIfCached(t *testing.T) {
	o := newOrigin(t, fixed("x", "Cache-Control", "max-age=60"))
	e := newEnv(t, o.URL, 1<<20)
	if r := e.do(t, "GET", "/o", "Cache-Control", "only-if-cached"); r.status != 504 {
		t.Errorf("not cached: %d", r.status)
	}
	e.do(t, "GET", "/o")
	expect(t, e.do(t, "GET", "/o", "Cache-Control", "only-if-cached"), 200, "HIT", "x")
	e.clock.Advance(time.Minute)
	expect(t, e.do(t, "GET", "/o", "Cache-Control", "max-stale=10"), 200, "HIT", "x")
	if o.n.Load() != 1 {
		t.Errorf("origin saw %d", o.n.Load())
	}
}

func TestPurge(t *testing.T) {
	o := newOrigin(t, fixed("x", "Cache-Control", "max-age=60"))
	e := newEnv(t, o.URL, 1<<20)
	for _, p := range []string{"/v/1", "/v/2", "/w/1"} {
		e.do(t, "GET", p)
	}
	n, err := e.cache.Purge("/v/")
	if err != nil || n != 2 {
		t.Fatalf("Purge = %d, %v", n, err)
	}
	expect(t, e.do(t, "GET", "/v/1"), 200, "MISS", "x")
	expect(t, e.do(t, "GET", "/w/1"), 200, "HIT", "x")
	if _, err := e.cache.Purge("../"); err == nil {
		t.Error("Purge accepted a bad prefix")
	}
}

func TestPurgeDuringFill(t *testing.T) {
	release := make(chan struct{})
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		io.WriteString(w, "part ")
		w.(http.Flusher).Flush()
		<-release
		io.WriteString(w, "rest")
	})
	e := newEnv(t, o.URL, 1<<20)
	done := make(chan result)
	go func() { r, _ := e.fetch("GET", "/p"); done <- r }()
	for o.n.Load() == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	if _, err := e.cache.Purge("/"); err != nil {
		t.Fatal(err)
	}
	close(release)
	if r := <-done; r.err == nil {
		t.Errorf("purged fill completed for its client: %q", r.body)
	}
	if got := e.cache.Stats().Objects; got != 0 {
		t.Errorf("%d objects after purge", got)
	}
}

func TestClose(t *testing.T) {
	release := make(chan struct{})
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		w.(http.Flusher).Flush()
		<-release
		io.WriteString(w, "late")
	})
	e := newEnv(t, o.URL, 1<<20)
	go e.fetch("HEAD", "/c") // starts a fill and leaves
	for o.n.Load() == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	closed := make(chan error)
	go func() { closed <- e.cache.Close() }()
	select {
	case err := <-closed:
		t.Fatalf("Close returned %v with a fill in flight", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if got := e.cache.Stats().Objects; got != 1 {
		t.Errorf("fill did not land before Close returned: %d objects", got)
	}
	if _, err := e.cache.Purge("/"); !errors.Is(err, ErrClosed) {
		t.Errorf("Purge after Close: %v", err)
	}
}

func TestUpstreamFunc(t *testing.T) {
	var calls atomic.Int64
	var lastCond atomic.Value
	up := UpstreamFunc(func(ctx context.Context, key string, cond http.Header) (*http.Response, error) {
		calls.Add(1)
		lastCond.Store(cond.Clone())
		h := http.Header{"ETag": {`"f1"`}, "cache-control": {"max-age=1"}, "Date": {httpDate(t0)}}
		if cond.Get("If-None-Match") == `"f1"` {
			return &http.Response{StatusCode: 304, Header: h, Body: http.NoBody}, nil
		}
		return &http.Response{StatusCode: 200, Header: h, ContentLength: -1, Body: io.NopCloser(strings.NewReader("func body " + key))}, nil
	})
	st, err := objstore.Open(filepath.Join(t.TempDir(), "c.db"), objstore.Options{MaxBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	clk := &clock{t: t0}
	c, err := New(Options{Store: st, Upstream: up, Logger: testLogger(t), Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	get := func() *httptest.ResponseRecorder {
		w := httptest.NewRecorder()
		c.ServeHTTP(w, httptest.NewRequest("GET", "/f", nil))
		waitIdle(c)
		return w
	}
	if w := get(); w.Code != 200 || w.Body.String() != "func body /f" || w.Header().Get("X-Cache") != "MISS" {
		t.Fatalf("MISS: %d %q %v", w.Code, w.Body.String(), w.Header())
	}
	clk.Advance(2 * time.Second)
	// Non-canonical names from the upstream still drive revalidation.
	if w := get(); w.Code != 200 || w.Body.String() != "func body /f" || w.Header().Get("X-Cache") != "HIT" {
		t.Fatalf("revalidated: %d %q %v", w.Code, w.Body.String(), w.Header())
	}
	if cond := lastCond.Load().(http.Header); calls.Load() != 2 || cond.Get("If-None-Match") != `"f1"` {
		t.Errorf("%d calls, last cond %v", calls.Load(), cond)
	}
}

func TestCollapseNotStorable(t *testing.T) {
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "private")
		time.Sleep(50 * time.Millisecond)
		io.WriteString(w, "mine")
	})
	e := newEnv(t, o.URL, 1<<20)
	var wg sync.WaitGroup
	results := make([]result, 10)
	errs := make([]error, 10)
	for i := range results {
		wg.Add(1)
		go func() { defer wg.Done(); results[i], errs[i] = e.fetch("GET", "/private") }()
	}
	wg.Wait()
	for i, r := range results {
		if errs[i] != nil || r.err != nil || r.status != 200 || r.body != "mine" {
			t.Errorf("client %d: %v %v %d %q", i, errs[i], r.err, r.status, r.body)
		}
	}
	if n := o.n.Load(); n < 2 || n > 10 || e.cache.Stats().Objects != 0 {
		t.Errorf("origin saw %d requests, %d stored", n, e.cache.Stats().Objects)
	}
}

func TestNew(t *testing.T) {
	if _, err := New(Options{}); err == nil {
		t.Error("New without a store")
	}
	for _, u := range []string{"ftp://x", "http://", "http://h/?q=1", "::"} {
		if _, err := NewHTTPUpstream(u, nil); err == nil {
			t.Errorf("NewHTTPUpstream(%q) accepted", u)
		}
	}
}

// A client that received a whole MISS body finds the object stored at once:
// the last byte is released only after the fill committed. The upstream
// here sends every byte, then holds its end of body back for a while, so
// without that rule the client would be done long before the commit.
func TestCompleteMissIsStoredBeforeClientFinishes(t *testing.T) {
	body := strings.Repeat("0123456789abcdef", 4<<10) // 64 KiB: stored as a file
	up := UpstreamFunc(func(ctx context.Context, key string, cond http.Header) (*http.Response, error) {
		h := http.Header{"Cache-Control": {"max-age=60"}, "Date": {httpDate(t0)}}
		return &http.Response{StatusCode: 200, Header: h, ContentLength: int64(len(body)),
			Body: io.NopCloser(io.MultiReader(strings.NewReader(body), &slowEOF{d: 300 * time.Millisecond}))}, nil
	})
	st, err := objstore.Open(filepath.Join(t.TempDir(), "c.db"), objstore.Options{MaxBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	c, err := New(Options{Store: st, Upstream: up, Logger: testLogger(t), Now: (&clock{t: t0}).Now})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	srv := httptest.NewServer(c)
	defer srv.Close()
	get := func() (string, string) {
		resp, err := http.Get(srv.URL + "/slow-end")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return string(b), resp.Header.Get("X-Cache")
	}
	if b, xc := get(); b != body || xc != "MISS" {
		t.Fatalf("first: %s, %d bytes", xc, len(b))
	}
	if b, xc := get(); b != body || xc != "HIT" {
		t.Fatalf("second request right after a complete MISS: %s (%d bytes), want HIT", xc, len(b))
	}
}

// slowEOF waits d, then ends the body.
type slowEOF struct{ d time.Duration }

func (s *slowEOF) Read([]byte) (int, error) {
	time.Sleep(s.d)
	return 0, io.EOF
}

// describe shows a body short enough for a failure message: whole when
// small, else its length, ends and first difference from nothing.
func describe(b string) string {
	if len(b) <= 64 {
		return fmt.Sprintf("%q", b)
	}
	return fmt.Sprintf("%d bytes %q…%q", len(b), b[:16], b[len(b)-16:])
}
