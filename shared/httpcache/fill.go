package httpcache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/blockcast/beacon/shared/objstore"
)

// outcome is what one upstream fetch produced for the requests waiting on it.
type outcome int

const (
	outFill   outcome = iota + 1 // a storable 200: stream from the fill
	outObject                    // serve obj: revalidated by a 304, or stale
	outPass                      // not stored: the leader takes the response, the others fetch their own
	outDirect                    // every request fetches for itself, uncollapsed
	outError                     // answer status with msg
)

// flight is one upstream fetch for a key that concurrent requests share.
type flight struct {
	key  string
	done chan struct{} // closed once the fields below are set

	out    outcome
	w      *objstore.Writer // outFill
	meta   objstore.Meta    // outFill: header, Size (-1 unknown), times
	obj    *objstore.Object // outObject
	stale  bool             // outObject: obj is stale
	status int              // outError
	msg    string           // outError

	// pass hands the response to the leader (outPass); the leader owns the
	// body (and calls release) once it receives it.
	leaderCtx context.Context
	pass      chan passed

	commitMu sync.Mutex // orders Purge's mark against Commit
	purged   bool

	filled chan struct{} // outFill: closed when the fill has committed or aborted (Open waits for it)
}

type passed struct {
	resp    *http.Response
	release context.CancelFunc
}

// join returns the flight for key, starting it (lead true) if there is
// none. Before starting one it reads the store again under c.mu: a fill that
// committed since the caller's read has left its flight by then, and its
// object is returned (f nil) instead of fetching it twice. f is also nil
// after Close. A request that joins a fill gets the response being fetched,
// whatever its own Cache-Control says: that is what collapsing means.
func (c *Cache) join(key string, r *http.Request, req cacheControl) (f *flight, lead bool, obj *objstore.Object) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, false, nil
	}
	if cur := c.flights[key]; cur != nil {
		return cur, false, nil
	}
	obj, err := c.store.Get(key)
	if err != nil {
		obj = nil
	}
	if obj != nil {
		m := &obj.Meta
		if stateOf(m.Status, m.Header, m.RequestTime, m.ResponseTime, c.now()).fresh(req) {
			return nil, false, obj
		}
	}
	f = &flight{
		key:       key,
		done:      make(chan struct{}),
		leaderCtx: r.Context(),
		pass:      make(chan passed),
		filled:    make(chan struct{}),
	}
	// Only what storability depends on; the request itself is not used
	// after its handler returns.
	reqHdr := http.Header{}
	if v := r.Header["Authorization"]; len(v) > 0 {
		reqHdr["Authorization"] = []string{"present"}
	}
	if v := r.Header["Cache-Control"]; len(v) > 0 {
		reqHdr["Cache-Control"] = append([]string(nil), v...)
	}
	c.flights[key] = f
	c.wg.Add(1)
	go c.runFlight(f, obj, reqHdr)
	return f, true, nil
}

// leave removes f from the flight table if it is still there.
func (c *Cache) leave(f *flight) {
	c.mu.Lock()
	if c.flights[f.key] == f {
		delete(c.flights, f.key)
	}
	c.mu.Unlock()
}

// settle publishes the outcome of f. Unless the outcome is a fill, the
// flight leaves the table first, so that later requests start afresh.
func (c *Cache) settle(f *flight, out outcome) {
	f.out = out
	if out != outFill {
		c.leave(f)
	}
	close(f.done)
}

func (c *Cache) settleError(f *flight, status int, msg string) {
	f.status, f.msg = status, msg
	c.settle(f, outError)
}

