package castd

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/blockcast/beacon/cloud/amtrelay"
	"github.com/blockcast/beacon/cloud/registry"
	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/protocol"
)

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T, network string) int {
	t.Helper()
	switch network {
	case "udp":
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.LocalAddr().(*net.UDPAddr).Port
	default:
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return l.Addr().(*net.TCPAddr).Port
	}
}

// goroutines returns the stacks of the goroutines running code of this
// module (not the test's own), keyed by goroutine header.
func goroutines() map[string]string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	out := map[string]string{}
	for _, g := range strings.Split(string(buf), "\n\n") {
		if !strings.Contains(g, "github.com/blockcast/beacon/") || strings.Contains(g, "testing.tRunner") {
			continue
		}
		id, _, _ := strings.Cut(g, " [")
		out[id] = g
	}
	return out
}

// leaked lists goroutines of the module's packages that are not in before
// and whose stacks mention one of pkgs.
func leaked(before map[string]string, pkgs ...string) []string {
	var out []string
	for id, g := range goroutines() {
		if _, ok := before[id]; ok {
			continue
		}
		for _, p := range pkgs {
			if strings.Contains(g, "github.com/blockcast/beacon/"+p) {
				out = append(out, g)
				break
			}
		}
	}
	sort.Strings(out)
	return out
}

// scrape returns castd's metrics as name{labels} → value.
func scrape(t *testing.T, base string) map[string]float64 {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(base + protocol.PathMetrics)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

// TestServeListenerError: with the AMT relay and the embedded broker on,
// an HTTP listener that fails under Serve makes Serve return its error
// promptly (it used to wait for the relay, whose context only it could
// cancel: a hang), and nothing castd started is left running.
func TestServeListenerError(t *testing.T) {
	t.Run("relay and broker", func(t *testing.T) { testServeListenerError(t, true) })
	// Without the relay to wait for, Serve returns at once: only joining
	// the control plane keeps its goroutines from outliving it.
	t.Run("broker only", func(t *testing.T) { testServeListenerError(t, false) })
}

func testServeListenerError(t *testing.T, relay bool) {
	amtPort, mqttPort := freePort(t, "udp"), freePort(t, "tcp")
	s, _ := newTestServer(t, func(o *Options) {
		if relay {
			o.AMTListen = "127.0.0.1:" + strconv.Itoa(amtPort)
		}
		o.MQTTListen = "127.0.0.1:" + strconv.Itoa(mqttPort)
		o.ProbeInterval = 20 * time.Millisecond
	})
	// A relay whose health endpoint never answers keeps a probe in flight.
	stall, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer stall.Close()
	go func() {
		for {
			c, err := stall.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	kp, _ := identity.Generate()
	if _, err := s.reg.Upsert(registry.Node{ID: kp.ID(), Role: protocol.RoleRelay, LANURL: "http://" + stall.Addr().String(),
		CIDRs: []string{"10.0.0.0/8"}, PublicIP: netip.MustParseAddr("127.0.0.1")}, false); err != nil {
		t.Fatal(err)
	}

	before := goroutines()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + ln.Addr().String()
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(context.Background(), ln) }()

	// Everything is up: HTTP answers, the broker accepts, the relay
	// counts what it refuses, and a probe has reached the stalled relay.
	deadline := time.Now().Add(5 * time.Second)
	for {
		m := scrape(t, base)
		if _, ok := m["castd_mqtt_clients"]; ok {
			if _, ok := m["castd_amt_gateways"]; ok || !relay {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("control plane or AMT relay metrics never appeared")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if c, err := net.Dial("tcp", s.opts.MQTTListen); err != nil {
		t.Fatalf("embedded broker: %v", err)
	} else {
		c.Close()
	}
	if relay {
		u, err := net.Dial("udp", s.opts.AMTListen)
		if err != nil {
			t.Fatal(err)
		}
		u.Write([]byte{0x5f, 0, 0})
		u.Close()
		for scrape(t, base)[`castd_amt_refused_total{reason="malformed"}`] != 1 {
			if time.Now().After(deadline) {
				t.Fatal("the malformed AMT message was not counted")
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	ln.Close() // the listener fails under Serve
	select {
	case err := <-errc:
		if err == nil || !errors.Is(err, net.ErrClosed) {
			t.Errorf("Serve = %v, want the listener's error", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after its listener failed")
	}
	// What Serve joins is gone the moment it returns.
	if l := leaked(before, "cloud/castd.", "cloud/amtrelay.", "cloud/monitor."); len(l) > 0 {
		t.Fatalf("%d goroutines outlive Serve:\n%s", len(l), strings.Join(l, "\n\n"))
	}
	// The broker's connections wind down on their own; give them a moment.
	var l []string
	for end := time.Now().Add(3 * time.Second); ; {
		if l = leaked(before, ""); len(l) == 0 || time.Now().After(end) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if len(l) > 0 {
		t.Fatalf("%d goroutines of castd's packages remain:\n%s", len(l), strings.Join(l, "\n\n"))
	}
}

// TestAMTRefusedMetric: every refusal reason is exported, with a count.
func TestAMTRefusedMetric(t *testing.T) {
	amtPort := freePort(t, "udp")
	s, _ := newTestServer(t, func(o *Options) { o.AMTListen = "127.0.0.1:" + strconv.Itoa(amtPort) })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(ctx, ln) }()
	defer func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	base := "http://" + ln.Addr().String()
	u, err := net.Dial("udp", s.opts.AMTListen)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		u.Write([]byte{0x5f, 0, 0}) // the relay may not be reading yet: repeat
		m := scrape(t, base)
		if m[`castd_amt_refused_total{reason="malformed"}`] >= 1 {
			for _, r := range amtrelay.RefusalReasons {
				if _, ok := m[`castd_amt_refused_total{reason="`+r+`"}`]; !ok {
					t.Errorf("no castd_amt_refused_total for reason %q", r)
				}
			}
			if _, ok := m["castd_amt_bad_mac_total"]; ok {
				t.Error("the old castd_amt_bad_mac_total is still exported")
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("castd_amt_refused_total{reason=\"malformed\"} never counted the malformed message")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
