package signedreq

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/blockcast/beacon/shared/identity"
)

var update = flag.Bool("update", false, "rewrite testdata golden files")

var t0 = time.Unix(1_750_000_000, 0)

// clock is a settable clock safe for concurrent use.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func key(t testing.TB, b byte) *identity.Keypair {
	t.Helper()
	k, err := identity.FromSeed(bytes.Repeat([]byte{b}, identity.SeedSize))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// signed returns a request as a server receives it, signed by k at now.
func signed(t testing.TB, k *identity.Keypair, method, target string, body []byte, now time.Time) *http.Request {
	t.Helper()
	r := httptest.NewRequest(method, target, bytes.NewReader(body))
	if err := Sign(r, body, k, now); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestSignVerify(t *testing.T) {
	k := key(t, 1)
	v := NewVerifier(Options{Now: func() time.Time { return t0 }})
	for _, tt := range []struct {
		method, target string
		body           []byte
	}{
		{"GET", "/v1/object/a/b.mp4", nil},
		{"POST", "/v1/register", []byte(`{"role":"beacon"}`)},
		{"GET", "/v1/object/a%20b/c%2Fd/%E2%82%AC?x=1&y=%2F&z", nil},
		{"PUT", "/", bytes.Repeat([]byte{0, 0xff}, 100000)},
	} {
		r := signed(t, k, tt.method, tt.target, tt.body, t0)
		got, err := v.Verify(r, tt.body)
		if err != nil {
			t.Errorf("%s %s: %v", tt.method, tt.target, err)
			continue
		}
		if got != k.Public() {
			t.Errorf("%s %s: node %s, want %s", tt.method, tt.target, got, k.ID())
		}
	}
}

func TestVerifyFailures(t *testing.T) {
	k, other := key(t, 1), key(t, 2)
	body := []byte(`{"role":"beacon"}`)
	const target = "/v1/register?x=1"

	set := func(h, val string) func(*http.Request, *[]byte) {
		return func(r *http.Request, _ *[]byte) { r.Header.Set(h, val) }
	}
	del := func(h string) func(*http.Request, *[]byte) {
		return func(r *http.Request, _ *[]byte) { r.Header.Del(h) }
	}
	edit := func(h string, f func(string) string) func(*http.Request, *[]byte) {
		return func(r *http.Request, _ *[]byte) { r.Header.Set(h, f(r.Header.Get(h))) }
	}
	setURL := func(target string) func(*http.Request, *[]byte) {
		return func(r *http.Request, _ *[]byte) {
			u, err := url.ParseRequestURI(target)
			if err != nil {
				t.Fatal(err)
			}
			r.URL = u
		}
	}
	sigOf := func(n int) string { return base64.StdEncoding.EncodeToString(make([]byte, n)) }
	tsPlus := func(d int64) func(string) string {
		return func(s string) string {
			var ts int64
			fmt.Sscan(s, &ts)
			return fmt.Sprint(ts + d)
		}
	}

	tests := []struct {
		name   string
		mutate func(*http.Request, *[]byte)
		want   error
	}{
		{"tampered method", func(r *http.Request, _ *[]byte) { r.Method = "PUT" }, ErrBadSignature},
		{"tampered path", setURL("/v1/registeR?x=1"), ErrBadSignature},
		{"tampered query", setURL("/v1/register?x=2"), ErrBadSignature},
		{"added query", setURL("/v1/register?x=1&y=2"), ErrBadSignature},
		{"dropped query", setURL("/v1/register"), ErrBadSignature},
		{"escaping changed", setURL("/v1/%72egister?x=1"), ErrBadSignature},
		{"tampered body", func(_ *http.Request, b *[]byte) { *b = append([]byte(nil), (*b)...); (*b)[3] ^= 1 }, ErrBadSignature},
		{"truncated body", func(_ *http.Request, b *[]byte) { *b = (*b)[:len(*b)-1] }, ErrBadSignature},
		{"extended body", func(_ *http.Request, b *[]byte) { *b = append(append([]byte(nil), (*b)...), ' ') }, ErrBadSignature},
		{"other node", set(HeaderNode, other.ID()), ErrBadSignature},
		{"tampered timestamp", edit(HeaderTimestamp, tsPlus(1)), ErrBadSignature},
		{"tampered nonce", edit(HeaderNonce, func(s string) string { // a different first hex digit, always
			if s[0] == 'f' {
				return "e" + s[1:]
			}
			return "f" + s[1:]
		}), ErrBadSignature},
		{"flipped signature", edit(HeaderSignature, func(s string) string {
			b, _ := base64.StdEncoding.DecodeString(s)
			b[5] ^= 1
			return base64.StdEncoding.EncodeToString(b)
		}), ErrBadSignature},
		{"zero signature", set(HeaderSignature, sigOf(64)), ErrBadSignature},

		{"no node", del(HeaderNode), ErrUnsigned},
		{"no timestamp", del(HeaderTimestamp), ErrUnsigned},
		{"no nonce", del(HeaderNonce), ErrUnsigned},
		{"no signature", del(HeaderSignature), ErrUnsigned},
		{"empty signature", set(HeaderSignature, ""), ErrUnsigned},
		{"no headers at all", func(r *http.Request, _ *[]byte) { r.Header = http.Header{} }, ErrUnsigned},
		{"nil header map", func(r *http.Request, _ *[]byte) { r.Header = nil }, ErrUnsigned},

		{"two nodes", func(r *http.Request, _ *[]byte) { r.Header.Add(HeaderNode, k.ID()) }, ErrMalformed},
		{"two signatures", func(r *http.Request, _ *[]byte) { r.Header.Add(HeaderSignature, r.Header.Get(HeaderSignature)) }, ErrMalformed},
		{"node not base58", set(HeaderNode, "0"+k.ID()[1:]), ErrMalformed},
		{"node too short", set(HeaderNode, k.ID()[:20]), ErrMalformed},
		{"node too long", set(HeaderNode, k.ID()+"z"), ErrMalformed},
		{"node with space", set(HeaderNode, k.ID()+" "), ErrMalformed},
		{"timestamp not a number", set(HeaderTimestamp, "abc"), ErrMalformed},
		{"timestamp negative", set(HeaderTimestamp, "-1750000000"), ErrMalformed},
		{"timestamp plus", edit(HeaderTimestamp, func(s string) string { return "+" + s }), ErrMalformed},
		{"timestamp leading zero", edit(HeaderTimestamp, func(s string) string { return "0" + s }), ErrMalformed},
		{"timestamp fraction", edit(HeaderTimestamp, func(s string) string { return s + ".0" }), ErrMalformed},
		{"timestamp huge", set(HeaderTimestamp, strings.Repeat("9", 25)), ErrMalformed},
		{"timestamp milliseconds", edit(HeaderTimestamp, func(s string) string { return s + "000" }), ErrStale},
		{"nonce uppercase", edit(HeaderNonce, strings.ToUpper), ErrMalformed},
		{"nonce short", edit(HeaderNonce, func(s string) string { return s[:31] }), ErrMalformed},
		{"nonce long", edit(HeaderNonce, func(s string) string { return s + "0" }), ErrMalformed},
		{"nonce not hex", set(HeaderNonce, strings.Repeat("zz", 16)), ErrMalformed},
		{"signature not base64", set(HeaderSignature, "!!!!"), ErrMalformed},
		{"signature base64url", set(HeaderSignature, strings.Repeat("-_", 43)+"=="), ErrMalformed},
		{"signature unpadded", edit(HeaderSignature, func(s string) string { return strings.TrimRight(s, "=") }), ErrMalformed},
		{"signature 63 bytes", set(HeaderSignature, sigOf(63)), ErrMalformed},
		{"signature 65 bytes", set(HeaderSignature, sigOf(65)), ErrMalformed},
		{"signature with newline", edit(HeaderSignature, func(s string) string { return s[:10] + "\n" + s[10:] }), ErrMalformed},
		{"no URL", func(r *http.Request, _ *[]byte) { r.URL = nil }, ErrMalformed},

		{"stale past", edit(HeaderTimestamp, tsPlus(-61)), ErrStale},
		{"stale future", edit(HeaderTimestamp, tsPlus(61)), ErrStale},
	}
	for _, tt := range tests {
		v := NewVerifier(Options{Now: func() time.Time { return t0 }})
		r := signed(t, k, "POST", target, body, t0)
		b := body
		tt.mutate(r, &b)
		_, err := v.Verify(r, b)
		if !errors.Is(err, tt.want) {
			t.Errorf("%s: error = %v, want %v", tt.name, err, tt.want)
		}
	}
}

func TestWindow(t *testing.T) {
	k := key(t, 1)
	for _, tt := range []struct {
		name   string
		signed time.Duration // signing time relative to the verifier's clock
		want   error
	}{
		{"now", 0, nil},
		{"59s ago", -59 * time.Second, nil},
		{"60s ago", -60 * time.Second, nil},
		{"61s ago", -61 * time.Second, ErrStale},
		{"an hour ago", -time.Hour, ErrStale},
		{"60s ahead", 60 * time.Second, nil},
		{"61s ahead", 61 * time.Second, ErrStale},
		{"a day ahead", 24 * time.Hour, ErrStale},
	} {
		v := NewVerifier(Options{Now: func() time.Time { return t0 }})
		r := signed(t, k, "GET", "/x", nil, t0.Add(tt.signed))
		if _, err := v.Verify(r, nil); !errors.Is(err, tt.want) {
			t.Errorf("%s: error = %v, want %v", tt.name, err, tt.want)
		}
	}
	// A custom window.
	v := NewVerifier(Options{Window: 5 * time.Second, Now: func() time.Time { return t0 }})
	if _, err := v.Verify(signed(t, k, "GET", "/x", nil, t0.Add(-6*time.Second)), nil); !errors.Is(err, ErrStale) {
		t.Errorf("5s window, 6s old: error = %v, want ErrStale", err)
	}
}

func TestReplay(t *testing.T) {
	k, other := key(t, 1), key(t, 2)
	c := &clock{t: t0}
	v := NewVerifier(Options{Now: c.Now})
	r := signed(t, k, "POST", "/v1/register", []byte("x"), t0)
	if _, err := v.Verify(r, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(r, []byte("x")); !errors.Is(err, ErrReplay) {
		t.Fatalf("replay: error = %v, want ErrReplay", err)
	}
	// Still refused at the edge of the window.
	c.Add(60 * time.Second)
	if _, err := v.Verify(r, []byte("x")); !errors.Is(err, ErrReplay) {
		t.Fatalf("replay at the window edge: error = %v, want ErrReplay", err)
	}
	// After it, refused as stale, and the nonce is forgotten.
	c.Add(time.Second)
	if _, err := v.Verify(r, []byte("x")); !errors.Is(err, ErrStale) {
		t.Fatalf("late replay: error = %v, want ErrStale", err)
	}
	if _, err := v.Verify(signed(t, k, "GET", "/y", nil, c.Now()), nil); err != nil {
		t.Fatal(err)
	}
	v.mu.Lock()
	n := len(v.seen)
	v.mu.Unlock()
	if n != 1 {
		t.Errorf("%d nonces remembered, want 1 (the expired one swept)", n)
	}

	// The same nonce from another node is not a replay.
	var nonce [NonceSize]byte
	nonce[0] = 7
	r1 := httptest.NewRequest("GET", "/z", nil)
	r2 := httptest.NewRequest("GET", "/z", nil)
	if err := signWithNonce(r1, nil, k, c.Now(), nonce); err != nil {
		t.Fatal(err)
	}
	if err := signWithNonce(r2, nil, other, c.Now(), nonce); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(r1, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(r2, nil); err != nil {
		t.Fatalf("same nonce, other node: %v", err)
	}
}

func TestBusy(t *testing.T) {
	k := key(t, 1)
	c := &clock{t: t0}
	v := NewVerifier(Options{MaxNonces: 3, Now: c.Now})
	for i := 0; i < 3; i++ {
		if _, err := v.Verify(signed(t, k, "GET", "/x", nil, c.Now()), nil); err != nil {
			t.Fatal(err)
		}
	}
	r := signed(t, k, "GET", "/x", nil, c.Now())
	_, err := v.Verify(r, nil)
	if !errors.Is(err, ErrBusy) {
		t.Fatalf("full table: error = %v, want ErrBusy", err)
	}
	if StatusCode(err) != http.StatusServiceUnavailable {
		t.Errorf("ErrBusy status %d", StatusCode(err))
	}
	// Once the remembered timestamps leave the window there is room again.
	c.Add(61 * time.Second)
	if _, err := v.Verify(signed(t, k, "GET", "/x", nil, c.Now()), nil); err != nil {
		t.Fatalf("after the window: %v", err)
	}
}

// Requests that fail verification never take a place in the nonce table.
func TestUnverifiedDoNotFillTable(t *testing.T) {
	k, other := key(t, 1), key(t, 2)
	v := NewVerifier(Options{MaxNonces: 1, Now: func() time.Time { return t0 }})
	for i := 0; i < 50; i++ {
		r := signed(t, k, "GET", "/x", nil, t0)
		r.Header.Set(HeaderNode, other.ID())
		if _, err := v.Verify(r, nil); !errors.Is(err, ErrBadSignature) {
			t.Fatalf("error = %v, want ErrBadSignature", err)
		}
		stale := signed(t, k, "GET", "/x", nil, t0.Add(-time.Hour))
		if _, err := v.Verify(stale, nil); !errors.Is(err, ErrStale) {
			t.Fatalf("error = %v, want ErrStale", err)
		}
	}
	if _, err := v.Verify(signed(t, k, "GET", "/x", nil, t0), nil); err != nil {
		t.Fatalf("valid request after junk: %v", err)
	}
}

// Many goroutines verify the same requests at once: each nonce is accepted
// exactly once. Run with -race.
func TestConcurrent(t *testing.T) {
	keys := []*identity.Keypair{key(t, 1), key(t, 2), key(t, 3)}
	c := &clock{t: t0}
	v := NewVerifier(Options{Now: c.Now})
	const n = 150
	reqs := make([]*http.Request, n)
	for i := range reqs {
		reqs[i] = signed(t, keys[i%len(keys)], "POST", fmt.Sprintf("/v1/r/%d", i), []byte{byte(i)}, t0)
	}
	var accepted [n]atomic.Int32
	var wg sync.WaitGroup
	for g := 0; g < 6; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for j := 0; j < n; j++ {
				i := (j + g*25) % n
				// Verify reads the request only; sharing it is safe.
				_, err := v.Verify(reqs[i], []byte{byte(i)})
				switch {
				case err == nil:
					accepted[i].Add(1)
				case !errors.Is(err, ErrReplay):
					t.Errorf("request %d: %v", i, err)
				}
				if j%50 == 0 {
					c.Add(time.Millisecond)
				}
			}
		}(g)
	}
	wg.Wait()
	for i := range accepted {
		if got := accepted[i].Load(); got != 1 {
			t.Errorf("request %d accepted %d times", i, got)
		}
	}
}

// A request signed by a real net/http client verifies in a real server:
// the request URI the client signs is the one the server sees.
func TestEndToEnd(t *testing.T) {
	k := key(t, 1)
	v := NewVerifier(Options{})
	var lastNode atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := ReadBody(r, 1<<20)
		if err == nil {
			var node identity.PublicKey
			node, err = v.Verify(r, body)
			if err == nil {
				lastNode.Store(node)
				w.Write([]byte("ok"))
				return
			}
		}
		http.Error(w, err.Error(), StatusCode(err))
	}))
	defer srv.Close()
	client := srv.Client()
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

	do := func(method, path string, body []byte, sign bool) (*http.Response, *http.Request) {
		t.Helper()
		req, err := http.NewRequest(method, srv.URL+path, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if sign {
			if err := Sign(req, body, k, time.Now()); err != nil {
				t.Fatal(err)
			}
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp, req
	}
	for _, path := range []string{
		"/v1/register",
		"/v1/object/videos/a%20b/seg%2F1.ts?token=a%2Bb&x=%E2%82%AC&empty=",
		"/v1/object/%7Euser/%25done",
		"/v1/object/ünïcode/path?q=ü",
	} {
		resp, req := do("POST", path, []byte(`{"role":"beacon"}`), true)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s: status %d", path, resp.StatusCode)
			continue
		}
		if got, _ := lastNode.Load().(identity.PublicKey); got != k.Public() {
			t.Errorf("%s: server saw node %s", path, got)
		}
		// The identical request again is a replay.
		replay, err := http.NewRequest("POST", srv.URL+path, strings.NewReader(`{"role":"beacon"}`))
		if err != nil {
			t.Fatal(err)
		}
		replay.Header = req.Header.Clone()
		resp2, err := client.Do(replay)
		if err != nil {
			t.Fatal(err)
		}
		resp2.Body.Close()
		if resp2.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s: replay status %d, want 401", path, resp2.StatusCode)
		}
	}
	if resp, _ := do("GET", "/v1/object/x", nil, false); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("unsigned: status %d, want 401", resp.StatusCode)
	}
	if resp, _ := do("POST", "/v1/register", make([]byte, 1<<20+1), true); resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("large body: status %d, want 413", resp.StatusCode)
	}
}

