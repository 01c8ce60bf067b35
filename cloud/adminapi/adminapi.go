// Package adminapi is the client side of castd's operator API, shared by
// the castd subcommands that call a running castd (relays, contracts,
// receipts, report): one request with the operator's bearer token, castd's
// JSON error turned into a Go error, and the answer bounded.
package adminapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/blockcast/beacon/shared/protocol"
)

var (
	// ErrRefused wraps an answer other than 200 OK; castd's reason follows.
	ErrRefused = errors.New("castd refused the request")
	// ErrTooLarge is an answer over the caller's bound.
	ErrTooLarge = errors.New("castd's answer is too large")
)

// Client calls the operator API of one castd.
type Client struct {
	URL   string       // castd's base URL
	Token string       // castd's --admin-token
	HTTP  *http.Client // nil: http.DefaultClient
}

// Open sends method path (body, if not nil, as JSON) and returns the
// answer when it is 200 OK; the caller closes its body.
func (c *Client) Open(ctx context.Context, method, path string, body any) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(c.URL, "/")+path, rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot reach castd: %w", err)
	}
	if resp.StatusCode == http.StatusOK {
		return resp, nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var e protocol.Error
	if json.Unmarshal(b, &e) == nil && e.Error != "" {
		return nil, fmt.Errorf("%w: %s: %s", ErrRefused, resp.Status, e.Error)
	}
	return nil, fmt.Errorf("%w: %s (is %s a castd?)", ErrRefused, resp.Status, c.URL)
}

// Do is Open, then the whole answer, refused with ErrTooLarge over limit
// bytes.
func (c *Client) Do(ctx context.Context, method, path string, body any, limit int64) ([]byte, error) {
	resp, err := c.Open(ctx, method, path, body)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("reading castd's answer: %w", err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%w: more than %d bytes", ErrTooLarge, limit)
	}
	return b, nil
}
