// Package probe checks relays' health endpoints from castd on a schedule
// that no relay can stretch: every target is probed every Interval on its
// own clock, at most MaxInFlight probes run at once, each under a deadline
// shorter than the interval (connect, TLS, request, headers and a bounded
// look at the body all inside it), on a connection of its own, with no
// redirect followed and no proxy used. Targets that are not healthy (new,
// or failing) share half of the pool, new ones first, so that a crowd of
// tarpits can delay neither the probes of relays being routed to nor the
// first probe of a new one. Destinations are judged by package netguard on
// the address actually dialed. A target is healthy once a probe of its
// current URL has passed, and stays so while at most one probe in a row
// fails (one lost probe is noise); a first failure is re-checked after a
// quarter interval, so a relay that turns unhealthy leaves routing within
// 1.25 intervals when it refuses or errs, and within two (two deadlines of
// half an interval after the next probe) when it hangs.
package probe

import (
	"bufio"
	"container/heap"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/blockcast/beacon/cloud/netguard"
	"github.com/blockcast/beacon/shared/ratelimit"
)

// Defaults.
const (
	DefaultMaxInFlight = 32
	maxTimeout         = 5 * time.Second
	minInterval        = 10 * time.Millisecond
	maxBody            = 4 << 10 // read of a health answer's body
	maxHeaderBytes     = 16 << 10
)

// Result is how one probe ended.
type Result string

// Probe results, the label values of castd_relay_probes_total.
const (
	OK      Result = "ok"
	Refused Result = "refused" // destination not allowed (netguard)
	Timeout Result = "timeout" // no full answer within the deadline
	Status  Result = "status"  // answered, but not 200
	Error   Result = "error"   // connection or protocol error
)

// Results lists every Result, in the order metrics report them.
var Results = []Result{OK, Refused, Timeout, Status, Error}

// Options configure a Prober.
type Options struct {
	Interval time.Duration // between the starts of two probes of one target (required)
	// Timeout bounds a whole probe; it must be shorter than Interval.
	// Default: Interval/2, at most 5 s.
	Timeout     time.Duration
	MaxInFlight int    // probes at once (default DefaultMaxInFlight)
	Path        string // appended to a target's URL, e.g. "/healthz"
	// AllowPrivate lets probes reach loopback, private, link-local and
	// other non-public addresses (labs and tests).
	AllowPrivate bool
	// OnChange is called, outside the Prober's locks, after a probe whose
	// result may have changed the target's Healthy verdict.
	OnChange func(id string)
	Logger   *slog.Logger
	RootCAs  *x509.CertPool // for https relays; nil: the system's roots
}

// Prober probes a set of targets until its Run ends.
type Prober struct {
	opts     Options
	log      *slog.Logger
	dialer   *net.Dialer
	maxOther int // in-flight probes of targets that are not healthy, at most

	wake chan struct{}

	mu       sync.Mutex
	targets  map[string]*target
	queues   [nClasses]queue
	inFlight [nClasses]int
	counts   map[Result]uint64

	logBucket  *ratelimit.Bucket
	suppressed int // warnings not logged since the last one that was
}

// A target is in one of three classes: healthy ones (being routed to), new
// ones (not probed yet at this URL) and failing ones. New and failing
// targets together may hold at most maxOther of the pool's slots, new ones
// first: neither a crowd of tarpits nor one of relays that never answer
// delays the probes of routed relays or the first probe of a new one.
const (
	classHealthy = iota
	classNew
	classFailing
	nClasses
)

type target struct {
	id, url  string
	next     time.Time // when the next probe is due
	index    int       // in its queue; -1 while not queued
	class    int       // queue it is in
	passed   bool      // a probe of this URL has passed
	failures int       // consecutive failed probes
	last     Result
}

// healthy is the routing verdict: a probe of this URL has passed, and at
// most one probe since has failed (one lost probe is noise).
func (t *target) healthy() bool { return t.passed && t.failures < 2 }

func (t *target) classOf() int {
	switch {
	case t.healthy():
		return classHealthy
	case t.last == "":
		return classNew
	}
	return classFailing
}

