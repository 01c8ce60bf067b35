package e2e

import (
	"context"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/blockcast/beacon/cloud/broker/brokertest"
	"github.com/blockcast/beacon/test/harness"
)

// receiptArgs make receipts quick enough for a test.
var receiptArgs = []string{"--receipt-interval", "400ms", "--receipt-resend", "1s"}

// receiptsOf reads the receipts summary of castd's view of node id.
func receiptsOf(t *testing.T, sys *harness.System, id string) map[string]any {
	t.Helper()
	v, _ := nodeView(t, sys, id)["receipts"].(map[string]any)
	return v
}

func num(m map[string]any, k string) float64 {
	f, _ := m[k].(float64)
	return f
}

// beaconReceipts reads the beacon's receipts counters (0s if it is down).
func beaconReceipts(sys *harness.System) map[string]any {
	st, err := harness.BeaconStatus(sys.AdminAddr)
	if err != nil {
		return nil
	}
	r, _ := st["receipts"].(map[string]any)
	return r
}

// fetchDirect asks the beacon itself, as a device in the home does once
// sent there (no router, so it works with castd down).
func fetchDirect(t *testing.T, sys *harness.System, path string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := harness.Fetch(ctx, "http://"+sys.BeaconAddr+path, nil)
	if err != nil || res.Status != http.StatusOK {
		t.Fatalf("fetch %s from the beacon: %+v %v", path, res, err)
	}
}

// receiptsAcrossOutage serves 2 requests through the router, waits until
// castd has them on receipts, cuts castd off (outage), serves 3 more from
// the beacon's cache, waits until they are sealed into a receipt on the
// beacon's disk, optionally kills the beacon -9, restores, and checks that
// castd ends with exactly 5 requests on receipts: none lost, none counted
// twice, no flag raised, and the audits passed.
func receiptsAcrossOutage(t *testing.T, sys *harness.System, outage, restore func(), killBeacon bool) {
	id, _ := mustStatus(t, sys)["node_id"].(string)
	const path = "/obj/64k/receipts.bin"
	expectVia(t, sys, fetch(t, sys.CastdURL()+path), path, "MISS", 64<<10)
	expectVia(t, sys, fetch(t, sys.CastdURL()+path), path, "HIT", 64<<10)
	if !harness.WaitFor(20*time.Second, func() bool { return num(receiptsOf(t, sys, id), "requests") == 2 }) {
		t.Fatalf("castd's receipts before the outage: %v", receiptsOf(t, sys, id))
	}

	outage()
	for range 3 {
		fetchDirect(t, sys, path)
	}
	if !harness.WaitFor(20*time.Second, func() bool {
		r := beaconReceipts(sys)
		return num(r, "requests") == 5 && num(r, "pending") >= 1
	}) {
		t.Fatalf("beacon did not seal the outage's requests into a kept receipt: %v", beaconReceipts(sys))
	}
	if killBeacon {
		sys.Beacon.Kill()
	}
	restore()
	if killBeacon {
		if err := sys.StartBeacon(); err != nil {
			t.Fatal(err)
		}
	}
	if !harness.WaitFor(45*time.Second, func() bool {
		return num(receiptsOf(t, sys, id), "requests") == 5 && num(beaconReceipts(sys), "pending") == 0
	}) {
		t.Fatalf("after the outage: castd %v, beacon %v", receiptsOf(t, sys, id), beaconReceipts(sys))
	}
	v := receiptsOf(t, sys, id)
	if num(v, "flagged") != 0 {
		t.Fatalf("honest receipts flagged: %v", v)
	}
	if !harness.WaitFor(10*time.Second, func() bool { return metric(t, sys, `castd_receipt_audits_total{result="ok"}`) >= 1 }) ||
		metric(t, sys, `castd_receipt_audits_total{result="failed"}`) != 0 {
		t.Fatalf("audits: ok %v, failed %v", metric(t, sys, `castd_receipt_audits_total{result="ok"}`), metric(t, sys, `castd_receipt_audits_total{result="failed"}`))
	}
}

func newReceiptSystem(t *testing.T, castdArgs ...string) *harness.System {
	sys := newSystem(t, append([]string{"--admin-token", "op-secret"}, castdArgs...)...)
	sys.BeaconArgs = receiptArgs
	if err := sys.Start(); err != nil {
		t.Fatal(err)
	}
	return sys
}

// TestReceiptsSurviveBeaconKill: receipts sealed while castd is away and
// then the beacon killed -9 are sent by the restarted beacon.
func TestReceiptsSurviveBeaconKill(t *testing.T) {
	sys := newReceiptSystem(t)
	receiptsAcrossOutage(t, sys,
		func() {
			if err := sys.Castd.Stop(10 * time.Second); err != nil {
				t.Fatal(err)
			}
		},
		func() {
			if err := sys.StartCastd(); err != nil {
				t.Fatal(err)
			}
		}, true)
}

// TestReceiptsSurviveCastdRestart: castd killed -9 (its embedded broker
// with it) while the beacon holds receipts; the beacon sends them to the
// restarted castd, which counts each once.
func TestReceiptsSurviveCastdRestart(t *testing.T) {
	sys := newReceiptSystem(t)
	receiptsAcrossOutage(t, sys, sys.Castd.Kill, func() {
		if err := sys.StartCastd(); err != nil {
			t.Fatal(err)
		}
	}, false)
}

// TestReceiptsSurviveBrokerOutage: an external broker (Mosquitto, without
// persistence) goes away and comes back; castd stays up.
func TestReceiptsSurviveBrokerOutage(t *testing.T) {
	_, err := os.Stat(brokertest.MosquittoPath)
	need(t, "mosquitto", err)
	m := brokertest.StartMosquitto(t)
	sys := newReceiptSystem(t, "--mqtt-listen", "", "--mqtt-broker", "tcp://"+m.Addr())
	receiptsAcrossOutage(t, sys, m.Stop, m.Start, false)
}
