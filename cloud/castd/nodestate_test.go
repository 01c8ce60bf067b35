package castd

import (
	"bytes"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/protocol"
	"github.com/blockcast/beacon/shared/signedreq"
)

// TestWhoamiNodeState: a node's signed whoami tells it castd's view (its
// owner's status page shows it); an unsigned one or a stranger's says
// nothing about any node. (With a control plane, test/e2e's
// TestStatusPage sees "online" and routable.)
func TestWhoamiNodeState(t *testing.T) {
	_, srv := newTestServer(t, nil)
	whoami := func(kp *identity.Keypair) protocol.Whoami {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, srv.URL+protocol.PathWhoami, nil)
		if kp != nil {
			signedreq.Sign(req, nil, kp, time.Now())
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var w protocol.Whoami
		if err := json.NewDecoder(resp.Body).Decode(&w); err != nil || resp.StatusCode != 200 {
			t.Fatalf("whoami: %d %v", resp.StatusCode, err)
		}
		return w
	}
	node, _ := identity.Generate()
	stranger, _ := identity.Generate()
	body, _ := json.Marshal(protocol.Registration{Role: protocol.RoleBeacon, LANURL: "http://192.168.1.1:8081"})
	req, _ := http.NewRequest(http.MethodPost, srv.URL+protocol.PathRegister, bytes.NewReader(body))
	signedreq.Sign(req, body, node, time.Now())
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("register: %v %v", resp, err)
	}
	resp.Body.Close()

	if w := whoami(node); w.Registered == nil || !*w.Registered || w.Routable == nil || !*w.Routable || w.State != "" {
		t.Errorf("registered node, no control plane: %+v", w)
	}
	if w := whoami(stranger); w.Registered == nil || *w.Registered || w.Routable != nil || w.State != "" {
		t.Errorf("unknown node: %+v", w)
	}
	if w := whoami(nil); w.Registered != nil || w.Routable != nil || w.State != "" || w.IP != "127.0.0.1" {
		t.Errorf("unsigned: %+v", w)
	}
}