// failReader fails the test if read: ReadBody must refuse by Content-Length.
type failReader struct{ t *testing.T }

func (f failReader) Read([]byte) (int, error) {
	f.t.Error("body read despite Content-Length over the limit")
	return 0, io.EOF
}

func TestReadBody(t *testing.T) {
	mk := func(body string, cl int64) *http.Request {
		r := httptest.NewRequest("POST", "/", strings.NewReader(body))
		r.ContentLength = cl
		return r
	}
	for _, tt := range []struct {
		name string
		r    *http.Request
		max  int64
		want string
		err  error
	}{
		{"under", mk("abc", 3), 10, "abc", nil},
		{"exact", mk("abcdefghij", 10), 10, "abcdefghij", nil},
		{"over", mk("abcdefghijk", 11), 10, "", ErrTooLarge},
		{"over, unknown length", mk("abcdefghijk", -1), 10, "", ErrTooLarge},
		{"under, unknown length", mk("abc", -1), 10, "abc", nil},
		{"empty", mk("", 0), 10, "", nil},
		{"zero limit", mk("a", -1), 0, "", ErrTooLarge},
		{"no body", &http.Request{Method: "GET"}, 10, "", nil},
	} {
		got, err := ReadBody(tt.r, tt.max)
		if !errors.Is(err, tt.err) || string(got) != tt.want {
			t.Errorf("%s: ReadBody = %q, %v; want %q, %v", tt.name, got, err, tt.want, tt.err)
		}
	}
	r := httptest.NewRequest("POST", "/", nil)
	r.Body = io.NopCloser(failReader{t})
	r.ContentLength = 1 << 30
	if _, err := ReadBody(r, 1<<20); !errors.Is(err, ErrTooLarge) {
		t.Errorf("large Content-Length: error = %v", err)
	}
}

