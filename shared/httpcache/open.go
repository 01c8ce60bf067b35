package httpcache

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/blockcast/beacon/shared/objstore"
)

// ErrUnavailable is wrapped by Open's errors when the upstream gave no
// object to store (unreachable, an error status, a fill cut midway).
var ErrUnavailable = errors.New("httpcache: object unavailable")

// Open returns key's stored response, whole and fresh, for a caller that
// needs the body as an io.ReaderAt with its size and header (castd sends
// it by multicast) rather than as an HTTP answer. A missing or stale
// object is fetched first through the same fill that concurrent requests
// for key share, and Open waits until that fill has committed. expires is
// when the response stops being fresh.
//
// Errors: ErrNotStorable when the upstream's answer may not be stored
// (a status other than 200 or 5xx, no-store, no freshness lifetime, too
// large for the store), ErrUnavailable when the upstream failed (5xx,
// unreachable) or the fill was cut, ErrClosed
// after Close, and ctx's error when it ends first; a fill Open started
// goes on without it.
func (c *Cache) Open(ctx context.Context, key string) (obj *objstore.Object, expires time.Time, err error) {
	key, err = cleanKey(key)
	if err != nil {
		return nil, time.Time{}, err
	}
	if obj, exp, ok := c.fresh(key); ok {
		return obj, exp, nil
	}
	// A request made of nothing but ctx: no header reaches storability.
	r, err := http.NewRequestWithContext(ctx, http.MethodGet, "/", nil)
	if err != nil {
		return nil, time.Time{}, err
	}
	f, lead, stored := c.join(key, r, cacheControl{maxAge: -1, sMaxAge: -1, staleIfError: -1, minFresh: -1, maxStale: -1})
	if f == nil {
		if stored != nil {
			if exp, ok := c.freshUntil(stored); ok {
				return stored, exp, nil
			}
		}
		return nil, time.Time{}, ErrClosed
	}
	select {
	case <-f.done:
	case <-ctx.Done():
		return nil, time.Time{}, ctx.Err()
	}
	switch f.out {
	case outFill:
		select {
		case <-f.filled:
		case <-ctx.Done():
			return nil, time.Time{}, ctx.Err()
		}
	case outObject:
		// Revalidated (fresh again) or a stale copy served on error.
		if exp, ok := c.freshUntil(f.obj); ok {
			return f.obj, exp, nil
		}
		return nil, time.Time{}, fmt.Errorf("%w: upstream failed; only a stale copy is stored", ErrUnavailable)
	case outPass:
		// Only the leader is handed the response (and must take it, or
		// the flight waits for its context); nothing was stored.
		if !lead {
			return nil, time.Time{}, fmt.Errorf("%w: the upstream's response is not stored", ErrNotStorable)
		}
		select {
		case p := <-f.pass:
			status := p.resp.StatusCode
			p.resp.Body.Close()
			p.release()
			if status >= 500 {
				return nil, time.Time{}, fmt.Errorf("%w: upstream answered %d", ErrUnavailable, status)
			}
			return nil, time.Time{}, fmt.Errorf("%w: upstream answered %d with a response the cache does not keep", ErrNotStorable, status)
		case <-ctx.Done():
			return nil, time.Time{}, ctx.Err()
		}
	case outDirect:
		return nil, time.Time{}, fmt.Errorf("%w: stored object vanished", ErrUnavailable)
	default: // outError
		return nil, time.Time{}, fmt.Errorf("%w: %d %s", ErrUnavailable, f.status, f.msg)
	}
	obj, exp, ok := c.fresh(key)
	if !ok {
		if obj == nil {
			return nil, time.Time{}, fmt.Errorf("%w: the fill of %s did not commit", ErrUnavailable, key)
		}
		return nil, time.Time{}, fmt.Errorf("%w: the upstream's response is not fresh (no lifetime)", ErrNotStorable)
	}
	return obj, exp, nil
}

// fresh returns key's stored object if there is one (ok when it is fresh).
func (c *Cache) fresh(key string) (*objstore.Object, time.Time, bool) {
	obj, err := c.store.Get(key)
	if err != nil {
		return nil, time.Time{}, false
	}
	exp, ok := c.freshUntil(obj)
	return obj, exp, ok
}

// freshUntil reports when obj stops being fresh, and whether it is fresh now.
func (c *Cache) freshUntil(obj *objstore.Object) (time.Time, bool) {
	m := &obj.Meta
	now := c.now()
	st := stateOf(m.Status, m.Header, m.RequestTime, m.ResponseTime, now)
	if st.cc.has(ccNoCache) || st.age >= st.lifetime {
		return time.Time{}, false
	}
	return now.Add(st.lifetime - st.age), true
}
