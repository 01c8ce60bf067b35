package httpcache

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/blockcast/beacon/shared/objstore"
)

// discardRW is a ResponseWriter that keeps nothing, as cheap as possible.
type discardRW struct {
	h      http.Header
	status int
	n      int64
}

func (d *discardRW) Header() http.Header         { return d.h }
func (d *discardRW) WriteHeader(status int)      { d.status = status }
func (d *discardRW) Write(p []byte) (int, error) { d.n += int64(len(p)); return len(p), nil }

func benchHit(b *testing.B, size int) {
	body := strings.Repeat("b", size)
	up := UpstreamFunc(func(ctx context.Context, key string, cond http.Header) (*http.Response, error) {
		return &http.Response{
			StatusCode:    200,
			Header:        http.Header{"Cache-Control": {"max-age=3600"}, "Content-Type": {"application/octet-stream"}, "Etag": {`"bench"`}},
			ContentLength: int64(size),
			Body:          io.NopCloser(strings.NewReader(body)),
		}, nil
	})
	st, err := objstore.Open(filepath.Join(b.TempDir(), "bench.db"), objstore.Options{MaxBytes: 64 << 20})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	quiet := slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelWarn}))
	c, err := New(Options{Store: st, Upstream: up, Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	req := httptest.NewRequest("GET", "/bench/object.bin", nil)
	w := &discardRW{h: http.Header{}}
	c.ServeHTTP(w, req) // MISS: fills the store
	waitIdle(c)

	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		clear(w.h)
		w.n = 0
		c.ServeHTTP(w, req)
		if w.status != 200 || w.n != int64(size) || w.h.Get("X-Cache") != "HIT" {
			b.Fatalf("status %d, %d bytes, X-Cache %q", w.status, w.n, w.h.Get("X-Cache"))
		}
	}
}

func BenchmarkHit1KiB(b *testing.B) { benchHit(b, 1<<10) }
func BenchmarkHit1MiB(b *testing.B) { benchHit(b, 1<<20) }
