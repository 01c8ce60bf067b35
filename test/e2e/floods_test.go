package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/blockcast/beacon/firmware/castclient"
	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/protocol"
	"github.com/blockcast/beacon/test/harness"
)

const adminToken = "op-secret"

// nodeStatus asks castd's operator API for one node: the HTTP status and,
// when found, its view.
func nodeStatus(t *testing.T, sys *harness.System, id string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, sys.CastdURL()+protocol.PathNodes+"/"+id, nil)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v map[string]any
	json.NewDecoder(resp.Body).Decode(&v)
	return resp.StatusCode, v
}

// holdSockets keeps n TCP connections from src to addr open until ctx
// ends, like an attacker that never sends CONNECT: a connection the server
// closes is opened again, at once if it had held on for a while (it had a
// handshake slot), after a second if it was shed straight away. opened
// counts the connections made; wait returns when all have ended.
func holdSockets(ctx context.Context, src, addr string, n int) (opened func() int64, wait func()) {
	var count atomic.Int64
	var wg sync.WaitGroup
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 2 * time.Second}
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 1)
			for ctx.Err() == nil {
				c, err := d.DialContext(ctx, "tcp", addr)
				if err != nil {
					if ctx.Err() == nil {
						sleepCtx(ctx, time.Second)
					}
					continue
				}
				count.Add(1)
				start := time.Now()
				stop := context.AfterFunc(ctx, func() { c.Close() })
				c.Read(buf) // blocks until the server closes it (or ctx ends)
				stop()
				c.Close()
				if time.Since(start) < 200*time.Millisecond {
					sleepCtx(ctx, time.Second)
				}
			}
		}()
	}
	return count.Load, wg.Wait
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// killAndRestart kills the beacon with SIGKILL, waits until castd no longer
// routes to it, restarts it and returns how long it took from the restart
// until castd routes to it again (registered, connected, heard online).
func killAndRestart(t *testing.T, sys *harness.System, limit time.Duration) (time.Duration, error) {
	t.Helper()
	sys.Beacon.Kill()
	if !harness.WaitFor(15*time.Second, func() bool { return decision(t, sys) != protocol.DecisionBeacon }) {
		t.Fatal("castd still routes to the killed beacon")
	}
	start := time.Now()
	if err := sys.StartBeacon(); err != nil {
		t.Fatal(err)
	}
	err := sys.WaitRoutable(limit)
	return time.Since(start), err
}

// The attack from issue 10: one address holds 2,000 sockets to the broker
// and never sends CONNECT. The old broker's 1,024 handshake slots were all
// the attacker's, so a registered beacon that restarted could not connect;
// now one address holds only its own few slots, and the beacon is back
// within its normal reconnect time, with the shedding counted and logged.
func TestHandshakeFloodBeaconReconnects(t *testing.T) {
	if testing.Short() {
		t.Skip("holds 2,000 sockets")
	}
	sys := startSystem(t, "--admin-token", adminToken)
	id := mustStatus(t, sys)["node_id"].(string)

	// The normal reconnect time, measured without the attack.
	normal, err := killAndRestart(t, sys, 20*time.Second)
	if err != nil {
		t.Fatalf("without an attack: %v", err)
	}
	limit := max(2*normal+2*time.Second, 5*time.Second)

	ctx, cancel := context.WithCancel(context.Background())
	opened, wait := holdSockets(ctx, "127.0.0.2", sys.MQTTAddr, 2000)
	defer func() { cancel(); wait() }()
	// Let the attack take hold: every socket opened once, and held past the
	// handshake deadline, so that the slots it held were cut and taken
	// again.
	if !harness.WaitFor(20*time.Second, func() bool { return opened() >= 2000 }) {
		t.Fatalf("attack did not take hold: %d sockets opened", opened())
	}
	time.Sleep(6 * time.Second)
	took, err := killAndRestart(t, sys, limit)
	if err != nil {
		t.Fatalf("under the attack the restarted beacon is not back within %s (normal %s): %v", limit, normal.Round(time.Millisecond), err)
	}
	if code, v := nodeStatus(t, sys, id); code != http.StatusOK || v["state"] != "online" {
		t.Fatalf("node view %d %v, want online", code, v)
	}
	cancel()
	wait()
	shed := map[string]float64{}
	for _, r := range []string{"per_address", "total", "rate", "timeout"} {
		shed[r] = metric(t, sys, `castd_mqtt_connections_shed_total{reason="`+r+`"}`)
	}
	t.Logf("normal reconnect %s, under 2,000 held sockets %s; attacker opened %d connections; shed %v",
		normal.Round(time.Millisecond), took.Round(time.Millisecond), opened(), shed)
	if shed["total"] != 0 {
		t.Errorf("one address filled the global handshake bound: %v", shed)
	}
	if shed["per_address"] == 0 || shed["timeout"] == 0 {
		t.Errorf("shedding not counted by reason: %v", shed)
	}
	if log := readLog(t, sys.Castd.Log); !strings.Contains(log, "shedding connections") {
		t.Errorf("castd did not log the shedding at warn")
	} else if n := strings.Count(log, "shedding connections"); n > 10 {
		t.Errorf("%d shedding lines: not rate-limited", n)
	}
}

