package castd

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"testing"

	"github.com/blockcast/beacon/shared/protocol"
)

// TestDebugProfile: the operator reads castd's heap as a gzipped pprof
// profile; a stranger, a wrong token, a CPU profile (which would cost the
// server for as long as it runs) and an unknown name are refused.
func TestDebugProfile(t *testing.T) {
	_, srv := newTestServer(t, func(o *Options) { o.AdminToken = testToken })
	c := from("127.0.0.1")
	bearer := "Bearer " + testToken
	for _, tc := range []struct {
		name, path, auth, method string
		want                     int
	}{
		{"stranger", "heap", "", "GET", http.StatusUnauthorized},
		{"wrong token", "heap", "Bearer not-the-token-at-all-000", "GET", http.StatusUnauthorized},
		{"cpu", "profile", bearer, "GET", http.StatusNotFound},
		{"trace", "trace", bearer, "GET", http.StatusNotFound},
		{"unknown", "../../metrics", bearer, "GET", http.StatusNotFound},
		{"post", "heap", bearer, "POST", http.StatusMethodNotAllowed},
	} {
		if code, body := do(t, c, tc.method, srv.URL+protocol.PathDebugProfile+tc.path, tc.auth, ""); code != tc.want {
			t.Errorf("%s: %d %s, want %d", tc.name, code, body, tc.want)
		}
	}
	for _, name := range []string{"heap?gc=1", "allocs", "goroutine"} {
		code, body := do(t, c, "GET", srv.URL+protocol.PathDebugProfile+name, bearer, "")
		if code != 200 {
			t.Fatalf("%s: %d %s", name, code, body)
		}
		zr, err := gzip.NewReader(bytes.NewReader([]byte(body)))
		if err != nil {
			t.Fatalf("%s: not gzip: %v", name, err)
		}
		raw, err := io.ReadAll(zr)
		if err != nil || len(raw) < 16 {
			t.Fatalf("%s: %d bytes, %v", name, len(raw), err)
		}
	}
}