// runFlight fetches f.key from the upstream, revalidating stale when it is
// not nil, and fills the store. It runs detached from any client: the object
// lands even if every client leaves.
func (c *Cache) runFlight(f *flight, stale *objstore.Object, reqHdr http.Header) {
	defer c.wg.Done()
	ctx, cancel := context.WithTimeout(c.ctx, c.fillTimeout)
	handedOff := false
	defer func() {
		if !handedOff {
			cancel()
		}
	}()

	var cond http.Header
	var st state
	if stale != nil {
		m := &stale.Meta
		st = stateOf(m.Status, m.Header, m.RequestTime, m.ResponseTime, c.now())
		cond = validators(m.Header)
	}
	reqTime := c.now()
	resp, err := c.up.Fetch(ctx, f.key, cond)
	respTime := c.now()
	if err != nil {
		c.upstreamErrors.Add(1)
		c.log.Warn("httpcache: upstream fetch failed", "key", f.key, "err", err)
		c.settleFailure(f, stale, st, http.StatusBadGateway, "upstream unreachable")
		return
	}
	switch {
	case resp.StatusCode == http.StatusNotModified && cond != nil:
		drain(resp.Body)
		c.settleRevalidated(f, resp.Header, reqTime, respTime)
		return
	case resp.StatusCode >= 500:
		c.upstreamErrors.Add(1)
		c.log.Warn("httpcache: upstream error status", "key", f.key, "status", resp.StatusCode)
		if stale != nil {
			drain(resp.Body)
			c.settleFailure(f, stale, st, http.StatusGatewayTimeout, "")
			return
		}
	}

	canonicalize(resp.Header)
	stripHopByHop(resp.Header)
	if err := Storable(reqHdr, resp.StatusCode, resp.Header); err != nil {
		c.log.Debug("httpcache: passing through", "key", f.key, "status", resp.StatusCode, "reason", err)
		handedOff = c.handOff(f, resp, cancel)
		return
	}
	w, err := c.store.Create(f.key, resp.ContentLength)
	if err != nil {
		if errors.Is(err, objstore.ErrTooLarge) {
			c.log.Debug("httpcache: too large to store; passing through", "key", f.key, "length", resp.ContentLength)
		} else {
			c.log.Warn("httpcache: store create failed; passing through", "key", f.key, "err", err)
		}
		handedOff = c.handOff(f, resp, cancel)
		return
	}
	hdr := resp.Header
	delete(hdr, "Content-Length") // the served length comes from the stored size
	if len(hdr["Date"]) == 0 {
		// RFC 9110 §6.6.1: a recipient that caches a response without Date adds one.
		hdr["Date"] = []string{respTime.UTC().Format(http.TimeFormat)}
	}
	f.w = w
	f.meta = objstore.Meta{
		Key:          f.key,
		Status:       http.StatusOK,
		Header:       hdr,
		Size:         resp.ContentLength,
		RequestTime:  reqTime,
		ResponseTime: respTime,
	}
	c.settle(f, outFill)
	c.fill(f, resp)
}

// fill copies the upstream body into the store and commits it, or aborts so
// that nothing partial is ever stored.
func (c *Cache) fill(f *flight, resp *http.Response) {
	defer close(f.filled)
	defer resp.Body.Close()
	defer c.leave(f)
	buf := copyBufs.Get().(*[]byte)
	n, err := io.CopyBuffer(f.w, countingReader{resp.Body, &c.upstreamBytes}, *buf)
	copyBufs.Put(buf)
	if err == nil && resp.ContentLength >= 0 && n != resp.ContentLength {
		err = fmt.Errorf("body is %d bytes, Content-Length said %d: %w", n, resp.ContentLength, io.ErrUnexpectedEOF)
	}
	f.commitMu.Lock()
	defer f.commitMu.Unlock()
	if err == nil && f.purged {
		err = errors.New("purged while filling")
	}
	if err != nil {
		if !passOnStoreFailure(err) {
			c.upstreamErrors.Add(1)
		}
		c.log.Warn("httpcache: fill aborted", "key", f.key, "bytes", n, "err", err)
		f.w.Abort()
		return
	}
	meta := f.meta
	meta.Size = n
	if err := f.w.Commit(meta); err != nil {
		c.log.Warn("httpcache: commit failed", "key", f.key, "err", err)
		f.w.Abort()
	}
}

// settleFailure decides what waiting requests get when the upstream failed
// (transport error or 5xx): the stale copy where that is allowed, otherwise
// 504 for a stored object that must be revalidated, or noStale for none.
func (c *Cache) settleFailure(f *flight, stale *objstore.Object, st state, noStale int, msg string) {
	switch {
	case stale != nil && st.staleOnErrorOK():
		c.log.Warn("httpcache: serving stale copy", "key", f.key, "age", st.age, "lifetime", st.lifetime)
		f.obj, f.stale = stale, true
		c.settle(f, outObject)
	case stale != nil:
		c.settleError(f, http.StatusGatewayTimeout, "upstream unavailable and the stored response must be revalidated")
	default:
		c.settleError(f, noStale, msg)
	}
}

// settleRevalidated merges a 304's header into the stored object (RFC 9111
// §3.2, §4.3.4) and serves the updated object.
func (c *Cache) settleRevalidated(f *flight, h http.Header, reqTime, respTime time.Time) {
	c.revalidated.Add(1)
	canonicalize(h)
	stripHopByHop(h)
	err := c.store.UpdateMeta(f.key, func(m *objstore.Meta) {
		nh := m.Header.Clone()
		if nh == nil {
			nh = http.Header{}
		}
		for k, v := range h {
			switch k {
			case "Content-Length", "Content-Range", "Content-Type", "Content-Encoding":
				// These describe the 304 itself or would contradict the stored body.
				continue
			}
			nh[k] = v
		}
		// Date and Age belong to the new response: never keep the old ones.
		if len(h["Date"]) == 0 {
			nh["Date"] = []string{respTime.UTC().Format(http.TimeFormat)}
		}
		if len(h["Age"]) == 0 {
			delete(nh, "Age")
		}
		m.Header = nh
		m.RequestTime, m.ResponseTime = reqTime, respTime
	})
	var obj *objstore.Object
	if err == nil {
		obj, err = c.store.Get(f.key)
	}
	if err != nil {
		// Evicted or purged meanwhile: the requests fetch for themselves.
		c.log.Warn("httpcache: revalidated object vanished", "key", f.key, "err", err)
		c.settle(f, outDirect)
		return
	}
	f.obj = obj
	c.settle(f, outObject)
}

