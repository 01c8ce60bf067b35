package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/blockcast/beacon/firmware/agent"
	"github.com/blockcast/beacon/firmware/castclient"
	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/protocol"
	"github.com/blockcast/beacon/test/harness"
)

// startCastd starts castd alone (no beacon), with a control plane, the
// operator token and args.
func startCastd(t *testing.T, args ...string) *harness.System {
	t.Helper()
	sys, err := harness.NewSystem(t.TempDir(), bins)
	if err != nil {
		t.Fatal(err)
	}
	sys.CastdArgs = append([]string{"--admin-token", e2eAdminToken}, args...)
	t.Cleanup(func() {
		if err := sys.Close(); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if t.Failed() && sys.Castd != nil {
			t.Logf("--- castd log tail:\n%s", sys.Castd.Tail(6000))
		}
	})
	if err := sys.StartCastd(); err != nil {
		t.Fatal(err)
	}
	return sys
}

// operatorGet GETs a castd path with the operator's token.
func operatorGet(sys *harness.System, path string) (*http.Response, error) {
	req, err := http.NewRequest(http.MethodGet, sys.CastdURL()+path, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+e2eAdminToken)
	return http.DefaultClient.Do(req)
}

// registerRelayNode makes a signed relay registration.
func registerRelayNode(sys *harness.System, kp *identity.Keypair, lanURL, cidr string) (protocol.RegistrationReply, error) {
	cc, err := castclient.New(sys.CastdURL(), kp)
	if err != nil {
		return protocol.RegistrationReply{}, err
	}
	return cc.Register(context.Background(), protocol.Registration{Role: protocol.RoleRelay, LANURL: lanURL, CIDRs: []string{cidr}})
}

// addRelayNode registers a relay covering cidr and brings it online on the
// control plane: everything a relay does to be routed to, except passing
// its health probe, which is castd's to check.
func addRelayNode(t *testing.T, sys *harness.System, lanURL, cidr string) *identity.Keypair {
	t.Helper()
	kp, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	reply, err := registerRelayNode(sys, kp, lanURL, cidr)
	if err != nil {
		t.Fatal(err)
	}
	approveRelayNode(t, sys.CastdURL(), kp.ID())
	runAgent(t, kp, reply)
	return kp
}

// runAgent runs a node's control-plane agent until the test ends or stop
// is called.
func runAgent(t *testing.T, kp *identity.Keypair, reply protocol.RegistrationReply) (stop func()) {
	t.Helper()
	castKey, err := identity.ParsePublicKey(reply.CastKey)
	if err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(agent.Options{BrokerURL: reply.MQTT, Key: kp, CastKey: castKey, Interval: time.Second, Version: "relay-test"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.Run(ctx); close(done) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return stop
}

// routeDecision is castd's routing decision for a client address.
func routeDecision(t *testing.T, sys *harness.System, client string) protocol.RouteDecision {
	t.Helper()
	resp, err := operatorGet(sys, protocol.PathRoute+"?path=/x&client="+client)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var d protocol.RouteDecision
	if err := json.NewDecoder(resp.Body).Decode(&d); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("route: %d %v", resp.StatusCode, err)
	}
	return d
}

// nodeState is what castd's node API says of id.
func nodeState(t *testing.T, sys *harness.System, id string) (state string, routable bool) {
	t.Helper()
	resp, err := operatorGet(sys, protocol.PathNodes+"/"+id)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v struct {
		State    string `json:"state"`
		Routable bool   `json:"routable"`
	}
	json.NewDecoder(resp.Body).Decode(&v)
	return v.State, v.Routable
}

// probeCount reads castd_relay_probes_total{result=...} from /metrics.
func probeCount(t *testing.T, sys *harness.System, result string) float64 {
	t.Helper()
	resp, err := operatorGet(sys, protocol.PathMetrics)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	want := fmt.Sprintf(`castd_relay_probes_total{result=%q} `, result)
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), want); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	t.Fatalf("no %s in /metrics", strings.TrimSpace(want))
	return 0
}

