package e2e

import (
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/blockcast/beacon/shared/protocol"
	"github.com/blockcast/beacon/test/harness"
)

// mcBeacon is one more beacon of a system, beside sys.Beacon.
type mcBeacon struct {
	addr, admin string
	proc        *harness.Proc
}

// startMoreBeacon starts beacon i of sys (i >= 1; sys.Beacon is 0) with
// its own state, addresses and log, stopped when the test ends.
func startMoreBeacon(t *testing.T, sys *harness.System, i int, args ...string) mcBeacon {
	t.Helper()
	var b mcBeacon
	var err error
	for _, p := range []*string{&b.addr, &b.admin} {
		if *p, err = harness.FreeAddr(); err != nil {
			t.Fatal(err)
		}
	}
	name := fmt.Sprintf("beacon%d", i)
	b.proc, err = harness.Start(name, filepath.Join(sys.Dir, name+".log"), sys.Bin.Beacon, append([]string{
		"--cast-url", sys.CastdURL(), "--listen", b.addr, "--lan-url", "http://" + b.addr, "--admin-listen", b.admin,
		"--state-dir", filepath.Join(sys.Dir, name), "--cache-size", "64MiB", "--check-interval", "2s",
		"--health-interval", "1s", "--log-level", "debug",
	}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("--- %s log tail:\n%s", name, b.proc.Tail(4000))
		}
		if err := b.proc.Stop(10 * time.Second); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	})
	if err := harness.WaitRegistered(b.admin, 15*time.Second); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return b
}

// TestMulticastDelivery: real castd (--multicast, threshold 2, its AMT relay
// as the sink) and three real beacons on loopback that receive through
// their AMT gateways. The first beacon's miss goes by unicast; the next two
// ask at the same time and get offers, take the one session, and store a
// byte-identical object (hash checked) that they then serve as a HIT. The
// origin is asked once; castd's and the beacons' metrics show the paths.
func TestMulticastDelivery(t *testing.T) {
	amtAddr, err := harness.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	dtlsAddr, err := harness.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	const token = "multicast-operator-token-0123456789"
	sys := newSystem(t, "--multicast", "--multicast-threshold", "2", "--multicast-source", "127.0.0.1",
		"--amt-listen", amtAddr, "--dtls-listen", dtlsAddr, "--admin-token", token, "--multicast-rate", "100Mbit")
	sys.BeaconArgs = []string{"--multicast-receive", "amt"}
	if err := sys.Start(); err != nil {
		t.Fatal(err)
	}
	beacons := []mcBeacon{{addr: sys.BeaconAddr, admin: sys.AdminAddr, proc: sys.Beacon}}
	for i := 1; i < 3; i++ {
		beacons = append(beacons, startMoreBeacon(t, sys, i, "--multicast-receive", "amt"))
	}
	const size = 3 << 20
	path := fmt.Sprintf("/obj/%d/popular.bin", size)
	want := harness.ContentSHA256(path, size)
	get := func(b mcBeacon) *harness.Result { return fetch(t, "http://"+b.addr+path) }

	if res := get(beacons[0]); res.Status != 200 || res.SHA256 != want {
		t.Fatalf("beacon 0: %d sha %s", res.Status, res.SHA256)
	}
	var wg sync.WaitGroup
	res := make([]*harness.Result, 3)
	for i := 1; i < 3; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); res[i] = get(beacons[i]) }()
	}
	wg.Wait()
	for i := 1; i < 3; i++ {
		if res[i].Status != 200 || res[i].SHA256 != want {
			t.Fatalf("beacon %d: %d sha %s, want %s", i, res[i].Status, res[i].SHA256, want)
		}
	}
	if n := sys.Origin.Hits(path); n != 1 {
		t.Errorf("origin asked %d times for %s, want 1", n, path)
	}
	if v := metric(t, sys, "castd_multicast_offers_total"); v != 2 {
		t.Errorf("castd offers %v, want 2", v)
	}
	if v := metric(t, sys, "castd_multicast_sessions_total"); v != 1 {
		t.Errorf("castd sessions %v, want 1", v)
	}
	for i := 1; i < 3; i++ {
		page := scrape(t, "http://"+beacons[i].admin+protocol.PathMetrics)
		taken, _ := sample(page, `beacon_multicast_offers_total{result="taken"}`)
		mc, _ := sample(page, `beacon_multicast_bytes_total{path="multicast"}`)
		early, _ := sample(page, `beacon_multicast_bytes_total{path="early"}`)
		repair, _ := sample(page, `beacon_multicast_bytes_total{path="repair"}`)
		fb, _ := sample(page, `beacon_multicast_bytes_total{path="fallback"}`)
		t.Logf("beacon %d: multicast %v early %v repair %v fallback %v bytes", i, mc, early, repair, fb)
		if taken != 1 || mc == 0 || mc+early+repair+fb < size {
			t.Errorf("beacon %d: offers taken %v, multicast %v early %v repair %v fallback %v bytes", i, taken, mc, early, repair, fb)
		}
		if r := get(beacons[i]); r.Status != 200 || r.SHA256 != want || r.Header.Get(protocol.HeaderCache) != "HIT" {
			t.Errorf("beacon %d again: %d %q", i, r.Status, r.Header.Get(protocol.HeaderCache))
		}
	}
	// castd's metrics with multicast on are valid Prometheus text.
	if promtool, err := exec.LookPath("promtool"); err == nil {
		promtoolCheck(t, promtool, "castd /metrics with multicast", scrape(t, sys.CastdURL()+protocol.PathMetrics))
	} else {
		t.Log("no promtool: castd's multicast metrics not checked by it")
	}
	// The operator's history has the bytes by path.
	req, _ := http.NewRequest("GET", sys.CastdURL()+protocol.PathMulticastHistory, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("history: %s", resp.Status)
	}
}