// handOff publishes outPass and gives resp to the leader, or closes it if
// the leader has gone. It reports whether the leader took it (and with it
// the duty to call release).
func (c *Cache) handOff(f *flight, resp *http.Response, release context.CancelFunc) bool {
	c.settle(f, outPass)
	select {
	case f.pass <- passed{resp, release}:
		return true
	case <-f.leaderCtx.Done():
		resp.Body.Close()
		return false
	}
}

// validators returns the conditional request fields for a stored response,
// or nil if it has no validator.
func validators(h http.Header) http.Header {
	var cond http.Header
	if v := firstValue(h, "Etag"); v != "" {
		cond = http.Header{"If-None-Match": {v}}
	}
	if v := firstValue(h, "Last-Modified"); v != "" {
		if cond == nil {
			cond = http.Header{}
		}
		cond["If-Modified-Since"] = []string{v}
	}
	return cond
}

// serveFlight answers r from flight f once its outcome is known.
func (c *Cache) serveFlight(w http.ResponseWriter, r *http.Request, key string, f *flight, lead bool) {
	select {
	case <-f.done:
	case <-r.Context().Done():
		return // the client left; the fill goes on without it
	}
	switch f.out {
	case outFill:
		c.serveFill(w, r, f)
	case outObject:
		if f.stale {
			c.staleServed.Add(1)
		}
		m := &f.obj.Meta
		c.serveObject(w, r, f.obj, CurrentAge(m.Header, m.RequestTime, m.ResponseTime, c.now()))
	case outPass:
		if !lead {
			c.serveDirect(w, r, key)
			return
		}
		select {
		case p := <-f.pass:
			defer p.release()
			stop := context.AfterFunc(r.Context(), p.release)
			defer stop()
			c.servePass(w, r, key, p.resp)
		case <-r.Context().Done():
		}
	case outDirect:
		c.serveDirect(w, r, key)
	case outError:
		c.misses.Add(1)
		w.Header()["X-Cache"] = hdrMiss
		http.Error(w, f.msg, f.status)
		c.logRequest(r, key, "MISS", 0, errors.New(f.msg))
	}
}

// serveFill streams the body of a fill in progress, following the writer.
func (c *Cache) serveFill(w http.ResponseWriter, r *http.Request, f *flight) {
	c.misses.Add(1)
	m := &f.meta
	age := CurrentAge(m.Header, m.RequestTime, m.ResponseTime, c.now())
	off, n, body := c.writeHead(w, r, m.Header, m.Size, age, hdrMiss)
	if !body || n == 0 {
		c.logRequest(r, f.key, "MISS", 0, nil)
		return
	}
	var rd io.ReadCloser = &resumeReader{c: c, ctx: r.Context(), key: f.key, rd: f.w.NewReader(), hdr: m.Header, size: m.Size}
	defer rd.Close()
	// Unblock a reader waiting for upstream data when the client leaves.
	stop := context.AfterFunc(r.Context(), func() { rd.Close() })
	defer stop()
	if n > 0 && off+n == m.Size {
		// Hold the last byte back until the fill has committed, so that a
		// client that has the whole body finds the object stored when it
		// asks again (and one that sees the fill fail never gets it all).
		rd = &holdLast{rd: rd, left: m.Size}
	}
	c.stream(w, r, f.key, rd, off, n)
}

// holdLast reads a fill's body but returns its last byte only once the
// follower has reached io.EOF, which the store reports after Commit.
type holdLast struct {
	rd   io.ReadCloser
	left int64 // body bytes not yet returned
}

func (h *holdLast) Read(p []byte) (int, error) {
	if h.left <= 0 {
		return 0, io.EOF
	}
	if h.left > 1 {
		if int64(len(p)) >= h.left {
			p = p[:h.left-1]
		}
		n, err := h.rd.Read(p)
		h.left -= int64(n)
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return n, err
	}
	var last [1]byte
	if _, err := io.ReadFull(h.rd, last[:]); err != nil {
		return 0, err
	}
	// Wait for the end of the fill: EOF after Commit, an error otherwise.
	var probe [1]byte
	for {
		n, err := h.rd.Read(probe[:])
		if n > 0 {
			return 0, fmt.Errorf("httpcache: fill longer than its Content-Length")
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return 0, err
		}
	}
	h.left = 0
	p[0] = last[0]
	return 1, nil
}