// countingServer counts every request it gets, on any path.
func countingServer(t *testing.T) (*httptest.Server, *atomic.Int64) {
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		io.WriteString(w, "ok")
	}))
	t.Cleanup(srv.Close)
	return srv, &hits
}

// TestProbeSSRF: without --allow-private-nodes castd never sends a request
// to a non-public address a relay names. Literal addresses are refused at
// registration with a clear 400; a name that resolves to loopback is
// refused when the probe dials it, and that relay, online on the control
// plane, is never routed to.
func TestProbeSSRF(t *testing.T) {
	sys := startCastd(t, "--allow-private-nodes=false", "--probe-interval", "200ms")
	srv, hits := countingServer(t)
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	for _, u := range []string{
		srv.URL,
		"http://[::1]:" + port,
		"http://[::ffff:127.0.0.1]:" + port,
		"http://[64:ff9b::7f00:1]:" + port,
		"http://10.0.0.1/",
		"http://169.254.169.254/latest",
		"http://100.64.0.1",
		"https://[fd00::1]",
		"http://0.0.0.0:" + port,
	} {
		kp, _ := identity.Generate()
		_, err := registerRelayNode(sys, kp, u, "198.51.100.0/24")
		if err == nil || !strings.Contains(err.Error(), "400") || !strings.Contains(err.Error(), "allow-private-nodes") {
			t.Errorf("relay at %s: registration answered %v, want a 400 naming --allow-private-nodes", u, err)
		}
	}
	kp := addRelayNode(t, sys, "http://localhost:"+port, "198.51.100.0/24")
	if !harness.WaitFor(10*time.Second, func() bool { st, _ := nodeState(t, sys, kp.ID()); return st == "online" }) {
		t.Fatal("relay never online on the control plane")
	}
	// Watch for ten probe intervals: never routed, never a request.
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if d := routeDecision(t, sys, "198.51.100.9"); d.Decision != protocol.DecisionOrigin {
			t.Fatalf("relay at localhost routed to: %+v", d)
		}
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("the loopback listener got %d requests from castd", n)
	}
	if n := probeCount(t, sys, "refused"); n < 2 {
		t.Fatalf("castd_relay_probes_total{result=\"refused\"} = %v, want the refused probes counted", n)
	}
	if _, routable := nodeState(t, sys, kp.ID()); routable {
		t.Fatal("node API says the relay is routable")
	}
}

// TestProbeNotRoutedBeforeFirstPass: a relay online on the control plane
// is not routed to while its first probe has not passed (here: hangs), and
// is once it passes; a new URL has to pass again.
func TestProbeNotRoutedBeforeFirstPass(t *testing.T) {
	sys := startCastd(t, "--probe-interval", "300ms")
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
			io.WriteString(w, "ok")
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	kp := addRelayNode(t, sys, srv.URL, "198.51.100.0/24")
	if !harness.WaitFor(10*time.Second, func() bool { st, _ := nodeState(t, sys, kp.ID()); return st == "online" }) {
		t.Fatal("relay never online on the control plane")
	}
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if d := routeDecision(t, sys, "198.51.100.9"); d.Decision != protocol.DecisionOrigin {
			t.Fatalf("relay routed to before a probe passed: %+v", d)
		}
	}
	close(release)
	if !harness.WaitFor(5*time.Second, func() bool { return routeDecision(t, sys, "198.51.100.9").Decision == protocol.DecisionRelay }) {
		t.Fatal("relay not routed to after its probe passed")
	}
	// Re-registering at a new URL starts over: the old URL's verdict does
	// not carry over, not even for the first request after the reply.
	newURL := tarpit(t, false)
	if _, err := registerRelayNode(sys, kp, newURL, "198.51.100.0/24"); err != nil {
		t.Fatal(err)
	}
	for end := time.Now().Add(time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if d := routeDecision(t, sys, "198.51.100.9"); d.Decision != protocol.DecisionOrigin {
			t.Fatalf("relay routed to at its new URL before a probe of it passed: %+v", d)
		}
	}
}

