package probe

import (
	"context"
	"crypto/x509"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/blockcast/beacon/cloud/netguard"
)

const testInterval = 300 * time.Millisecond

func start(t *testing.T, opts Options) *Prober {
	t.Helper()
	if opts.Interval == 0 {
		opts.Interval = testInterval
	}
	opts.Path = "/healthz"
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	p, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return p
}

func waitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(5 * time.Millisecond)
	}
	return cond()
}

func healthy(p *Prober, id string) bool { h, _ := p.Healthy(id); return h }

// health is a relay's health endpoint that the test can turn on and off
// and that counts requests.
type health struct {
	*httptest.Server
	ok   atomic.Bool
	hits atomic.Int64
}

func newHealth(t *testing.T) *health {
	h := &health{}
	h.ok.Store(true)
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.hits.Add(1)
		if r.URL.Path != "/healthz" || !h.ok.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ok\n")
	}))
	t.Cleanup(h.Close)
	return h
}

// gauge counts connections open at once, and the most ever.
type gauge struct{ open, max atomic.Int64 }

func (g *gauge) inc() {
	n := g.open.Add(1)
	for m := g.max.Load(); n > m && !g.max.CompareAndSwap(m, n); m = g.max.Load() {
	}
}

// tarpit accepts connections and holds them; slow ones answer a header
// byte every 50 ms.
type tarpit struct {
	ln   net.Listener
	conn *gauge
	wg   sync.WaitGroup
}

func newTarpit(t *testing.T, slow bool, g *gauge) *tarpit {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if g == nil {
		g = &gauge{}
	}
	tp := &tarpit{ln: ln, conn: g}
	tp.wg.Add(1)
	go func() {
		defer tp.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			tp.conn.inc()
			tp.wg.Add(1)
			go func() {
				defer tp.wg.Done()
				defer tp.conn.open.Add(-1)
				defer c.Close()
				if !slow {
					io.Copy(io.Discard, c) // until castd hangs up
					return
				}
				// The request is read (and the hang-up seen) at once, so
				// the gauge counts only connections castd holds open.
				gone := make(chan struct{})
				go func() { io.Copy(io.Discard, c); close(gone) }()
				for _, b := range []byte("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-Pad: " + strings.Repeat("x", 1000) + "\r\n\r\nok\n") {
					if _, err := c.Write([]byte{b}); err != nil {
						return
					}
					select {
					case <-gone:
						return
					case <-time.After(50 * time.Millisecond):
					}
				}
				<-gone
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); tp.wg.Wait() })
	return tp
}

func (tp *tarpit) URL() string { return "http://" + tp.ln.Addr().String() }