func readLog(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// Registrations that never come online on the control plane are removed
// after --registration-ttl, from the registry and the router; a beacon that
// came online stays, across a castd restart too.
func TestRegistrationExpiry(t *testing.T) {
	const ttl = 3 * time.Second
	sys := startSystem(t, "--admin-token", adminToken, "--registration-ttl", ttl.String())
	beaconID := mustStatus(t, sys)["node_id"].(string)

	registerFresh := func(n int) []string {
		var ids []string
		for i := 0; i < n; i++ {
			kp, _ := identity.Generate()
			c, err := castclient.New(sys.CastdURL(), kp)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.Register(context.Background(), protocol.Registration{
				Role: protocol.RoleBeacon, LANURL: fmt.Sprintf("http://10.1.2.%d:8081", i+1),
			}); err != nil {
				t.Fatalf("fresh registration %d: %v", i, err)
			}
			ids = append(ids, kp.ID())
		}
		return ids
	}
	gone := func(ids []string) bool {
		for _, id := range ids {
			if code, _ := nodeStatus(t, sys, id); code != http.StatusNotFound {
				return false
			}
		}
		return true
	}
	unused := registerFresh(5)
	for _, id := range unused {
		if code, _ := nodeStatus(t, sys, id); code != http.StatusOK {
			t.Fatalf("fresh registration %s not listed: %d", id, code)
		}
	}
	if !harness.WaitFor(3*ttl+5*time.Second, func() bool { return gone(unused) }) {
		t.Fatalf("registrations never seen online still listed after %s", 3*ttl+5*time.Second)
	}
	if got := metric(t, sys, "castd_registrations_expired_total"); got != 5 {
		t.Errorf("castd_registrations_expired_total %v, want 5", got)
	}
	if got := metric(t, sys, `castd_registered_nodes`); got != 1 {
		t.Errorf("castd_registered_nodes %v, want 1 (the beacon)", got)
	}
	if code, v := nodeStatus(t, sys, beaconID); code != http.StatusOK || v["state"] != "online" {
		t.Fatalf("the online beacon: %d %v", code, v)
	}

	// castd restarts: the beacon's first-online time is on disk, so it is
	// kept; a fresh registration from before the restart still expires.
	late := registerFresh(2)
	if err := sys.Castd.Stop(10 * time.Second); err != nil {
		t.Fatalf("castd did not stop cleanly: %v", err)
	}
	if err := sys.StartCastd(); err != nil {
		t.Fatal(err)
	}
	if !harness.WaitFor(3*ttl+5*time.Second, func() bool { return gone(late) }) {
		t.Fatalf("registrations from before the restart, never online, still listed")
	}
	if err := sys.WaitRoutable(15 * time.Second); err != nil {
		t.Fatal(err)
	}
	time.Sleep(ttl) // another sweep or more
	if code, v := nodeStatus(t, sys, beaconID); code != http.StatusOK || v["state"] != "online" {
		t.Fatalf("the beacon after the restart: %d %v", code, v)
	}
	if !strings.Contains(readLog(t, sys.Castd.Log), "registration expired") {
		t.Error("expiry not logged")
	}
}

// A beacon answered 429 waits for Retry-After and then registers: it is
// not given up on, and it does not knock again before castd said. (The
// old beacon retried after its 1 s backoff and was refused again.)
func TestBeaconHonoursRetryAfter(t *testing.T) {
	sys := newSystem(t)
	// One new node per address at once, then one every 3 s: Retry-After 3.
	sys.CastdArgs = []string{"--admin-token", adminToken, "--registration-burst", "1", "--registration-rate", "20"}
	if err := sys.StartCastd(); err != nil {
		t.Fatal(err)
	}
	// Another new device behind the same address takes the one token.
	kp, _ := identity.Generate()
	c, _ := castclient.New(sys.CastdURL(), kp)
	if _, err := c.Register(context.Background(), protocol.Registration{Role: protocol.RoleBeacon, LANURL: "http://10.1.2.3:8081"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Register(context.Background(), protocol.Registration{Role: protocol.RoleBeacon, LANURL: "http://10.1.2.3:8081"}); err != nil {
		t.Fatalf("a registered node re-registering is not limited: %v", err)
	}
	other, _ := identity.Generate()
	oc, _ := castclient.New(sys.CastdURL(), other)
	_, err := oc.Register(context.Background(), protocol.Registration{Role: protocol.RoleBeacon, LANURL: "http://10.1.2.4:8081"})
	if after, ok := castclient.RetryAfter(err); !errors.Is(err, castclient.ErrRetryLater) || !ok || after != 3*time.Second {
		t.Fatalf("second new node: %v (Retry-After %s), want 429 with Retry-After 3", err, after)
	}
	start := time.Now()
	if err := sys.StartBeacon(); err != nil {
		t.Fatal(err)
	}
	if err := harness.WaitRegistered(sys.AdminAddr, 15*time.Second); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	// The probe above and the beacon's first try were refused; the beacon
	// waited Retry-After, so its second try got the refilled token.
	if got := metric(t, sys, "castd_registrations_rate_limited_total"); got != 2 {
		t.Errorf("castd_registrations_rate_limited_total %v, want 2 (the probe and the beacon's first try)", got)
	}
	if !strings.Contains(readLog(t, sys.Beacon.Log), "429") {
		t.Errorf("the beacon did not log the 429")
	}
	t.Logf("beacon registered %s after start, past one 429", took.Round(time.Millisecond))
}