// tarpit is a relay that takes castd's probe and never finishes its
// answer: silent ones accept and say nothing, slow ones send their
// headers a byte at a time.
func tarpit(t *testing.T, slow bool) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				gone := make(chan struct{})
				go func() { io.Copy(io.Discard, c); close(gone) }()
				if !slow {
					<-gone
					return
				}
				for _, b := range []byte("HTTP/1.1 200 OK\r\nX-Pad: " + strings.Repeat("x", 4000) + "\r\n\r\n") {
					if _, err := c.Write([]byte{b}); err != nil {
						return
					}
					select {
					case <-gone:
						return
					case <-time.After(100 * time.Millisecond):
					}
				}
				<-gone
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return "http://" + ln.Addr().String()
}

// TestProbeTarpits: twenty relays pointing at tarpits do not slow down the
// probes of a legitimate one: when it turns unhealthy it leaves routing
// within two probe intervals.
func TestProbeTarpits(t *testing.T) {
	const interval = 500 * time.Millisecond
	sys := startCastd(t, "--probe-interval", interval.String())
	for i := range 20 {
		addRelayNode(t, sys, tarpit(t, i%2 == 1), fmt.Sprintf("203.0.113.%d/32", i))
	}
	var healthy atomic.Bool
	healthy.Store(true)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !healthy.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ok")
	}))
	defer srv.Close()
	addRelayNode(t, sys, srv.URL, "198.51.100.0/24")
	if !harness.WaitFor(10*time.Second, func() bool { return routeDecision(t, sys, "198.51.100.9").Decision == protocol.DecisionRelay }) {
		t.Fatal("healthy relay among tarpits never routed to")
	}
	time.Sleep(2 * interval) // tarpits busy
	healthy.Store(false)
	failed := time.Now()
	if !harness.WaitFor(10*time.Second, func() bool { return routeDecision(t, sys, "198.51.100.9").Decision != protocol.DecisionRelay }) {
		t.Fatalf("failing relay still routed to %s after it failed", time.Since(failed).Round(time.Millisecond))
	}
	took := time.Since(failed)
	t.Logf("failing relay left routing after %s (probe interval %s, 20 tarpits)", took.Round(time.Millisecond), interval)
	if took > 2*interval {
		t.Fatalf("failing relay left routing after %s, want within two probe intervals (%s)", took.Round(time.Millisecond), 2*interval)
	}
	if n := probeCount(t, sys, "timeout"); n < 20 {
		t.Fatalf("castd_relay_probes_total{result=\"timeout\"} = %v, want the tarpits' probes counted", n)
	}
}

// TestProbeOnlyOnlineRelayNodes: castd probes only relays heard online on the
// control plane (the only ones it could route to): a registration alone
// makes it send no request, and a relay that goes offline is no longer
// probed.
func TestProbeOnlyOnlineRelayNodes(t *testing.T) {
	sys := startCastd(t, "--probe-interval", "200ms")
	srv, hits := countingServer(t)
	kp, _ := identity.Generate()
	reply, err := registerRelayNode(sys, kp, srv.URL, "198.51.100.0/24")
	if err != nil {
		t.Fatal(err)
	}
	approveRelayNode(t, sys.CastdURL(), kp.ID())
	time.Sleep(time.Second)
	if n := hits.Load(); n != 0 {
		t.Fatalf("relay never online got %d probes", n)
	}
	stop := runAgent(t, kp, reply)
	if !harness.WaitFor(10*time.Second, func() bool { return routeDecision(t, sys, "198.51.100.9").Decision == protocol.DecisionRelay }) {
		t.Fatal("online relay with a healthy endpoint not routed to")
	}
	stop()
	if !harness.WaitFor(10*time.Second, func() bool { st, _ := nodeState(t, sys, kp.ID()); return st != "online" }) {
		t.Fatal("relay still online after its agent stopped")
	}
	time.Sleep(300 * time.Millisecond) // a probe in flight may end
	before := hits.Load()
	time.Sleep(time.Second)
	if n := hits.Load() - before; n != 0 {
		t.Fatalf("offline relay got %d probes", n)
	}
	if d := routeDecision(t, sys, "198.51.100.9"); d.Decision != protocol.DecisionOrigin {
		t.Fatalf("offline relay routed to: %+v", d)
	}
}
