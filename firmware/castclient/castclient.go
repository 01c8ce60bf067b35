// Package castclient is the beacon's client of castd: signed registration,
// the whoami check, and signed object fetches that fill the personal cache.
package castclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/mcproto"
	"github.com/blockcast/beacon/shared/protocol"
	"github.com/blockcast/beacon/shared/signedreq"
)

// ErrRefused wraps a 4xx answer from castd: retrying the same request will not help.
var ErrRefused = errors.New("castd refused the request")

// ErrNotRegistered is returned by Fetch when castd does not know this node
// and registering again did not help (or failed).
var ErrNotRegistered = errors.New("castd does not know this node")

// ErrRetryLater wraps a 429 or 503 answer: castd is limiting or busy, and
// the same request will do later; RetryAfter says when castd asked for.
var ErrRetryLater = errors.New("castd asks to retry later")

// maxRetryAfter caps the wait castd may ask for, so that a wrong or hostile
// header cannot park the beacon for days.
const maxRetryAfter = time.Hour

type retryLaterError struct {
	after time.Duration // 0: castd named no time
	err   error
}

func (e *retryLaterError) Error() string   { return e.err.Error() }
func (e *retryLaterError) Unwrap() []error { return []error{ErrRetryLater, e.err} }

// RetryAfter returns the wait castd asked for in its Retry-After header
// (at most an hour) when err wraps ErrRetryLater; false when it did not
// ask, or named no time.
func RetryAfter(err error) (time.Duration, bool) {
	var e *retryLaterError
	if errors.As(err, &e) && e.after > 0 {
		return e.after, true
	}
	return 0, false
}

// parseRetryAfter reads a Retry-After value: delay seconds or an HTTP date
// (RFC 9110, 10.2.3); zero if absent or unreadable.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	var d time.Duration
	if secs, err := strconv.ParseUint(v, 10, 32); err == nil {
		d = time.Duration(secs) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	}
	return min(max(d, 0), maxRetryAfter)
}

// Client talks to one castd.
type Client struct {
	base   *url.URL
	key    *identity.Keypair
	client *http.Client
	now    func() time.Time

	// reregister, when set, registers the node again; Fetch calls it when
	// castd answers that it does not know the node, then retries once.
	reregister func(context.Context) error
	// mc, when set, receives castd's multicast offers.
	mc OfferTaker
}

// SetReregister sets how Fetch gets the node registered again when castd
// has forgotten it (its registry lost, or restored from an old backup). fn
// must be safe for concurrent use and rate-limit itself.
func (c *Client) SetReregister(fn func(context.Context) error) { c.reregister = fn }

// New returns a client of the castd at baseURL that signs with key.
func New(baseURL string, key *identity.Keypair) (*Client, error) {
	u, err := protocol.ParseBaseURL(baseURL)
	if err != nil {
		return nil, fmt.Errorf("castd URL: %w", err)
	}
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost:   16,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 60 * time.Second,
		DisableCompression:    true, // the cache stores identity bodies
	}
	return &Client{
		base: u,
		key:  key,
		client: &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		}},
		now: time.Now,
	}, nil
}

func (c *Client) url(path string) string {
	return strings.TrimSuffix(c.base.String(), "/") + path
}

func (c *Client) newSigned(ctx context.Context, method, path string, body []byte) (*http.Request, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.url(path), rd)
	if err != nil {
		return nil, err
	}
	if err := signedreq.Sign(req, body, c.key, c.now()); err != nil {
		return nil, err
	}
	return req, nil
}

// apiError turns a non-2xx answer into an error carrying castd's message.
func apiError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	var e protocol.Error
	msg := strings.TrimSpace(string(b))
	if json.Unmarshal(b, &e) == nil && e.Error != "" {
		msg = e.Error
	}
	err := fmt.Errorf("castd answered %s: %s", resp.Status, msg)
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
		return &retryLaterError{after: parseRetryAfter(resp.Header.Get("Retry-After"), time.Now()), err: err}
	}
	if resp.StatusCode >= 400 && resp.StatusCode < 500 {
		return fmt.Errorf("%w: %w", ErrRefused, err)
	}
	return err
}

