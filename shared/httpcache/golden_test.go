package httpcache

import (
	"flag"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata golden files")

// TestGoldenHeads pins the exact response heads the cache sends (status,
// every header field, body length) for the main kinds of answer.
func TestGoldenHeads(t *testing.T) {
	o := newOrigin(t, fixed("0123456789abcdef", "Cache-Control", "max-age=300", "Etag", `"g1"`,
		"Content-Type", "text/plain; charset=utf-8", "Last-Modified", httpDate(t0.Add(-24*time.Hour)),
		"Keep-Alive", "timeout=5", "X-Origin", "yes"))
	e := newEnv(t, o.URL, 1<<20)
	steps := []struct {
		name, method string
		hdr          []string
		advance      time.Duration
	}{
		{"miss", "GET", nil, 0},
		{"hit", "GET", nil, 42 * time.Second},
		{"head", "HEAD", nil, 0},
		{"range", "GET", []string{"Range", "bytes=4-7"}, 0},
		{"suffix range", "GET", []string{"Range", "bytes=-3"}, 0},
		{"unsatisfiable", "GET", []string{"Range", "bytes=16-"}, 0},
		{"if-none-match", "GET", []string{"If-None-Match", `"g1"`}, 0},
		{"if-modified-since", "GET", []string{"If-Modified-Since", httpDate(t0)}, 0},
	}
	var out strings.Builder
	for _, s := range steps {
		e.clock.Advance(s.advance)
		w := httptest.NewRecorder()
		r := httptest.NewRequest(s.method, "/golden/object.txt", nil)
		for i := 0; i+1 < len(s.hdr); i += 2 {
			r.Header.Set(s.hdr[i], s.hdr[i+1])
		}
		e.cache.ServeHTTP(w, r)
		e.waitIdle()
		fmt.Fprintf(&out, "== %s: %s %v\n%s", s.name, s.method, s.hdr, renderHead(w.Result().StatusCode, w.Header(), w.Body.Len()))
	}
	path := filepath.Join("testdata", "heads.golden")
	if *update {
		if err := os.WriteFile(path, []byte(out.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := out.String(); got != string(want) {
		t.Errorf("response heads differ from %s (run with -update to accept):\n%s", path, got)
	}
}

func renderHead(status int, h http.Header, bodyLen int) string {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	fmt.Fprintf(&b, "%d %s\n", status, http.StatusText(status))
	for _, k := range keys {
		for _, v := range h[k] {
			fmt.Fprintf(&b, "%s: %s\n", k, v)
		}
	}
	fmt.Fprintf(&b, "(body %d bytes)\n\n", bodyLen)
	return b.String()
}
