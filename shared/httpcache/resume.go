package httpcache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/blockcast/beacon/shared/objstore"
)

// passOnStoreFailure reports whether a fill that failed with err failed
// because of the store, not the upstream: its followers then get the rest
// of the body from the upstream, uncached, instead of a cut response.
func passOnStoreFailure(err error) bool {
	return errors.Is(err, objstore.ErrNoSpace) || errors.Is(err, objstore.ErrTooLarge)
}

// resumeReader follows a fill; if the store gives up on it (the file
// system is full, or the body outgrew the cache), it fetches the rest of
// the body from the upstream with a Range request bound to the fill's
// validator, so the client still gets the whole, correct body.
type resumeReader struct {
	c    *Cache
	ctx  context.Context
	key  string
	rd   io.ReadCloser // the fill's follower
	hdr  http.Header   // the fill's stored header (validators)
	size int64         // body size, -1 if unknown
	pos  int64         // body bytes returned so far

	up io.ReadCloser // the upstream body once resumed
}

func (r *resumeReader) Read(p []byte) (int, error) {
	if r.up != nil {
		n, err := r.up.Read(p)
		r.pos += int64(n)
		return n, err
	}
	n, err := r.rd.Read(p)
	r.pos += int64(n)
	if err == nil || !passOnStoreFailure(err) {
		return n, err
	}
	r.c.log.Info("httpcache: cache cannot store the object; passing the rest through from the upstream",
		"key", r.key, "offset", r.pos, "err", err)
	r.rd.Close()
	body, rerr := r.resume()
	if rerr != nil {
		return n, fmt.Errorf("httpcache: resuming %q at %d after %v: %w", r.key, r.pos, err, rerr)
	}
	r.up = body
	r.c.passedOn.Add(1)
	if n > 0 {
		return n, nil
	}
	return r.Read(p)
}

func (r *resumeReader) Close() error {
	r.rd.Close()
	if r.up != nil {
		return r.up.Close()
	}
	return nil
}

// resume fetches the body from r.pos on.
func (r *resumeReader) resume() (io.ReadCloser, error) {
	etag := firstValue(r.hdr, "Etag")
	var cond http.Header
	if r.pos > 0 {
		cond = http.Header{"Range": {"bytes=" + strconv.FormatInt(r.pos, 10) + "-"}}
		// If-Range: the rest must come from the same representation.
		switch lm := firstValue(r.hdr, "Last-Modified"); {
		case etag != "" && !strings.HasPrefix(etag, "W/"):
			cond["If-Range"] = []string{etag}
		case lm != "":
			cond["If-Range"] = []string{lm}
		}
	}
	resp, err := r.c.up.Fetch(r.ctx, r.key, cond)
	if err != nil {
		return nil, err
	}
	body := io.ReadCloser(countingBody{resp.Body, &r.c.upstreamBytes})
	same := etag == "" || firstValue(resp.Header, "Etag") == etag
	switch {
	case resp.StatusCode == http.StatusPartialContent && r.pos > 0:
		start, total, ok := parseContentRange(resp.Header.Get("Content-Range"))
		if !ok || start != r.pos || (r.size >= 0 && total != r.size) || !same {
			body.Close()
			return nil, fmt.Errorf("upstream answered range %q for bytes %d- of %d", resp.Header.Get("Content-Range"), r.pos, r.size)
		}
		return body, nil
	case resp.StatusCode == http.StatusOK:
		if !same || (r.size >= 0 && resp.ContentLength >= 0 && resp.ContentLength != r.size) {
			body.Close()
			return nil, errors.New("the upstream's representation changed")
		}
		if _, err := io.CopyN(io.Discard, body, r.pos); err != nil {
			body.Close()
			return nil, fmt.Errorf("skipping the %d bytes already sent: %w", r.pos, err)
		}
		return body, nil
	case resp.StatusCode == http.StatusRequestedRangeNotSatisfiable && r.pos > 0:
		// The store failed after the whole body was written (at commit).
		_, total, _ := parseContentRange(resp.Header.Get("Content-Range"))
		body.Close()
		if total == r.pos && (r.size < 0 || r.size == total) {
			return io.NopCloser(strings.NewReader("")), nil
		}
		return nil, fmt.Errorf("upstream answered %s for bytes %d-", resp.Status, r.pos)
	default:
		drain(resp.Body)
		return nil, fmt.Errorf("upstream answered %s", resp.Status)
	}
}

// parseContentRange parses "bytes START-END/TOTAL" or "bytes */TOTAL"
// (start -1).
func parseContentRange(v string) (start, total int64, ok bool) {
	rest, found := strings.CutPrefix(v, "bytes ")
	if !found {
		return 0, 0, false
	}
	rng, tot, found := strings.Cut(rest, "/")
	if !found {
		return 0, 0, false
	}
	total, err := strconv.ParseInt(tot, 10, 64)
	if err != nil || total < 0 {
		return 0, 0, false
	}
	if rng == "*" {
		return -1, total, true
	}
	s, _, found := strings.Cut(rng, "-")
	if !found {
		return 0, 0, false
	}
	start, err = strconv.ParseInt(s, 10, 64)
	if err != nil || start < 0 {
		return 0, 0, false
	}
	return start, total, true
}

// countingBody is a countingReader that closes.
type countingBody struct {
	io.ReadCloser
	n interface{ Add(int64) int64 }
}

func (b countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}
