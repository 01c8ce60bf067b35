package beacon

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/blockcast/beacon/firmware/castclient"
	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/protocol"
)

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
