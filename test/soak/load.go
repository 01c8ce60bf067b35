package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Error kinds, as the report counts them.
const (
	kindWrongBody  = "wrong_body"
	kindStatus     = "status"
	kindConnection = "connection"
	kindTimeout    = "timeout"
	kindCommand    = "command"
)

// reqError is one failed request.
type reqError struct {
	At     time.Time
	Kind   string
	Beacon int
	Detail string
}

// ledger counts requests and keeps the failures for the verdict.
type ledger struct {
	mu       sync.Mutex
	errs     []reqError
	dropped  int // failures beyond maxKept, counted only
	byOp     map[string]int
	okByOp   map[string]int
	notMod   int
	partial  int
	ranged   int // Range answered with the whole object (allowed)
	total    atomic.Int64
	shed     atomic.Int64 // ticks with every client busy
	bytes    atomic.Int64
	lastOK   []atomic.Int64 // per beacon: unix nanos of the last good answer
	maxKept  int
	logError func(reqError)
}

func newLedger(beacons int, logError func(reqError)) *ledger {
	return &ledger{byOp: map[string]int{}, okByOp: map[string]int{}, lastOK: make([]atomic.Int64, beacons),
		maxKept: 20000, logError: logError}
}

func (l *ledger) fail(e reqError) {
	l.mu.Lock()
	if len(l.errs) < l.maxKept {
		l.errs = append(l.errs, e)
	} else {
		l.dropped++
	}
	l.mu.Unlock()
	if l.logError != nil {
		l.logError(e)
	}
}

func (l *ledger) ok(op string, beacon int) {
	l.mu.Lock()
	l.okByOp[op]++
	l.mu.Unlock()
	if beacon >= 0 {
		l.lastOK[beacon].Store(time.Now().UnixNano())
	}
}

func (l *ledger) count(op string) {
	l.total.Add(1)
	l.mu.Lock()
	l.byOp[op]++
	l.mu.Unlock()
}

func (l *ledger) errors() []reqError {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]reqError(nil), l.errs...)
}

// endUser is the HTTP client of the end users behind one beacon: its
// connections come from the beacon's public address, so castd's router
// sends it to that beacon.
func endUser(src net.IP, timeout time.Duration) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: src}, Timeout: 5 * time.Second}
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			DialContext:         d.DialContext,
			DisableCompression:  true,
			Proxy:               nil,
			MaxIdleConnsPerHost: 4,
			IdleConnTimeout:     30 * time.Second,
		},
	}
}

// loader runs the end users' requests.
type loader struct {
	cat      *catalog
	castdURL string
	clients  []*http.Client
	led      *ledger
	etags    sync.Map // hot path -> ETag last seen with a 200
}

// op names, for the counts.
const (
	opHot   = "get_hot"
	opCold  = "get_cold"
	opRange = "range"
	opINM   = "if_none_match"
	opIMS   = "if_modified_since"
)

// pick chooses the next request: mostly hot objects (hits), a steady
// share of cold ones (misses), single ranges and conditional requests.
func (ld *loader) pick(r *rand.Rand) (op string, o *object) {
	switch n := r.IntN(100); {
	case n < 45:
		return opHot, ld.cat.Hot[r.IntN(len(ld.cat.Hot))]
	case n < 65:
		return opCold, ld.cat.Cold(r.IntN(ld.cat.ColdN))
	case n < 83:
		return opRange, ld.cat.Hot[r.IntN(len(ld.cat.Hot))]
	case n < 93:
		return opINM, ld.cat.Hot[r.IntN(len(ld.cat.Hot))]
	default:
		return opIMS, ld.cat.Hot[r.IntN(len(ld.cat.Hot))]
	}
}

