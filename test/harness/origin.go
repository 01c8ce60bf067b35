package harness

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Origin is a real HTTP origin with generated, deterministic content:
//
//	/obj/<size>[/anything]       <size> bytes (e.g. 1024, 4M), public, max-age=3600, ETag
//	/slow/<size>[/anything]      the same bytes, sent 64 KiB every 20 ms
//	/nostore/<size>[/anything]   Cache-Control: no-store
//	/short/<size>[/anything]     max-age=1 (goes stale quickly; revalidates by ETag)
//
// It counts requests per path so tests can see what reached the origin.
type Origin struct {
	URL  string
	srv  *http.Server
	ln   net.Listener
	mu   sync.Mutex
	hits map[string]int
	cond map[string]int // conditional requests answered 304
}

// StartOrigin serves on a free loopback port.
func StartOrigin() (*Origin, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	return ServeOrigin(ln), nil
}

// ServeOrigin serves on ln, e.g. a listener made inside a network
// namespace.
func ServeOrigin(ln net.Listener) *Origin {
	o := &Origin{URL: "http://" + ln.Addr().String(), ln: ln, hits: map[string]int{}, cond: map[string]int{}}
	o.srv = &http.Server{Handler: o, ReadHeaderTimeout: 10 * time.Second}
	go o.srv.Serve(ln)
	return o
}

// Close stops the origin.
func (o *Origin) Close() error { return o.srv.Close() }

// Hits is how many requests for path reached the origin.
func (o *Origin) Hits(path string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.hits[path]
}

// NotModified is how many conditional requests for path were answered 304.
func (o *Origin) NotModified(path string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.cond[path]
}

// ParseSize reads the sizes Origin paths use: "1024", "64k", "4M".
func ParseSize(s string) (int64, error) {
	mult := int64(1)
	switch {
	case strings.HasSuffix(s, "k"):
		mult, s = 1<<10, strings.TrimSuffix(s, "k")
	case strings.HasSuffix(s, "M"):
		mult, s = 1<<20, strings.TrimSuffix(s, "M")
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > 1<<40/mult {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return n * mult, nil
}

// Content returns a reader of the deterministic body for path and its length.
func Content(path string, size int64) io.Reader {
	seed := sha256.Sum256([]byte(path))
	return io.LimitReader(rand.NewChaCha8(seed), size)
}

// ContentSHA256 is the hex SHA-256 of Content(path, size).
func ContentSHA256(path string, size int64) string {
	h := sha256.New()
	io.Copy(h, Content(path, size))
	return hex.EncodeToString(h.Sum(nil))
}

func (o *Origin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	o.mu.Lock()
	o.hits[r.URL.Path]++
	o.mu.Unlock()
	parts := strings.SplitN(strings.TrimPrefix(r.URL.Path, "/"), "/", 3)
	if len(parts) < 2 {
		http.NotFound(w, r)
		return
	}
	size, err := ParseSize(parts[1])
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	etag := `"` + ContentSHA256(r.URL.Path, min(size, 1<<20))[:16] + strconv.FormatInt(size, 16) + `"`
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("ETag", etag)
	h.Set("Last-Modified", "Mon, 02 Nov 2026 10:00:00 GMT")
	switch parts[0] {
	case "obj", "slow":
		h.Set("Cache-Control", "public, max-age=3600")
	case "nostore":
		h.Set("Cache-Control", "no-store")
	case "short":
		h.Set("Cache-Control", "max-age=1")
	default:
		http.NotFound(w, r)
		return
	}
	if inm := r.Header.Get("If-None-Match"); inm != "" && inm == etag {
		o.mu.Lock()
		o.cond[r.URL.Path]++
		o.mu.Unlock()
		w.WriteHeader(http.StatusNotModified)
		return
	}
	h.Set("Content-Length", strconv.FormatInt(size, 10))
	body := Content(r.URL.Path, size)
	if parts[0] != "slow" {
		io.Copy(w, body)
		return
	}
	buf := make([]byte, 64<<10)
	for {
		n, err := io.ReadFull(body, buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return
			}
			w.(http.Flusher).Flush()
		}
		if err != nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}