func (h *holdLast) Close() error { return h.rd.Close() }

// stream copies body bytes [off, off+n) from rd to w (to EOF when n < 0),
// and breaks the connection if rd fails or ends early. rd follows a fill or
// an upstream body, so it can block: every piece is flushed at once rather
// than left in the server's buffer (the head included).
func (c *Cache) stream(w http.ResponseWriter, r *http.Request, key string, rd io.Reader, off, n int64) {
	fw := flushWriter{w, http.NewResponseController(w)}
	_ = fw.rc.Flush()
	var err error
	if off > 0 {
		_, err = io.CopyN(io.Discard, rd, off)
	}
	var sent int64
	if err == nil {
		buf := copyBufs.Get().(*[]byte)
		if n >= 0 {
			sent, err = io.CopyBuffer(fw, io.LimitReader(rd, n), *buf)
			if err == nil && sent < n {
				err = io.ErrUnexpectedEOF
			}
		} else {
			sent, err = io.CopyBuffer(fw, rd, *buf)
		}
		copyBufs.Put(buf)
	}
	c.bytesServed.Add(sent)
	c.logRequest(r, key, "MISS", sent, err)
	if err != nil {
		panic(http.ErrAbortHandler)
	}
}

// servePass sends an upstream response through without storing it.
func (c *Cache) servePass(w http.ResponseWriter, r *http.Request, key string, resp *http.Response) {
	defer resp.Body.Close()
	c.misses.Add(1)
	stripHopByHop(resp.Header)
	body := countingReader{resp.Body, &c.upstreamBytes}
	if resp.StatusCode == http.StatusOK {
		off, n, send := c.writeHead(w, r, resp.Header, resp.ContentLength, -1, hdrMiss)
		if send && n != 0 {
			c.stream(w, r, key, body, off, n)
		}
		return
	}
	h := w.Header()
	for k, v := range resp.Header {
		h[k] = v
	}
	h["X-Cache"] = hdrMiss
	delete(h, "Content-Length")
	if resp.ContentLength >= 0 {
		h["Content-Length"] = []string{strconv.FormatInt(resp.ContentLength, 10)}
	}
	w.WriteHeader(resp.StatusCode)
	if r.Method == http.MethodHead || !bodyAllowed(resp.StatusCode) || resp.ContentLength == 0 {
		c.logRequest(r, key, "MISS", 0, nil)
		return
	}
	c.stream(w, r, key, body, 0, resp.ContentLength)
}

// serveDirect fetches key for this request alone, bound to its context, and
// passes the answer through without storing it.
func (c *Cache) serveDirect(w http.ResponseWriter, r *http.Request, key string) {
	resp, err := c.up.Fetch(r.Context(), key, nil)
	if err != nil {
		if r.Context().Err() != nil {
			return
		}
		c.upstreamErrors.Add(1)
		c.misses.Add(1)
		c.log.Warn("httpcache: upstream fetch failed", "key", key, "err", err)
		w.Header()["X-Cache"] = hdrMiss
		http.Error(w, "upstream unreachable", http.StatusBadGateway)
		return
	}
	if resp.StatusCode >= 500 {
		c.upstreamErrors.Add(1)
		c.log.Warn("httpcache: upstream error status", "key", key, "status", resp.StatusCode)
	}
	c.servePass(w, r, key, resp)
}

func bodyAllowed(status int) bool {
	return status >= 200 && status != http.StatusNoContent && status != http.StatusNotModified
}

// drain reads a little of a body so the connection can be reused, then closes it.
func drain(b io.ReadCloser) {
	_, _ = io.CopyN(io.Discard, b, 4<<10)
	b.Close()
}

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// countingReader counts bytes read into n.
type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (cr countingReader) Read(p []byte) (int, error) {
	n, err := cr.r.Read(p)
	cr.n.Add(int64(n))
	return n, err
}

// flushWriter flushes after every write. It has no ReadFrom, so that
// io.CopyBuffer uses the given buffer and writes piece by piece.
type flushWriter struct {
	w  io.Writer
	rc *http.ResponseController
}

func (fw flushWriter) Write(p []byte) (int, error) {
	n, err := fw.w.Write(p)
	if err == nil {
		err = fw.rc.Flush()
		if errors.Is(err, http.ErrNotSupported) {
			err = nil
		}
	}
	return n, err
}
