package castd

import (
	"net"
	"net/http"
	"time"

	"github.com/blockcast/beacon/shared/httpcache"
)

// newOriginUpstream is the mid-tier cache's upstream: the configured origin.
func newOriginUpstream(origin string) (*httpcache.HTTPUpstream, error) {
	tr := &http.Transport{
		Proxy:                 nil, // the origin is configured; never go through an environment proxy
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
	}
	// No overall timeout: bodies stream for as long as they take; the cache
	// bounds a fill with its own context. A redirect is the origin's answer
	// to pass on, not to follow.
	client := &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}
	return httpcache.NewHTTPUpstream(origin, client)
}
