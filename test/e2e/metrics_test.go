package e2e

import (
	"bytes"
	"io"
	"net/http"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/blockcast/beacon/shared/protocol"
	"github.com/blockcast/beacon/test/harness"
)

// scrape GETs a /metrics page as Prometheus does.
func scrape(t *testing.T, url string) []byte {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s, %v", url, resp.Status, err)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Errorf("GET %s: Content-Type %q, want Prometheus text format 0.0.4", url, ct)
	}
	return body
}

// sample reads one series' value ("name" or `name{label="v"}`) from a
// scraped page; ok is false when the series is absent.
func sample(page []byte, series string) (float64, bool) {
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindSubmatch(page)
	if m == nil {
		return 0, false
	}
	v, err := strconv.ParseFloat(string(m[1]), 64)
	return v, err == nil
}

// promtoolCheck runs `promtool check metrics` on page: it parses the page
// as Prometheus would and lints names, types and help texts. Any output is
// a problem, even with exit status 0.
func promtoolCheck(t *testing.T, promtool, what string, page []byte) {
	t.Helper()
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(page)
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("%s: promtool check metrics: %v\n%s\n--- the page:\n%s", what, err, out, page)
	}
}

// TestMetricsPromtool scrapes castd's /metrics and the beacon's (on its
// local status endpoint) after traffic has moved their counters, and checks
// both with Prometheus's own parser and linter.
func TestMetricsPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	need(t, "promtool (Debian prometheus)", err)
	sys := startSystem(t, "--admin-token", "op-secret")
	id := mustStatus(t, sys)["node_id"].(string)

	// Traffic: a MISS, a HIT, a command and its result, a refused request.
	path := "/obj/64k/metrics.bin"
	expectVia(t, sys, fetch(t, sys.CastdURL()+path), path, "MISS", 64<<10)
	expectVia(t, sys, fetch(t, sys.CastdURL()+path), path, "HIT", 64<<10)
	commandResult(t, sys, sendCommand(t, sys, id, "purge", "/nothing-here"))
	if resp, err := http.Get(sys.CastdURL() + protocol.PathRoute + "?path=relative"); err == nil {
		resp.Body.Close()
	}

	checks := []struct {
		what, url string
		moved     []string // series that traffic must have set above 0
	}{
		{"castd", sys.CastdURL() + protocol.PathMetrics, []string{
			"castd_midcache_misses_total", "castd_midcache_upstream_bytes_total", "castd_midcache_objects",
			"castd_registered_nodes", `castd_nodes{state="online"}`, `castd_router_entries{kind="beacon"}`,
			"castd_mqtt_clients", "castd_mqtt_read_rounds_total",
			"castd_control_messages_accepted_total", "castd_requests_refused_total",
		}},
		{"beacon", "http://" + sys.AdminAddr + protocol.PathMetrics, []string{
			"beacon_cache_hits_total", "beacon_cache_misses_total", "beacon_cache_served_bytes_total",
			"beacon_cache_upstream_bytes_total", "beacon_registered",
		}},
	}
	for _, c := range checks {
		var page []byte
		var missing []string
		// Health reports and results arrive asynchronously: wait for them.
		harness.WaitFor(10*time.Second, func() bool {
			page, missing = scrape(t, c.url), nil
			for _, s := range c.moved {
				if v, ok := sample(page, s); !ok || v <= 0 {
					missing = append(missing, s)
				}
			}
			return len(missing) == 0
		})
		if len(missing) > 0 {
			t.Errorf("%s: series not moved by the traffic: %v\n%s", c.what, missing, page)
		}
		promtoolCheck(t, promtool, c.what, page)
	}
}