func TestStatusCode(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want int
	}{
		{nil, 200},
		{ErrUnsigned, 401},
		{ErrBadSignature, 401},
		{ErrStale, 401},
		{ErrReplay, 401},
		{ErrMalformed, 400},
		{fmt.Errorf("%w: detail", ErrMalformed), 400},
		{ErrTooLarge, 413},
		{fmt.Errorf("wrapped: %w", ErrTooLarge), 413},
		{ErrBusy, 503},
		{io.ErrUnexpectedEOF, 400},
	} {
		if got := StatusCode(tt.err); got != tt.want {
			t.Errorf("StatusCode(%v) = %d, want %d", tt.err, got, tt.want)
		}
	}
}

// golden is a test vector other implementations (the firmware in another
// language, a test client) can check themselves against.
type golden struct {
	Comment     string            `json:"comment"`
	Seed        string            `json:"seed_hex"`
	Method      string            `json:"method"`
	RequestURI  string            `json:"request_uri"`
	Unix        int64             `json:"unix"`
	NonceHex    string            `json:"nonce_hex"`
	Body        string            `json:"body"`
	SignedBytes string            `json:"signed_bytes"`
	Headers     map[string]string `json:"headers"`
}

func TestGolden(t *testing.T) {
	const path = "testdata/vector.json"
	seed := bytes.Repeat([]byte{0x42}, 32)
	k, err := identity.FromSeed(seed)
	if err != nil {
		t.Fatal(err)
	}
	var nonce [NonceSize]byte
	for i := range nonce {
		nonce[i] = byte(i)
	}
	g := golden{
		Comment:    "Signed HTTP request vector: headers are what Sign sets for this key, request, time and nonce.",
		Seed:       hex.EncodeToString(seed),
		Method:     "POST",
		RequestURI: "/v1/register?x=%2F1",
		Unix:       1750000000,
		NonceHex:   hex.EncodeToString(nonce[:]),
		Body:       `{"role":"beacon"}`,
	}
	r := httptest.NewRequest(g.Method, g.RequestURI, strings.NewReader(g.Body))
	if err := signWithNonce(r, []byte(g.Body), k, time.Unix(g.Unix, 0), nonce); err != nil {
		t.Fatal(err)
	}
	g.SignedBytes = string(SignedBytes(g.Method, g.RequestURI, fmt.Sprint(g.Unix), g.NonceHex, k.ID(), []byte(g.Body)))
	g.Headers = map[string]string{}
	for _, h := range []string{HeaderNode, HeaderTimestamp, HeaderNonce, HeaderSignature} {
		g.Headers[h] = r.Header.Get(h)
	}
	got, err := json.MarshalIndent(g, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("vector changed (run with -update if intended):\ngot  %s\nwant %s", got, want)
	}
	// The signed bytes are laid out as the package doc says.
	sum := sha256.Sum256([]byte(g.Body))
	wantBytes := "blockcast-http-request-v1\x00POST\n/v1/register?x=%2F1\n1750000000\n000102030405060708090a0b0c0d0e0f\n" +
		k.ID() + "\n" + hex.EncodeToString(sum[:])
	if g.SignedBytes != wantBytes {
		t.Errorf("signed bytes %q\nwant %q", g.SignedBytes, wantBytes)
	}
	sig, _ := base64.StdEncoding.DecodeString(g.Headers[HeaderSignature])
	if !k.Public().Verify([]byte(wantBytes), sig) {
		t.Error("golden signature does not verify over the documented bytes")
	}
	v := NewVerifier(Options{Now: func() time.Time { return time.Unix(g.Unix, 0) }})
	if node, err := v.Verify(r, []byte(g.Body)); err != nil || node != k.Public() {
		t.Fatalf("golden request does not verify: %v", err)
	}
}