// ensureDefaults gives every zero field its default; Timeout's depends on
// Interval.
func (o *Options) ensureDefaults() {
	if o.Timeout == 0 {
		o.Timeout = min(o.Interval/2, maxTimeout)
	}
	if o.MaxInFlight == 0 {
		o.MaxInFlight = DefaultMaxInFlight
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// check validates the options after ensureDefaults; its errors name the
// fields.
func (o *Options) check() error {
	switch {
	case o.Interval < minInterval:
		return fmt.Errorf("probe: Options.Interval %s is too short (at least %s)", o.Interval, minInterval)
	case o.Timeout <= 0 || o.Timeout >= o.Interval:
		return fmt.Errorf("probe: Options.Timeout %s must be positive and shorter than Options.Interval %s", o.Timeout, o.Interval)
	case o.MaxInFlight < 0:
		return fmt.Errorf("probe: Options.MaxInFlight %d must not be negative", o.MaxInFlight)
	}
	return nil
}

// New returns a Prober with no targets.
func New(opts Options) (*Prober, error) {
	opts.ensureDefaults()
	if err := opts.check(); err != nil {
		return nil, err
	}
	p := &Prober{
		opts:      opts,
		log:       opts.Logger,
		maxOther:  max(1, opts.MaxInFlight/2),
		wake:      make(chan struct{}, 1),
		targets:   map[string]*target{},
		counts:    map[Result]uint64{},
		logBucket: ratelimit.NewBucket(1, 20, time.Now()),
	}
	if opts.MaxInFlight == 1 {
		p.maxOther = 1
	}
	p.dialer = &net.Dialer{Timeout: opts.Timeout}
	if !opts.AllowPrivate {
		p.dialer.Control = netguard.Control // judged on the address dialed
	}
	return p, nil
}

// Set adds a target or changes its URL. A new URL starts unproven: the
// verdict earned by the old one is dropped, and a probe is due at once.
// Set does not call OnChange; the caller reads Healthy itself.
func (p *Prober) Set(id, url string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if t, ok := p.targets[id]; ok {
		if t.url == url {
			return
		}
		p.dequeueLocked(t)
	}
	t := &target{id: id, url: url, next: time.Now(), index: -1}
	p.targets[id] = t
	p.enqueueLocked(t)
	p.signal()
}

// Remove forgets a target; a probe of it in flight is ignored when it ends.
func (p *Prober) Remove(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if t, ok := p.targets[id]; ok {
		p.dequeueLocked(t)
		delete(p.targets, id)
	}
}

// Healthy reports whether id's current URL has passed a probe and keeps
// passing (known reports whether id is a target at all).
func (p *Prober) Healthy(id string) (healthy, known bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	t, ok := p.targets[id]
	return ok && t.healthy(), ok
}

// Counts returns how many probes ended with each result.
func (p *Prober) Counts() map[Result]uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[Result]uint64, len(Results))
	for _, r := range Results {
		out[r] = p.counts[r]
	}
	return out
}

// InFlight is the number of probes running now.
func (p *Prober) InFlight() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.inFlight[classHealthy] + p.inFlight[classNew] + p.inFlight[classFailing]
}

func (p *Prober) signal() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

type job struct {
	t     *target
	url   string
	class int
}

// Run probes targets until ctx ends, and returns only after every probe it
// started has returned.
func (p *Prober) Run(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		p.mu.Lock()
		now := time.Now()
		jobs := p.dueLocked(now)
		wait := p.nextWakeLocked(now)
		p.mu.Unlock()
		for _, j := range jobs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				p.probe(ctx, j)
			}()
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-p.wake:
		case <-timer.C:
		}
	}
}

func (p *Prober) slotFree(class int) bool {
	other := p.inFlight[classNew] + p.inFlight[classFailing]
	if p.inFlight[classHealthy]+other >= p.opts.MaxInFlight {
		return false
	}
	return class == classHealthy || other < p.maxOther
}

// dueLocked takes every due target that a slot is free for off its queue,
// healthy ones first, then new ones.
func (p *Prober) dueLocked(now time.Time) []job {
	var jobs []job
	for class := range p.queues {
		q := &p.queues[class]
		for q.Len() > 0 && !(*q)[0].next.After(now) && p.slotFree(class) {
			t := heap.Pop(q).(*target)
			p.inFlight[class]++
			jobs = append(jobs, job{t: t, url: t.url, class: class})
		}
	}
	return jobs
}

// nextWakeLocked is how long Run may sleep: until the next due target of a
// class with a free slot (a full class wakes Run when a probe ends).
func (p *Prober) nextWakeLocked(now time.Time) time.Duration {
	wait := time.Hour
	for class := range p.queues {
		q := p.queues[class]
		if q.Len() > 0 && p.slotFree(class) {
			wait = min(wait, max(q[0].next.Sub(now), 0))
		}
	}
	return wait
}

func (p *Prober) enqueueLocked(t *target) {
	t.class = t.classOf()
	heap.Push(&p.queues[t.class], t)
}

func (p *Prober) dequeueLocked(t *target) {
	if t.index >= 0 {
		heap.Remove(&p.queues[t.class], t.index)
	}
}