// Register sends a signed registration.
func (c *Client) Register(ctx context.Context, reg protocol.Registration) (protocol.RegistrationReply, error) {
	var reply protocol.RegistrationReply
	body, err := json.Marshal(reg)
	if err != nil {
		return reply, err
	}
	req, err := c.newSigned(ctx, http.MethodPost, protocol.PathRegister, body)
	if err != nil {
		return reply, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.client.Do(req)
	if err != nil {
		return reply, fmt.Errorf("register: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return reply, fmt.Errorf("register: %w", apiError(resp))
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&reply); err != nil {
		return reply, fmt.Errorf("register: bad reply: %w", err)
	}
	return reply, nil
}

// Whoami asks castd which public address it sees this beacon at.
func (c *Client) Whoami(ctx context.Context) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url(protocol.PathWhoami), nil)
	if err != nil {
		return "", err
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return "", fmt.Errorf("whoami: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("whoami: %w", apiError(resp))
	}
	var w protocol.Whoami
	if err := json.NewDecoder(io.LimitReader(resp.Body, 4096)).Decode(&w); err != nil {
		return "", fmt.Errorf("whoami: bad reply: %w", err)
	}
	return w.IP, nil
}

// Fetch implements httpcache.Upstream: a signed GET of a content key through
// castd's mid-tier cache. Non-200 answers are returned as responses (the
// cache passes them on); only transport failures are errors.
//
// With a multicast receiver set (SetMulticast) and ready, a GET without
// Range asks castd for a multicast offer (header Blockcast-Multicast: 1);
// an offer is handed to the receiver, whose response streams the object as
// it is received. An offer the receiver refuses (bad signature, replayed
// manifest, ...) is followed by the same GET without the header: unicast.
func (c *Client) Fetch(ctx context.Context, key string, cond http.Header) (*http.Response, error) {
	mc := c.mc != nil && len(cond["Range"]) == 0 && c.mc.Ready()
	resp, err := c.fetch(ctx, key, cond, mc)
	if err != nil || !IsOffer(resp) {
		return resp, err
	}
	if !mc {
		// Stored as the object it would be served to end users: never.
		drainClose(resp.Body)
		return nil, fmt.Errorf("fetch from castd: %w: a multicast offer the beacon did not ask for", ErrRefused)
	}
	out, err := c.mc.Take(ctx, key, resp)
	if err == nil {
		return out, nil
	}
	return c.fetch(ctx, key, cond, false)
}

// HeaderMulticast asks castd for a multicast offer (protocol.HeaderMulticast).
const HeaderMulticast = protocol.HeaderMulticast

// IsOffer reports whether resp is castd's multicast offer.
func IsOffer(resp *http.Response) bool {
	if resp.StatusCode != http.StatusOK {
		return false
	}
	ct, _, _ := strings.Cut(resp.Header.Get("Content-Type"), ";")
	return strings.EqualFold(strings.TrimSpace(ct), mcproto.OfferType)
}

// OfferTaker receives objects castd offers by multicast (*mcrecv.Receiver).
type OfferTaker interface {
	// Ready reports whether to ask castd for offers now.
	Ready() bool
	// Take turns an offer (it closes the offer's body) into the object's
	// response; an error means fetch by unicast instead.
	Take(ctx context.Context, key string, offer *http.Response) (*http.Response, error)
}

// SetMulticast makes Fetch ask castd for multicast offers and hand them
// to t. Call it before the first Fetch.
func (c *Client) SetMulticast(t OfferTaker) { c.mc = t }

func (c *Client) fetch(ctx context.Context, key string, cond http.Header, multicast bool) (*http.Response, error) {
	newReq := func() (*http.Request, error) {
		req, err := c.newSigned(ctx, http.MethodGet, protocol.PathObjectPrefix+key, nil)
		if err != nil {
			return nil, err
		}
		for k, vs := range cond {
			req.Header[k] = vs
		}
		if multicast {
			req.Header.Set(HeaderMulticast, "1")
		}
		return req, nil
	}
	req, err := newReq()
	if err != nil {
		return nil, err
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch from castd: %w", err)
	}
	if c.reregister == nil || !NotRegistered(resp) {
		return resp, nil
	}
	// castd has forgotten this node: register again, and retry once so
	// that the end user gets the object rather than castd's 403.
	drainClose(resp.Body)
	if err := c.reregister(ctx); err != nil {
		return nil, fmt.Errorf("%w: registering again: %w", ErrNotRegistered, err)
	}
	if req, err = newReq(); err != nil {
		return nil, err
	}
	if resp, err = c.client.Do(req); err != nil {
		return nil, fmt.Errorf("fetch from castd: %w", err)
	}
	if NotRegistered(resp) {
		drainClose(resp.Body)
		return nil, fmt.Errorf("%w: refused again after registering", ErrNotRegistered)
	}
	return resp, nil
}

// NotRegistered reports whether resp is castd's answer to a node it does
// not know: a 403 with HeaderError not-registered, or, from a castd that
// predates the header, its message. It may read the start of the body, and
// leaves resp.Body readable from the start.
func NotRegistered(resp *http.Response) bool {
	if resp.StatusCode != http.StatusForbidden {
		return false
	}
	if resp.Header.Get(protocol.HeaderError) == protocol.ErrNotRegistered {
		return true
	}
	head, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	resp.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(head), resp.Body), resp.Body}
	return bytes.Contains(head, []byte("is not registered"))
}

func drainClose(b io.ReadCloser) {
	io.Copy(io.Discard, io.LimitReader(b, 4<<10))
	b.Close()
}

// Check is a signed whoami: the public address castd sees this node at and
// whether castd knows it (Registered nil from a castd that does not say).
func (c *Client) Check(ctx context.Context) (protocol.Whoami, error) {
	var w protocol.Whoami
	req, err := c.newSigned(ctx, http.MethodGet, protocol.PathWhoami, nil)
	if err != nil {
		return w, err
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return w, fmt.Errorf("whoami: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return w, fmt.Errorf("whoami: %w", apiError(resp))
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 4096)).Decode(&w); err != nil {
		return w, fmt.Errorf("whoami: bad reply: %w", err)
	}
	return w, nil
}