// do makes one request as an end user behind beacon b and checks every
// byte of the answer.
func (ld *loader) do(ctx context.Context, r *rand.Rand, b int) {
	op, o := ld.pick(r)
	etag, haveETag := ld.etags.Load(o.Path)
	if op == opINM && !haveETag {
		op = opHot // nothing to revalidate yet
	}
	ld.led.count(op)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, ld.castdURL+o.Path, nil)
	if err != nil {
		ld.led.fail(reqError{At: time.Now(), Kind: kindConnection, Beacon: b, Detail: err.Error()})
		return
	}
	var first, last int64
	switch op {
	case opRange:
		first = r.Int64N(o.Size)
		last = min(o.Size-1, first+r.Int64N(min(o.Size-first, 512<<10)))
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", first, last))
	case opINM:
		req.Header.Set("If-None-Match", etag.(string))
	case opIMS:
		req.Header.Set("If-Modified-Since", "Mon, 02 Nov 2026 10:00:00 GMT")
	}
	resp, err := ld.clients[b].Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return // the run is over
		}
		ld.led.fail(reqError{At: time.Now(), Kind: transportKind(err), Beacon: b, Detail: fmt.Sprintf("%s %s: %v", op, o.Path, err)})
		return
	}
	defer resp.Body.Close()
	h := sha256.New()
	n, rerr := io.Copy(h, resp.Body)
	ld.led.bytes.Add(n)
	got := hex.EncodeToString(h.Sum(nil))
	where := resp.Request.URL.Host
	fail := func(kind, format string, a ...any) {
		ld.led.fail(reqError{At: time.Now(), Kind: kind, Beacon: b,
			Detail: fmt.Sprintf("%s %s via %s: ", op, o.Path, where) + fmt.Sprintf(format, a...)})
	}
	if rerr != nil {
		if ctx.Err() != nil {
			return
		}
		fail(transportKind(rerr), "body after %d bytes: %v", n, rerr)
		return
	}
	switch {
	case resp.StatusCode == http.StatusNotModified:
		if op != opINM && op != opIMS {
			fail(kindWrongBody, "304 to an unconditional request")
			return
		}
		if n != 0 {
			fail(kindWrongBody, "304 with a %d-byte body", n)
			return
		}
		ld.led.mu.Lock()
		ld.led.notMod++
		ld.led.mu.Unlock()
	case resp.StatusCode == http.StatusPartialContent:
		if op != opRange {
			fail(kindWrongBody, "206 to a request without Range")
			return
		}
		want := fmt.Sprintf("bytes %d-%d/%d", first, last, o.Size)
		if cr := resp.Header.Get("Content-Range"); cr != want {
			fail(kindWrongBody, "Content-Range %q, want %q", cr, want)
			return
		}
		if n != last-first+1 || got != rangeSHA256(o, first, last) {
			fail(kindWrongBody, "range %d-%d: %d bytes, sha256 %s, want %d bytes of the origin's", first, last, n, got[:16], last-first+1)
			return
		}
		ld.led.mu.Lock()
		ld.led.partial++
		ld.led.mu.Unlock()
	case resp.StatusCode == http.StatusOK:
		if n != o.Size || got != o.SHA256() {
			fail(kindWrongBody, "%d bytes, sha256 %s, want %d bytes sha256 %s", n, got[:16], o.Size, o.SHA256()[:16])
			return
		}
		if op == opRange {
			ld.led.mu.Lock()
			ld.led.ranged++
			ld.led.mu.Unlock()
		}
		if et := resp.Header.Get("ETag"); et != "" && o.Body != nil {
			ld.etags.Store(o.Path, et)
		}
	default:
		fail(kindStatus, "%s", resp.Status)
		return
	}
	ld.led.ok(op, b)
}

// transportKind tells a timeout from another connection failure.
func transportKind(err error) string {
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return kindTimeout
	}
	return kindConnection
}

// run dispatches requests at rate per second to a bounded set of workers
// until ctx ends. A tick that finds every worker busy is shed and counted:
// the load stays bounded when the system under test slows down.
func (ld *loader) run(ctx context.Context, rate float64, workers int) {
	jobs := make(chan int, workers)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
			for b := range jobs {
				ld.do(ctx, r, b)
			}
		}(w)
	}
	tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
	defer tick.Stop()
	i := 0
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-tick.C:
			select {
			case jobs <- i % len(ld.clients):
				i++
			default:
				ld.led.shed.Add(1)
			}
		}
	}
	close(jobs)
	wg.Wait()
}

// probe fetches a hot object as an end user behind beacon b and reports
// whether every byte was right: the recovery check after a fault.
func (ld *loader) probe(ctx context.Context, b int) error {
	o := ld.cat.Hot[0]
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, ld.castdURL+o.Path, nil)
	if err != nil {
		return err
	}
	resp, err := ld.clients[b].Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return errors.New(resp.Status)
	}
	if sum := sha256.Sum256(body); hex.EncodeToString(sum[:]) != o.SHA256() {
		return errors.New("wrong body")
	}
	return nil
}

// hostIP is the loopback address end users behind beacon b come from.
func hostIP(b int) net.IP { return net.IPv4(127, 0, 0, byte(11+b)) }

func hostIPString(b int) string { return "127.0.0." + strconv.Itoa(11+b) }
