package httpcache

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"github.com/blockcast/beacon/shared/protocol"
)

// Upstream fetches a content key from the next tier. cond, when non-nil,
// carries If-None-Match / If-Modified-Since for revalidation.
// Implementations never ask for a content coding (the cache stores identity
// bodies). The caller closes the body.
type Upstream interface {
	Fetch(ctx context.Context, key string, cond http.Header) (*http.Response, error)
}

// UpstreamFunc adapts a function to Upstream.
type UpstreamFunc func(ctx context.Context, key string, cond http.Header) (*http.Response, error)

// Fetch calls f.
func (f UpstreamFunc) Fetch(ctx context.Context, key string, cond http.Header) (*http.Response, error) {
	return f(ctx, key, cond)
}

// HTTPUpstream is an Upstream that GETs BaseURL+key, for an origin that
// needs nothing but plain HTTP (castd's mid-tier in front of an origin).
type HTTPUpstream struct {
	base   string
	client *http.Client
}

// NewHTTPUpstream returns an upstream for base ("http://origin:8080" or with
// a path prefix, no query). client nil means http.DefaultClient.
func NewHTTPUpstream(base string, client *http.Client) (*HTTPUpstream, error) {
	if _, err := protocol.ParseBaseURL(base); err != nil {
		return nil, fmt.Errorf("httpcache: upstream URL: %w", err)
	}
	if client == nil {
		client = http.DefaultClient
	}
	return &HTTPUpstream{base: strings.TrimSuffix(base, "/"), client: client}, nil
}

// Fetch implements Upstream.
func (u *HTTPUpstream) Fetch(ctx context.Context, key string, cond http.Header) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.base+key, nil)
	if err != nil {
		return nil, fmt.Errorf("httpcache: upstream request: %w", err)
	}
	for k, v := range cond {
		req.Header[k] = v
	}
	// Stop net/http's transparent gzip: it would hide the length and the
	// stored body must be what any client can take.
	req.Header.Set("Accept-Encoding", "identity")
	return u.client.Do(req)
}