func FuzzVerify(f *testing.F) {
	k := key(f, 1)
	r := signed(f, k, "POST", "/v1/register?x=1", []byte("body"), t0)
	f.Add("POST", "/v1/register?x=1", r.Header.Get(HeaderNode), r.Header.Get(HeaderTimestamp),
		r.Header.Get(HeaderNonce), r.Header.Get(HeaderSignature), []byte("body"))
	f.Add("GET", "/", "", "", "", "", []byte(nil))
	f.Add("GET", "/", "11111111111111111111111111111111", "0", strings.Repeat("0", 32), sigOfLen(64), []byte(nil))
	f.Fuzz(func(t *testing.T, method, uri, node, ts, nonce, sig string, body []byte) {
		u, err := url.ParseRequestURI(uri)
		if err != nil {
			return
		}
		r := &http.Request{Method: method, URL: u, Header: http.Header{}}
		for h, val := range map[string]string{HeaderNode: node, HeaderTimestamp: ts, HeaderNonce: nonce, HeaderSignature: sig} {
			if val != "" {
				r.Header.Set(h, val)
			}
		}
		v := NewVerifier(Options{Now: func() time.Time { return t0 }})
		pub, err := v.Verify(r, body)
		if err != nil {
			if StatusCode(err) == http.StatusOK {
				t.Fatalf("error %v maps to 200", err)
			}
			return
		}
		// Accepted: the signature really covers these exact values.
		rawSig, _ := base64.StdEncoding.DecodeString(sig)
		if pub.String() != node || !pub.Verify(SignedBytes(method, u.RequestURI(), ts, nonce, node, body), rawSig) {
			t.Fatalf("accepted a request whose signature does not cover it")
		}
		if _, err := v.Verify(r, body); !errors.Is(err, ErrReplay) {
			t.Fatalf("second verification: %v, want ErrReplay", err)
		}
	})
}

func sigOfLen(n int) string { return base64.StdEncoding.EncodeToString(make([]byte, n)) }

func BenchmarkSign(b *testing.B) {
	k := key(b, 1)
	body := make([]byte, 1024)
	r := httptest.NewRequest("POST", "/v1/register", nil)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if err := Sign(r, body, k, t0); err != nil {
			b.Fatal(err)
		}
	}
}

func benchVerify(b *testing.B, parallel bool) {
	k := key(b, 1)
	body := make([]byte, 1024)
	reqs := make([]*http.Request, b.N)
	for i := range reqs {
		reqs[i] = signed(b, k, "POST", "/v1/register", body, t0)
	}
	v := NewVerifier(Options{MaxNonces: b.N + 1, Now: func() time.Time { return t0 }})
	b.ReportAllocs()
	b.ResetTimer()
	if !parallel {
		for i := 0; i < b.N; i++ {
			if _, err := v.Verify(reqs[i], body); err != nil {
				b.Fatal(err)
			}
		}
		return
	}
	var next atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := next.Add(1) - 1
			if _, err := v.Verify(reqs[i], body); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkVerify(b *testing.B)         { benchVerify(b, false) }
func BenchmarkVerifyParallel(b *testing.B) { benchVerify(b, true) }