func (p *Prober) probe(ctx context.Context, j job) {
	start := time.Now()
	res, err := p.check(ctx, j.url)
	if ctx.Err() != nil && res != OK {
		// Shutting down: not the relay's failure.
		p.mu.Lock()
		p.inFlight[j.class]--
		p.mu.Unlock()
		return
	}
	p.mu.Lock()
	p.inFlight[j.class]--
	p.counts[res]++
	t := j.t
	current := p.targets[t.id] == t
	var was, now bool
	if current {
		was = t.healthy()
		t.last = res
		if res == OK {
			t.passed, t.failures = true, 0
		} else {
			t.failures++
			if res == Refused {
				// Not noise: the name now leads somewhere forbidden.
				t.passed = false
			}
		}
		now = t.healthy()
		t.next = start.Add(p.opts.Interval)
		if was && now && t.failures == 1 {
			// Confirm a first failure soon, so that a dead relay leaves
			// routing well within two intervals.
			t.next = start.Add(p.opts.Interval / 4)
		}
		p.enqueueLocked(t)
	}
	logIt, suppressed := false, 0
	if current && (res != OK && (t.failures == 1 || was != now) || res == OK && was != now) {
		if logIt = p.logBucket.Allow(time.Now()); logIt {
			suppressed, p.suppressed = p.suppressed, 0
		} else {
			p.suppressed++
		}
	}
	failures := t.failures
	p.mu.Unlock()
	p.signal()
	if !current {
		return
	}
	switch {
	case logIt && res == OK:
		p.log.Info("relay health probe passes", "id", t.id, "url", j.url, "routable", now, "suppressed", suppressed)
	case logIt:
		p.log.Warn("relay health probe failed", "id", t.id, "url", j.url, "result", res, "failures", failures, "routable", now,
			"suppressed", suppressed, "err", err)
	case res != OK:
		p.log.Debug("relay health probe failed", "id", t.id, "url", j.url, "result", res, "failures", failures, "err", err)
	}
	if was != now && p.opts.OnChange != nil {
		p.opts.OnChange(t.id)
	}
}

// check makes one probe: GET url+Path must answer 200 within the timeout.
// It speaks HTTP/1.1 on a connection of its own rather than through an
// http.Transport: everything happens in this goroutine under one deadline,
// nothing is pooled or dialed in the background to outlive the probe,
// there are no redirects and no proxy, and a relay that answers before it
// is asked cannot make net/http write to the process's log.
func (p *Prober) check(ctx context.Context, rawURL string) (Result, error) {
	ctx, cancel := context.WithTimeout(ctx, p.opts.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(rawURL, "/")+p.opts.Path, nil)
	if err != nil {
		return Error, err
	}
	u := req.URL
	port := u.Port()
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return Error, fmt.Errorf("scheme %q: want http or https", u.Scheme)
	case port == "" && u.Scheme == "https":
		port = "443"
	case port == "":
		port = "80"
	}
	req.Close = true
	req.Header.Set("User-Agent", "castd-probe")
	conn, err := p.dialer.DialContext(ctx, "tcp", net.JoinHostPort(u.Hostname(), port))
	if err != nil {
		return classify(ctx, err), err
	}
	defer conn.Close()
	deadline, _ := ctx.Deadline()
	conn.SetDeadline(deadline)
	// Shutdown (ctx's parent ending) interrupts the probe at once.
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if u.Scheme == "https" {
		tc := tls.Client(conn, &tls.Config{MinVersion: tls.VersionTLS12, ServerName: u.Hostname(), RootCAs: p.opts.RootCAs})
		if err := tc.HandshakeContext(ctx); err != nil {
			return classify(ctx, err), fmt.Errorf("TLS: %w", err)
		}
		conn = tc
	}
	if err := req.Write(conn); err != nil {
		return classify(ctx, err), fmt.Errorf("sending the request: %w", err)
	}
	// Headers and the look at the body are bounded together.
	br := bufio.NewReader(io.LimitReader(conn, maxHeaderBytes+maxBody))
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		return classify(ctx, err), fmt.Errorf("reading the answer: %w", err)
	}
	defer resp.Body.Close()
	// A short look at the body, so that a relay answering its headers but
	// not its body is not taken for healthy; never more than maxBody.
	if _, err := io.Copy(io.Discard, io.LimitReader(resp.Body, maxBody)); err != nil {
		return classify(ctx, err), fmt.Errorf("reading the answer: %w", err)
	}
	// The probe spoke HTTP/1.1: an answer in another version (HTTP/0.x,
	// or a 2.x preface) is not a relay that serves beacons' clients.
	if resp.ProtoMajor != 1 {
		return Error, fmt.Errorf("health endpoint answered in %s", resp.Proto)
	}
	if resp.StatusCode != http.StatusOK {
		return Status, fmt.Errorf("health endpoint answered %s", resp.Status)
	}
	return OK, nil
}

func classify(ctx context.Context, err error) Result {
	switch {
	case errors.Is(err, netguard.ErrForbidden):
		return Refused
	case ctx.Err() != nil, errors.Is(err, context.DeadlineExceeded), isTimeout(err):
		return Timeout
	}
	return Error
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// queue is a min-heap of targets by next due time.
type queue []*target

func (q queue) Len() int           { return len(q) }
func (q queue) Less(i, j int) bool { return q[i].next.Before(q[j].next) }
func (q queue) Swap(i, j int) {
	q[i], q[j] = q[j], q[i]
	q[i].index, q[j].index = i, j
}
func (q *queue) Push(x any) {
	t := x.(*target)
	t.index = len(*q)
	*q = append(*q, t)
}
func (q *queue) Pop() any {
	old := *q
	t := old[len(old)-1]
	old[len(old)-1] = nil
	*q = old[:len(old)-1]
	t.index = -1
	return t
}
