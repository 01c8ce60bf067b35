package e2e

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/blockcast/beacon/cloud/broker/brokertest"
)

// TestCastdRestartWithRetainedStatus restarts castd while an external
// broker (Mosquitto) holds the beacon's retained "online" status, as after
// an upgrade or a crash of castd alone. The retained status reaches castd
// the moment it subscribes, before its control plane is fully set up; it
// must be taken, not crash castd (found by the soak: a nil monitor in the
// state-change callback), and the beacon must be routed again.
func TestCastdRestartWithRetainedStatus(t *testing.T) {
	_, err := os.Stat(brokertest.MosquittoPath)
	need(t, "mosquitto", err)
	m := brokertest.StartMosquitto(t)
	sys := startSystem(t, "--mqtt-listen", "", "--mqtt-broker", "tcp://"+m.Addr())
	for i := 0; i < 3; i++ {
		if err := sys.Castd.Stop(15 * time.Second); err != nil {
			t.Fatalf("restart %d: stop: %v", i, err)
		}
		if err := sys.StartCastd(); err != nil {
			t.Fatalf("restart %d: %v", i, err)
		}
		if err := sys.WaitRoutable(15 * time.Second); err != nil {
			t.Fatalf("restart %d: %v", i, err)
		}
		if tail := sys.Castd.Tail(20000); strings.Contains(tail, "panic:") {
			t.Fatalf("restart %d: castd panicked:\n%s", i, tail)
		}
	}
}
