package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/blockcast/beacon/test/harness"
)

// beaconCmd runs the beacon binary with args (and extra environment) and
// returns its stdout, stderr and exit code.
func beaconCmd(t *testing.T, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(bins.Beacon, args...)
	cmd.Env = append(os.Environ(), env...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("beacon %v: %v", args, err)
	}
	return o.String(), e.String(), code
}

// TestBeaconStatusCommand runs `beacon status`, what a router's owner types
// on its shell, against a running beacon, and against none.
func TestBeaconStatusCommand(t *testing.T) {
	sys := startSystem(t)
	path := "/obj/64k/status.bin"
	expectVia(t, sys, fetch(t, sys.CastdURL()+path), path, "MISS", 64<<10)
	expectVia(t, sys, fetch(t, sys.CastdURL()+path), path, "HIT", 64<<10)
	id := mustStatus(t, sys)["node_id"].(string)
	if !harness.WaitFor(10*time.Second, func() bool { return controlField(t, sys, "HealthSent") > 0 }) {
		t.Fatalf("no health report sent: %v", mustStatus(t, sys)["control"])
	}

	out, errOut, code := beaconCmd(t, nil, "status", "--admin-listen", sys.AdminAddr)
	if code != 0 || errOut != "" {
		t.Fatalf("beacon status: exit %d, stderr %q", code, errOut)
	}
	q := regexp.QuoteMeta
	for _, want := range []string{
		`(?m)^node +` + q(id) + ` \(version test, up \S+\)$`,
		`(?m)^castd +` + q(sys.CastdURL()) + `$`,
		`(?m)^registered +yes \(public IP 127\.0\.0\.1, LAN URL ` + q("http://"+sys.BeaconAddr) + `\)$`,
		`(?m)^broker +` + q("tcp://"+sys.MQTTAddr) + ` \(connected since \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(Z|[+-]\d\d:\d\d)\)$`,
		`(?m)^reports +[1-9]\d* sent, \d+ queued, 0 dropped; 0 commands run, 0 refused$`,
		`(?m)^cache +1 objects, \d+\.\d KiB$`,
		`(?m)^hit ratio +50\.0% \(1 hits, 1 misses\)$`,
		`(?m)^served +128\.0 KiB to users, 64\.0 KiB from upstream$`,
	} {
		if !regexp.MustCompile(want).MatchString(out) {
			t.Errorf("beacon status output lacks %s:\n%s", want, out)
		}
	}
	if strings.Contains(out, "last error") {
		t.Errorf("a healthy beacon shows an error:\n%s", out)
	}

	// --json is the status endpoint's document; the address also comes
	// from the environment, as on a packaged router.
	out, errOut, code = beaconCmd(t, []string{"BEACON_ADMIN_LISTEN=" + sys.AdminAddr}, "status", "--json")
	var st map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil {
		t.Fatalf("beacon status --json: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if st["node_id"] != id || st["registered"] != true {
		t.Errorf("beacon status --json: %v", st)
	}

	// No beacon there: a clear error naming the address, exit 1, nothing
	// on stdout.
	nobody, err := harness.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	// Something that is not a beacon's status endpoint (castd): exit 1 too.
	for _, c := range []struct{ addr, want string }{
		{nobody, "is the beacon running?"},
		{sys.CastdAddr, "404 Not Found"},
	} {
		out, errOut, code = beaconCmd(t, nil, "status", "--admin-listen", c.addr)
		if code != 1 || out != "" || !strings.Contains(errOut, c.want) || !strings.Contains(errOut, c.addr) || strings.Contains(errOut, "<nil>") {
			t.Errorf("beacon status --admin-listen %s: exit %d, stdout %q, stderr %q; want exit 1 and an error naming the address and %q", c.addr, code, out, errOut, c.want)
		}
	}
	if _, errOut, code = beaconCmd(t, nil, "status", "--no-such-flag"); code != 2 || !strings.Contains(errOut, "no-such-flag") {
		t.Errorf("beacon status --no-such-flag: exit %d, stderr %q; want exit 2", code, errOut)
	}
}
