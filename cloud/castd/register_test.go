package castd

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/protocol"
	"github.com/blockcast/beacon/shared/signedreq"
	"github.com/blockcast/beacon/test/harness"
)

// register POSTs a registration signed by kp, with X-Forwarded-For set to
// from when given, and returns the status, Retry-After and error message.
func register(t testing.TB, base string, kp *identity.Keypair, body []byte, from string) (int, string, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, base+protocol.PathRegister, bytes.NewReader(body))
	if err := signedreq.Sign(req, body, kp, time.Now()); err != nil {
		t.Error(err)
		return 0, "", ""
	}
	if from != "" {
		req.Header.Set("X-Forwarded-For", from)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Error(err)
		return 0, "", ""
	}
	defer resp.Body.Close()
	var e protocol.Error
	json.NewDecoder(resp.Body).Decode(&e)
	return resp.StatusCode, resp.Header.Get("Retry-After"), e.Error
}

var beaconBody = []byte(`{"role":"beacon","lan_url":"http://192.168.1.1:8081","version":"v"}`)

// The attack: 1,000 registrations with fresh keys from one address within
// seconds. Only the burst is accepted; the rest get 429 with Retry-After,
// nothing else is stored, other addresses and registered nodes are not
// affected. The old castd accepted all 1,000 and kept them.
func TestRegistrationFloodFromOneAddress(t *testing.T) {
	logs := &harness.LineBuffer{}
	s, srv := newTestServer(t, func(o *Options) {
		o.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
		o.Logger = slog.New(slog.NewTextHandler(logs, nil))
	})
	attacker, other := netip.MustParseAddr("198.51.100.7"), netip.MustParseAddr("203.0.113.9")
	if s.regLimit.Collide(attacker, other) {
		t.Skip("the two test addresses share a budget in this process")
	}
	// A node registered before the flood, from the same address.
	early, _ := identity.Generate()
	if st, _, msg := register(t, srv.URL, early, beaconBody, attacker.String()); st != http.StatusOK {
		t.Fatalf("first registration: %d %s", st, msg)
	}
	const n = 1000
	keys := make([]*identity.Keypair, n)
	for i := range keys {
		keys[i], _ = identity.Generate()
	}
	var ok, limited atomic.Int64
	var badReply atomic.Value
	start := time.Now()
	var wg sync.WaitGroup
	next := atomic.Int64{}
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := next.Add(1) - 1; i < n; i = next.Add(1) - 1 {
				time.Sleep(time.Until(start.Add(time.Duration(i) * 3 * time.Millisecond))) // ~3 s in all
				st, after, msg := register(t, srv.URL, keys[i], beaconBody, attacker.String())
				switch {
				case st == http.StatusOK:
					ok.Add(1)
				case st == http.StatusTooManyRequests && after == "10" && strings.Contains(msg, "too many new registrations"):
					limited.Add(1)
				default:
					badReply.Store(errors.New(st2s(st, after, msg)))
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if e := badReply.Load(); e != nil {
		t.Fatalf("unexpected answer: %v", e)
	}
	// The burst less the early one, plus what refilled meanwhile.
	maxOK := int64(DefaultRegistrationBurst-1) + int64(elapsed.Seconds()*DefaultRegistrationRate/60)
	if got := ok.Load(); got < DefaultRegistrationBurst-1 || got > maxOK {
		t.Fatalf("%d of %d fresh registrations accepted in %s, want %d..%d", got, n, elapsed, DefaultRegistrationBurst-1, maxOK)
	}
	if ok.Load()+limited.Load() != n {
		t.Fatalf("accepted %d + limited %d != %d", ok.Load(), limited.Load(), n)
	}
	if got := s.reg.Len(); got != int(ok.Load())+1 {
		t.Fatalf("registry holds %d nodes, want %d", got, ok.Load()+1)
	}
	t.Logf("%d registrations in %s: %d accepted, %d answered 429", n, elapsed.Round(time.Millisecond), ok.Load(), limited.Load())
	// A registered node re-registers from the flooded address; another
	// address registers a new node.
	if st, _, msg := register(t, srv.URL, early, beaconBody, attacker.String()); st != http.StatusOK {
		t.Fatalf("re-registration of a known node after the flood: %d %s", st, msg)
	}
	fresh, _ := identity.Generate()
	if st, _, msg := register(t, srv.URL, fresh, beaconBody, other.String()); st != http.StatusOK {
		t.Fatalf("registration from another address: %d %s", st, msg)
	}
	// Logged in summary, not once per refusal.
	if n := strings.Count(logs.String(), "registrations rate limited"); n != 1 {
		t.Errorf("%d rate-limit log lines for one flood, want 1", n)
	}
	if n := strings.Count(logs.String(), "status=429"); n != 0 {
		t.Errorf("%d refusals logged one by one", n)
	}
	resp, err := http.Get(srv.URL + protocol.PathMetrics)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := "castd_registrations_rate_limited_total " + strconv.FormatInt(limited.Load(), 10); !strings.Contains(string(raw), want) {
		t.Fatalf("metrics lack %q:\n%s", want, raw)
	}
}

func st2s(st int, after, msg string) string {
	return http.StatusText(st) + " Retry-After=" + after + ": " + msg
}

// A limit of -1 turns the limit off (tests of fleets, lab set-ups).
func TestRegistrationLimitOff(t *testing.T) {
	s, srv := newTestServer(t, func(o *Options) { o.RegistrationRate = -1 })
	if s.regLimit != nil {
		t.Fatal("limiter built with RegistrationRate -1")
	}
	for i := 0; i < DefaultRegistrationBurst+5; i++ {
		kp, _ := identity.Generate()
		if st, _, msg := register(t, srv.URL, kp, beaconBody, ""); st != http.StatusOK {
			t.Fatalf("registration %d: %d %s", i, st, msg)
		}
	}
}

func TestRegistrationOptionsRefused(t *testing.T) {
	for _, o := range []Options{
		{RegistrationBurst: -1},
		{RegistrationRate: math.NaN()},
	} {
		if err := o.checkRegistration(); err == nil {
			t.Errorf("%+v accepted", o)
		}
	}
}

// A signed registration with anything but white space after the JSON
// object is refused (400, saying why); the old castd read the first object
// and ignored the rest.
func TestRegistrationTrailingData(t *testing.T) {
	_, srv := newTestServer(t, nil)
	for _, tc := range []struct {
		name string
		body string
		want int
	}{
		{"garbage", string(beaconBody) + "garbage", http.StatusBadRequest},
		{"second object", string(beaconBody) + `{"role":"relay"}`, http.StatusBadRequest},
		{"second value", string(beaconBody) + " 1", http.StatusBadRequest},
		{"NUL", string(beaconBody) + "\x00", http.StatusBadRequest},
		{"trailing newline", string(beaconBody) + "\r\n\t ", http.StatusOK},
	} {
		kp, _ := identity.Generate()
		st, _, msg := register(t, srv.URL, kp, []byte(tc.body), "")
		if st != tc.want {
			t.Errorf("%s: %d (%s), want %d", tc.name, st, msg, tc.want)
		}
		if tc.want == http.StatusBadRequest && !strings.Contains(msg, "not one valid JSON object") {
			t.Errorf("%s: error %q does not say why", tc.name, msg)
		}
	}
}

func FuzzDecodeRegistration(f *testing.F) {
	f.Add(beaconBody)
	f.Add([]byte(`{"role":"relay","lan_url":"https://r.example","cidrs":["10.0.0.0/8"]}` + "\n"))
	f.Add([]byte(`{"role":"beacon"}{"role":"relay"}`))
	f.Add([]byte(`{"role":"beacon"} x`))
	f.Add([]byte(`{"delegation":{"owner":"x","signature":"y"}}`))
	f.Add([]byte(`[]`))
	f.Add([]byte(``))
	f.Fuzz(func(t *testing.T, body []byte) {
		reg, err := decodeRegistration(body)
		if err != nil {
			return
		}
		// Accepted: the body is exactly one JSON value, and what was read
		// survives a round trip.
		if !json.Valid(body) {
			t.Fatalf("accepted a body that is not one JSON value: %q", body)
		}
		again, err := json.Marshal(reg)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := decodeRegistration(again); err != nil {
			t.Fatalf("re-encoded registration refused: %v", err)
		}
	})
}
