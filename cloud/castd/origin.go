package castd

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// originUpstream fetches content keys from the origin for the mid-tier cache.
type originUpstream struct {
	base   *url.URL
	client *http.Client
	via    string
}

func newOriginUpstream(base *url.URL, version string) *originUpstream {
	tr := &http.Transport{
		Proxy:                 nil, // the origin is configured; never go through an environment proxy
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
		// The cache stores identity bodies; asking for gzip would make the
		// transport decode it and drop Content-Length.
		DisableCompression: true,
	}
	return &originUpstream{
		base: base,
		// No overall timeout: bodies stream for as long as they take; the
		// cache bounds a fill with its own context.
		client: &http.Client{
			Transport: tr,
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse // a redirect is the origin's answer to pass on
			},
		},
		via: "1.1 castd/" + version,
	}
}

// Fetch implements httpcache.Upstream.
func (o *originUpstream) Fetch(ctx context.Context, key string, cond http.Header) (*http.Response, error) {
	u := joinURL(o.base, key)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("origin request %s: %w", u, err)
	}
	for k, vs := range cond {
		req.Header[k] = vs
	}
	req.Header.Set("Via", o.via)
	resp, err := o.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("origin: %w", err)
	}
	return resp, nil
}

// joinURL appends a validated content key (path and optional query) to base.
func joinURL(base *url.URL, key string) string {
	return strings.TrimSuffix(base.String(), "/") + key
}
