package castclient

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/protocol"
)

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Duration
	}{
		{"", 0},
		{"7", 7 * time.Second},
		{" 10 ", 10 * time.Second},
		{"0", 0},
		{"-5", 0},
		{"1.5", 0},
		{"soon", 0},
		{"99999999", maxRetryAfter},
		{"18446744073709551616", 0}, // does not fit: unreadable, not huge
		{now.Add(30 * time.Second).Format(http.TimeFormat), 30 * time.Second},
		{now.Add(-time.Minute).Format(http.TimeFormat), 0},
		{now.Add(72 * time.Hour).Format(http.TimeFormat), maxRetryAfter},
	} {
		if got := parseRetryAfter(tc.in, now); got != tc.want {
			t.Errorf("parseRetryAfter(%q) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

// answer serves every request with status, Retry-After and a castd error.
func answer(t *testing.T, status int, retryAfter string) *Client {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if retryAfter != "" {
			w.Header().Set("Retry-After", retryAfter)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		w.Write([]byte(`{"error":"too many new registrations from 192.0.2.1"}`))
	}))
	t.Cleanup(srv.Close)
	kp, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(srv.URL, kp)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// 429 and 503 mean "later", with the wait castd named; other 4xx mean
// "not like this" (ErrRefused), as before.
func TestRegisterAnswers(t *testing.T) {
	for _, tc := range []struct {
		status     int
		retryAfter string
		later      bool
		after      time.Duration
	}{
		{http.StatusTooManyRequests, "10", true, 10 * time.Second},
		{http.StatusTooManyRequests, "", true, 0},
		{http.StatusServiceUnavailable, "3", true, 3 * time.Second},
		{http.StatusBadRequest, "10", false, 0},
		{http.StatusForbidden, "", false, 0},
	} {
		c := answer(t, tc.status, tc.retryAfter)
		_, err := c.Register(context.Background(), protocol.Registration{Role: protocol.RoleBeacon, LANURL: "http://192.168.1.2:8081"})
		if err == nil {
			t.Fatalf("%d: no error", tc.status)
		}
		if !strings.Contains(err.Error(), "too many new registrations") {
			t.Errorf("%d: error %q lacks castd's message", tc.status, err)
		}
		if got := errors.Is(err, ErrRetryLater); got != tc.later {
			t.Errorf("%d: ErrRetryLater %v, want %v", tc.status, got, tc.later)
		}
		if got := errors.Is(err, ErrRefused); got == tc.later {
			t.Errorf("%d: ErrRefused %v, want %v", tc.status, got, !tc.later)
		}
		after, ok := RetryAfter(err)
		if after != tc.after || ok != (tc.after > 0) {
			t.Errorf("%d Retry-After %q: RetryAfter = %s %v, want %s", tc.status, tc.retryAfter, after, ok, tc.after)
		}
	}
}
