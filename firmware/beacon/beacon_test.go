package beacon

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/blockcast/beacon/firmware/castclient"
	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/protocol"
)

func TestParseChannelSpec(t *testing.T) {
	tests := []struct {
		in      string
		src     string
		grp     string
		relay   string
		reemit  bool
		wantErr string
	}{
		{in: "198.51.100.1@232.1.1.1", src: "198.51.100.1", grp: "232.1.1.1"},
		{in: " 198.51.100.1@232.1.1.1  reemit ", src: "198.51.100.1", grp: "232.1.1.1", reemit: true},
		{in: "198.51.100.1@232.1.1.1 relay=203.0.113.5", src: "198.51.100.1", grp: "232.1.1.1", relay: "203.0.113.5:2268"},
		{in: "2001:db8::1@ff3e::8000:1 relay=[2001:db8::2]:4000", src: "2001:db8::1", grp: "ff3e::8000:1", relay: "[2001:db8::2]:4000"},
		{in: "", wantErr: "empty"},
		{in: "198.51.100.1", wantErr: "SOURCE@GROUP"},
		{in: "x@232.1.1.1", wantErr: "source"},
		{in: "198.51.100.1@239.1.1.1", wantErr: "not a source-specific"},
		{in: "198.51.100.1@232.1.1.1 loud", wantErr: "unknown option"},
		{in: "198.51.100.1@232.1.1.1 relay=nowhere", wantErr: "relay"},
	}
	for _, tc := range tests {
		spec, err := ParseChannelSpec(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%q: err %v, want %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		if spec.Channel.Source != netip.MustParseAddr(tc.src) || spec.Channel.Group != netip.MustParseAddr(tc.grp) || spec.Reemit != tc.reemit {
			t.Errorf("%q: got %+v", tc.in, spec)
		}
		if (tc.relay == "") != !spec.Relay.IsValid() || (tc.relay != "" && spec.Relay.String() != tc.relay) {
			t.Errorf("%q: relay %v, want %q", tc.in, spec.Relay, tc.relay)
		}
	}
}

func TestCastKeyPinning(t *testing.T) {
	dir := t.TempDir()
	b := &Beacon{opts: Options{StateDir: dir}, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	first, _ := identity.Generate()
	other, _ := identity.Generate()
	if _, err := b.checkCastKey(first.ID()); err != nil {
		t.Fatalf("first contact: %v", err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, castKeyFile))
	if err != nil || strings.TrimSpace(string(raw)) != first.ID() {
		t.Fatalf("not pinned: %q %v", raw, err)
	}
	if _, err := b.checkCastKey(first.ID()); err != nil {
		t.Fatalf("same key again: %v", err)
	}
	if _, err := b.checkCastKey(other.ID()); err == nil || !strings.Contains(err.Error(), "trusts") {
		t.Fatalf("another castd key accepted: %v", err)
	}
	if _, err := b.checkCastKey("not-a-key"); err == nil {
		t.Fatal("malformed key accepted")
	}
	// A configured key wins over learning.
	b2 := &Beacon{opts: Options{StateDir: t.TempDir(), CastKey: other.ID()}, log: b.log}
	if _, err := b2.checkCastKey(first.ID()); err == nil {
		t.Fatal("key differing from --cast-key accepted")
	}
}

// A 429 with Retry-After makes the beacon wait at least that long (and up
// to a quarter more, spreading a refused fleet); other failures wait the
// backoff.
func TestRetryWait(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "10")
		http.Error(w, `{"error":"too many new registrations"}`, http.StatusTooManyRequests)
	}))
	defer srv.Close()
	kp, _ := identity.Generate()
	c, err := castclient.New(srv.URL, kp)
	if err != nil {
		t.Fatal(err)
	}
	_, limited := c.Register(context.Background(), protocol.Registration{Role: protocol.RoleBeacon, LANURL: "http://192.168.1.2:8081"})
	if limited == nil {
		t.Fatal("no error from a 429")
	}
	other := errors.New("connection refused")
	for i := 0; i < 200; i++ {
		if w := retryWait(limited, time.Second); w < 10*time.Second || w > 12500*time.Millisecond {
			t.Fatalf("after a 429 with Retry-After 10: wait %s, want 10s..12.5s", w)
		}
		if w := retryWait(limited, 32*time.Second); w < 32*time.Second || w > 48*time.Second {
			t.Fatalf("backoff longer than Retry-After: wait %s, want 32s..48s", w)
		}
		if w := retryWait(other, time.Second); w < time.Second || w > 1500*time.Millisecond {
			t.Fatalf("other failure: wait %s, want 1s..1.5s", w)
		}
	}
}