// TestNotHealthyBeforeFirstPass: a target is not healthy until a probe of
// it has passed, however long that takes.
func TestNotHealthyBeforeFirstPass(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
			io.WriteString(w, "ok")
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	p := start(t, Options{AllowPrivate: true})
	p.Set("r", srv.URL)
	if h, known := p.Healthy("r"); h || !known {
		t.Fatalf("healthy %v known %v before any probe", h, known)
	}
	deadline := time.Now().Add(3 * testInterval)
	for time.Now().Before(deadline) {
		if healthy(p, "r") {
			t.Fatal("healthy while its probes hang")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if c := p.Counts(); c[Timeout] == 0 {
		t.Fatalf("no probe timed out: %v", c)
	}
	close(release)
	if !waitFor(3*testInterval, func() bool { return healthy(p, "r") }) {
		t.Fatal("not healthy after its probe passed")
	}
}

// TestTarpitsDelayNobody: twenty tarpits (silent, and headers a byte at a
// time) with a pool of 8: a healthy relay keeps being probed on its own
// clock, a new one is probed at once, the tarpits never hold more than
// their share of the pool, and when the relay fails it is unhealthy within
// two intervals.
func TestTarpitsDelayNobody(t *testing.T) {
	good := newHealth(t)
	var pits gauge
	changed := make(chan string, 100)
	p := start(t, Options{AllowPrivate: true, MaxInFlight: 8, OnChange: func(id string) { changed <- id }})
	for i := range 20 {
		tp := newTarpit(t, i%2 == 1, &pits)
		p.Set("pit"+string(rune('a'+i)), tp.URL())
	}
	// Once the tarpits have failed, a new relay's first probe goes before
	// their next ones.
	if !waitFor(40*testInterval, func() bool { c := p.Counts(); return c[Timeout]+c[Error] >= 20 }) {
		t.Fatalf("tarpits not probed: %v", p.Counts())
	}
	p.Set("good", good.URL)
	if !waitFor(testInterval, func() bool { return healthy(p, "good") }) {
		t.Fatal("new relay not healthy within an interval among tarpits")
	}
	if id := <-changed; id != "good" {
		t.Fatalf("OnChange(%q), want good", id)
	}
	// Over five intervals the good relay is probed about five times, and
	// never more than 4 tarpits (half the pool) are probed at once.
	before := good.hits.Load()
	inFlight := 0
	for end := time.Now().Add(5 * testInterval); time.Now().Before(end); time.Sleep(time.Millisecond) {
		inFlight = max(inFlight, p.InFlight())
	}
	if n := good.hits.Load() - before; n < 4 {
		t.Fatalf("good relay probed %d times in 5 intervals among tarpits", n)
	}
	if inFlight > 5 {
		t.Fatalf("%d probes in flight, want at most 4 tarpits and the good relay", inFlight)
	}
	// Seen from the tarpits: a connection may close just after its slot
	// is reused, so at most twice the tarpits' share is open at once.
	if n := pits.max.Load(); n > 8 || n == 0 {
		t.Fatalf("%d tarpit connections open at once, want 1 to 8", n)
	}
	if c := p.Counts(); c[Timeout] == 0 {
		t.Fatalf("tarpits did not time out: %v", c)
	}
	// Fail just after a probe passed, the worst moment: the next probe is
	// an interval away, and its failure is confirmed a quarter interval
	// later (not a whole one), well within two intervals.
	hits := good.hits.Load()
	waitFor(2*testInterval, func() bool { return good.hits.Load() > hits })
	good.ok.Store(false)
	failed := time.Now()
	if !waitFor(2*testInterval, func() bool { return !healthy(p, "good") }) {
		t.Fatalf("failing relay still healthy after %s (interval %s)", time.Since(failed), testInterval)
	}
	took := time.Since(failed)
	t.Logf("failing relay unhealthy after %s (interval %s)", took.Round(time.Millisecond), testInterval)
	if took > testInterval*8/5 {
		t.Fatalf("failure confirmed after %s, want about 1.25 intervals (%s)", took.Round(time.Millisecond), testInterval*5/4)
	}
}

// TestOneLostProbeIsNoise: one failed probe keeps a healthy target; two in
// a row do not.
func TestOneLostProbeIsNoise(t *testing.T) {
	var fail atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if fail.Add(-1) >= 0 {
			http.Error(w, "lost", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ok")
	}))
	defer srv.Close()
	var changes atomic.Int64
	p := start(t, Options{AllowPrivate: true, OnChange: func(string) { changes.Add(1) }})
	p.Set("r", srv.URL)
	if !waitFor(2*testInterval, func() bool { return healthy(p, "r") }) {
		t.Fatal("not healthy")
	}
	fail.Store(1)
	if !waitFor(3*testInterval, func() bool { return p.Counts()[Status] >= 1 }) {
		t.Fatal("the failing probe did not happen")
	}
	time.Sleep(testInterval)
	if !healthy(p, "r") || changes.Load() != 1 {
		t.Fatalf("one lost probe: healthy %v, %d changes", healthy(p, "r"), changes.Load())
	}
	fail.Store(1 << 30)
	if !waitFor(2*testInterval, func() bool { return !healthy(p, "r") }) {
		t.Fatal("still healthy after failing probes")
	}
}

// TestNewURLDropsVerdict: a target that changes its URL is not healthy
// until the new URL passes, and a probe of the old URL in flight does not
// count for the new one.
func TestNewURLDropsVerdict(t *testing.T) {
	good := newHealth(t)
	pit := newTarpit(t, false, nil)
	p := start(t, Options{AllowPrivate: true})
	p.Set("r", good.URL)
	if !waitFor(2*testInterval, func() bool { return healthy(p, "r") }) {
		t.Fatal("not healthy")
	}
	p.Set("r", pit.URL())
	if healthy(p, "r") {
		t.Fatal("new URL inherited the old URL's verdict")
	}
	time.Sleep(2 * testInterval)
	if healthy(p, "r") {
		t.Fatal("healthy while its new URL never answers")
	}
	p.Set("r", good.URL)
	if !waitFor(2*testInterval, func() bool { return healthy(p, "r") }) {
		t.Fatal("not healthy after moving back")
	}
	p.Remove("r")
	if h, known := p.Healthy("r"); h || known {
		t.Fatalf("removed target: healthy %v known %v", h, known)
	}
}

// TestRefusesPrivateDestinations: without AllowPrivate, loopback in every
// spelling (and a name resolving to it) is refused when dialed: the
// listener sees no request.
func TestRefusesPrivateDestinations(t *testing.T) {
	h := newHealth(t)
	_, port, _ := net.SplitHostPort(h.Listener.Addr().String())
	p := start(t, Options{})
	urls := []string{
		h.URL,
		"http://localhost:" + port,
		"http://[::ffff:127.0.0.1]:" + port,
		"http://127.1:" + port + "/base/",
		"http://0.0.0.0:" + port,
	}
	for i, u := range urls {
		p.Set(string(rune('a'+i)), u)
	}
	if !waitFor(3*testInterval, func() bool { return p.Counts()[Refused] >= uint64(2*len(urls)) }) {
		t.Fatalf("probes not refused: %v", p.Counts())
	}
	for i := range urls {
		if healthy(p, string(rune('a'+i))) {
			t.Errorf("%s healthy", urls[i])
		}
	}
	if n := h.hits.Load(); n != 0 {
		t.Fatalf("loopback listener got %d requests", n)
	}
}

// TestNoRedirects: a redirect is an answer that is not 200, never a
// request elsewhere.
func TestNoRedirects(t *testing.T) {
	elsewhere := newHealth(t)
	srv := httptest.NewServer(http.RedirectHandler(elsewhere.URL+"/healthz", http.StatusFound))
	defer srv.Close()
	p := start(t, Options{AllowPrivate: true})
	p.Set("r", srv.URL)
	if !waitFor(3*testInterval, func() bool { return p.Counts()[Status] >= 2 }) {
		t.Fatalf("redirect not counted as a failure: %v", p.Counts())
	}
	if healthy(p, "r") || elsewhere.hits.Load() != 0 {
		t.Fatalf("healthy %v, redirect target got %d requests", healthy(p, "r"), elsewhere.hits.Load())
	}
}

// TestBodyBounded: an endless health answer is read only so far; the probe
// neither waits for its end nor fails.
func TestBodyBounded(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		buf := make([]byte, 32<<10)
		for r.Context().Err() == nil {
			if _, err := w.Write(buf); err != nil {
				return
			}
		}
	}))
	defer srv.Close()
	p := start(t, Options{AllowPrivate: true})
	p.Set("r", srv.URL)
	if !waitFor(2*testInterval, func() bool { return healthy(p, "r") }) {
		t.Fatalf("endless body: %v", p.Counts())
	}
	if c := p.Counts(); c[Timeout] != 0 {
		t.Fatalf("probe timed out reading an endless body: %v", c)
	}
}

