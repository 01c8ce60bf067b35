package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/blockcast/beacon/cloud/broker/brokertest"
	"github.com/blockcast/beacon/shared/protocol"
	"github.com/blockcast/beacon/test/harness"
)

// sendCommand POSTs an operator command for node id and returns the command
// ID castd answers with (202 Accepted).
func sendCommand(t *testing.T, sys *harness.System, id, op, arg string) string {
	t.Helper()
	body := fmt.Sprintf(`{"op":%q,"arg":%q}`, op, arg)
	req, _ := http.NewRequest(http.MethodPost, sys.CastdURL()+protocol.PathNodes+"/"+id+protocol.PathCommandsSuffix, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer op-secret")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var reply protocol.CommandReply
	if err := json.NewDecoder(resp.Body).Decode(&reply); err != nil || resp.StatusCode != http.StatusAccepted || reply.ID == "" {
		t.Fatalf("%s %q: %s, reply %+v (%v)", op, arg, resp.Status, reply, err)
	}
	return reply.ID
}

// logRecord is one line of a slog text log, as key → value.
type logRecord map[string]string

var logPair = regexp.MustCompile(`(\w+)=("(?:[^"\\]|\\.)*"|\S*)`)

// logRecords parses a process's text log, keeping the records whose message
// is msg.
func logRecords(t *testing.T, path, msg string) []logRecord {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []logRecord
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		rec := logRecord{}
		for _, m := range logPair.FindAllStringSubmatch(sc.Text(), -1) {
			v := m[2]
			if strings.HasPrefix(v, `"`) {
				if u, err := strconv.Unquote(v); err == nil {
					v = u
				}
			}
			if _, dup := rec[m[1]]; !dup { // the first "component" wins
				rec[m[1]] = v
			}
		}
		if rec["msg"] == msg {
			out = append(out, rec)
		}
	}
	return out
}

// commandResult waits for the result castd logs ("command result") of
// command cid: the only place an operator sees it today.
func commandResult(t *testing.T, sys *harness.System, cid string) logRecord {
	t.Helper()
	var got logRecord
	if !harness.WaitFor(15*time.Second, func() bool {
		for _, r := range logRecords(t, sys.Castd.Log, "command result") {
			if r["cmd"] == cid {
				got = r
				return true
			}
		}
		return false
	}) {
		t.Fatalf("no result for command %s in castd's log", cid)
	}
	return got
}

// TestPrefetchAndReregister runs the operator's prefetch and reregister
// commands end to end: castd's command API, a command signed with the CAST
// key over MQTT (embedded broker and Mosquitto), the real beacon running
// it, and the result coming back to castd.
func TestPrefetchAndReregister(t *testing.T) {
	brokerKinds(t, func(t *testing.T, sys *harness.System, _ *brokertest.Mosquitto) {
		id := mustStatus(t, sys)["node_id"].(string)
		const size = 256 << 10
		path := "/obj/256k/prefetched.bin"

		// prefetch: the beacon pulls the object once, before any user asks.
		r := commandResult(t, sys, sendCommand(t, sys, id, "prefetch", path))
		if r["ok"] != "true" || r["op"] != "prefetch" || r["node"] != id {
			t.Fatalf("prefetch result %v", r)
		}
		if want := fmt.Sprintf("%s MISS, %d bytes", path, size); r["detail"] != want {
			t.Errorf("prefetch detail %q, want %q", r["detail"], want)
		}
		if n := sys.Origin.Hits(path); n != 1 {
			t.Fatalf("origin hit %d times by the prefetch, want 1", n)
		}
		// A user's fetch is then a HIT with the origin's bytes, and the
		// origin sees nothing more.
		expectVia(t, sys, fetch(t, sys.CastdURL()+path), path, "HIT", size)
		if n := sys.Origin.Hits(path); n != 1 {
			t.Errorf("origin hit %d times after the user's fetch, want 1", n)
		}
		// Prefetching a cached object costs the origin nothing.
		if r := commandResult(t, sys, sendCommand(t, sys, id, "prefetch", path)); r["ok"] != "true" || !strings.Contains(r["detail"], "HIT") {
			t.Errorf("second prefetch result %v, want ok and a HIT", r)
		}
		if n := sys.Origin.Hits(path); n != 1 {
			t.Errorf("origin hit %d times after a second prefetch, want 1", n)
		}

		// A prefetch the origin refuses comes back as a failure that says
		// why.
		missing := "/gone/1k/x.bin" // the origin answers 404
		r = commandResult(t, sys, sendCommand(t, sys, id, "prefetch", missing))
		if r["ok"] != "false" || !strings.Contains(r["err"], "404") {
			t.Errorf("prefetch of a missing object: result %v, want ok=false naming the 404", r)
		}
		// So does one whose answer a shared cache may not store: an "ok"
		// would tell the operator it is there when it is not.
		nostore := "/nostore/1k/x.bin" // Cache-Control: no-store
		r = commandResult(t, sys, sendCommand(t, sys, id, "prefetch", nostore))
		if r["ok"] != "false" || !strings.Contains(r["err"], "not cached") {
			t.Errorf("prefetch of a no-store object: result %v, want ok=false saying it is not cached", r)
		}
		if c, _ := mustStatus(t, sys)["cache"].(map[string]any); c["Objects"] != float64(1) {
			t.Errorf("cache after failed prefetches: %v, want the one prefetched object", c)
		}

		// reregister: the beacon registers again (castd logs the
		// registration), the result is ok, and the node stays routed.
		registrations := func() int {
			n := 0
			for _, r := range logRecords(t, sys.Castd.Log, "node registered") {
				if r["id"] == id {
					n++
				}
			}
			return n
		}
		before := registrations()
		if before < 1 {
			t.Fatalf("castd logged %d registrations of %s before the command", before, id)
		}
		r = commandResult(t, sys, sendCommand(t, sys, id, "reregister", ""))
		if r["ok"] != "true" || r["op"] != "reregister" {
			t.Fatalf("reregister result %v", r)
		}
		if !harness.WaitFor(10*time.Second, func() bool { return registrations() > before }) {
			t.Fatalf("the beacon did not register again: castd logged %d registrations, as before", registrations())
		}
		if err := harness.WaitRegistered(sys.AdminAddr, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		if err := sys.WaitRoutable(10 * time.Second); err != nil {
			t.Fatal(err)
		}
	})
}
