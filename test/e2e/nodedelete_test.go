package e2e

import (
	"net/http"
	"testing"
	"time"

	"github.com/blockcast/beacon/shared/protocol"
	"github.com/blockcast/beacon/test/harness"
)

// The operator removes a node: its record, its routing and its control-
// plane session go at once. (Registration is open, so the beacon, told it
// is unknown, may register again as any new node may; it then starts from
// a fresh record.)
func TestOperatorRemovesNode(t *testing.T) {
	sys := startSystem(t, "--admin-token", "op-secret")
	id := mustStatus(t, sys)["node_id"].(string)
	del := func(token string) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodDelete, sys.CastdURL()+protocol.PathNodes+"/"+id, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := del("wrong"); code != http.StatusUnauthorized {
		t.Fatalf("DELETE with a wrong token: %d", code)
	}
	if d := decision(t, sys); d != protocol.DecisionBeacon {
		t.Fatalf("before removal: %s", d)
	}
	if code := del("op-secret"); code != http.StatusNoContent {
		t.Fatalf("DELETE: %d", code)
	}
	// Routing stops at once, before the beacon could have registered again.
	if d := decision(t, sys); d != protocol.DecisionOrigin {
		t.Errorf("right after removal castd routes to %s", d)
	}
	if !harness.WaitFor(5*time.Second, func() bool {
		for _, r := range logRecords(t, sys.Castd.Log, "closed the deleted node's MQTT sessions") {
			if r["id"] == id && r["sessions"] == "1" {
				return true
			}
		}
		return false
	}) {
		t.Fatal("castd did not close the removed node's MQTT session")
	}
	if n := len(logRecords(t, sys.Castd.Log, "node deleted by the operator")); n != 1 {
		t.Fatalf("%d removal log lines, want 1", n)
	}
	// The beacon notices it is unknown and registers afresh, as a new node.
	if err := sys.WaitRoutable(20 * time.Second); err != nil {
		t.Fatalf("the beacon did not register again: %v", err)
	}
}