// TestRunJoins: Run returns only after the probes it started have
// returned, however long their targets hang.
func TestRunJoins(t *testing.T) {
	pit := newTarpit(t, false, nil)
	p, err := New(Options{Interval: 10 * time.Second, Timeout: 9 * time.Second, AllowPrivate: true, Path: "/healthz",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	p.Set("r", pit.URL())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	if !waitFor(5*time.Second, func() bool { return pit.conn.open.Load() == 1 }) {
		t.Fatal("probe did not reach the tarpit")
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	if n := p.InFlight(); n != 0 {
		t.Fatalf("Run returned with %d probes in flight", n)
	}
	if c := p.Counts(); c[Timeout]+c[Error] != 0 {
		t.Fatalf("shutdown counted as the relay's failure: %v", c)
	}
}

func TestOptionsRefused(t *testing.T) {
	for _, o := range []Options{{}, {Interval: time.Second, Timeout: time.Second}, {Interval: -1}, {Interval: time.Nanosecond}} {
		if _, err := New(o); err == nil {
			t.Errorf("%+v accepted", o)
		}
	}
}

// TestHTTPS: an https relay is probed over TLS with verified certificates,
// and one that never completes its handshake times out.
func TestHTTPS(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	defer srv.Close()
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	pit := newTarpit(t, false, nil)
	p := start(t, Options{AllowPrivate: true, RootCAs: pool})
	p.Set("tls", srv.URL)
	p.Set("pit", strings.Replace(pit.URL(), "http:", "https:", 1))
	if !waitFor(2*testInterval, func() bool { return healthy(p, "tls") }) {
		t.Fatalf("https relay not healthy: %v", p.Counts())
	}
	if !waitFor(2*testInterval, func() bool { return p.Counts()[Timeout] >= 1 }) || healthy(p, "pit") {
		t.Fatalf("TLS tarpit: %v", p.Counts())
	}
	// Without the relay's CA the certificate is refused.
	q := start(t, Options{AllowPrivate: true})
	q.Set("tls", srv.URL)
	if !waitFor(2*testInterval, func() bool { return q.Counts()[Error] >= 1 }) || healthy(q, "tls") {
		t.Fatalf("unverified certificate accepted: %v", q.Counts())
	}
}

// TestOldURLNotProbedAfterChange: a probe of the old URL in flight when
// the URL changes neither counts for the new URL nor keeps the old URL in
// the schedule.
func TestOldURLNotProbedAfterChange(t *testing.T) {
	release := make(chan struct{})
	var oldHits atomic.Int64
	old := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		oldHits.Add(1)
		<-release
		io.WriteString(w, "ok")
	}))
	defer old.Close()
	defer close(release)
	pit := newTarpit(t, false, nil)
	p, err := New(Options{Interval: testInterval, Timeout: testInterval * 9 / 10, AllowPrivate: true, Path: "/healthz",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	p.Set("r", old.URL)
	if !waitFor(testInterval, func() bool { return oldHits.Load() == 1 }) {
		t.Fatal("old URL not probed")
	}
	p.Set("r", pit.URL())
	release <- struct{}{} // the old URL's probe passes now
	time.Sleep(3 * testInterval)
	if healthy(p, "r") {
		t.Fatal("the old URL's passing probe made the new URL healthy")
	}
	if n := oldHits.Load(); n != 1 {
		t.Fatalf("old URL probed %d times after the change, want none", n-1)
	}
}

// TestRebindIsNotNoise: a name that starts resolving to a forbidden
// address loses its verdict on the first refused probe, not the second.
func TestRebindIsNotNoise(t *testing.T) {
	h := newHealth(t)
	p := start(t, Options{AllowPrivate: true})
	var rebound atomic.Bool
	// The test's stand-in for DNS rebinding: the same address, allowed
	// until rebound, then judged by netguard.
	p.dialer.Control = func(network, address string, c syscall.RawConn) error {
		if rebound.Load() {
			return netguard.Control(network, address, c)
		}
		return nil
	}
	p.Set("r", h.URL)
	if !waitFor(2*testInterval, func() bool { return healthy(p, "r") }) {
		t.Fatal("not healthy")
	}
	rebound.Store(true)
	if !waitFor(2*testInterval, func() bool { return p.Counts()[Refused] >= 1 }) {
		t.Fatalf("no refused probe: %v", p.Counts())
	}
	if healthy(p, "r") {
		t.Fatal("still healthy after a probe was refused")
	}
}

// countHandler counts log records by level.
type countHandler struct {
	mu     sync.Mutex
	counts map[slog.Level]int
}

func (h *countHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.counts[r.Level]++
	h.mu.Unlock()
	return nil
}
func (h *countHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *countHandler) WithGroup(string) slog.Handler      { return h }

func (h *countHandler) count(l slog.Level) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.counts[l]
}

// TestWarningsRateLimited: a hundred hostile relays failing their probes
// make a bounded number of warnings, however many probes fail.
func TestWarningsRateLimited(t *testing.T) {
	h := &countHandler{counts: map[slog.Level]int{}}
	p := start(t, Options{Logger: slog.New(h), Interval: 100 * time.Millisecond})
	for i := range 100 {
		p.Set(strconv.Itoa(i), "http://127.0.0.1:9/"+strconv.Itoa(i))
	}
	if !waitFor(5*time.Second, func() bool { return p.Counts()[Refused] >= 300 }) {
		t.Fatalf("probes: %v", p.Counts())
	}
	if n := h.count(slog.LevelWarn) + h.count(slog.LevelInfo); n > 25 {
		t.Fatalf("%d warnings for %d refused probes, want at most the burst of 20 and 1 a second", n, p.Counts()[Refused])
	}
	if h.count(slog.LevelDebug) == 0 {
		t.Fatal("failures not logged at debug")
	}
}
