package castd

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/blockcast/beacon/shared/mcproto"
	"github.com/blockcast/beacon/shared/protocol"
	"github.com/blockcast/beacon/test/harness"
)

// TestByteHistory: minutes are differences of the totals at each step,
// the minute in progress last, and an hour at most is kept.
func TestByteHistory(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	h := newByteHistory(t0)
	tot := func(n int64) pathTotals {
		return pathTotals{origin: n, unicast: 2 * n, multicast: n, parity: n / 10, repair: n / 10, offered: 5 * n}
	}
	for i := int64(1); i <= 100; i++ {
		h.record(t0.Add(time.Duration(i)*time.Minute), tot(i*1000))
	}
	v := h.view(t0.Add(100*time.Minute+30*time.Second), tot(100*1000+500))
	if len(v.Minutes) != historyMinutes {
		t.Fatalf("%d minutes, want %d", len(v.Minutes), historyMinutes)
	}
	if m := v.Minutes[0]; !m.Start.Equal(t0.Add(41*time.Minute)) || m.Origin != 1000 || m.Unicast != 2000 || m.Saved != 5000-1000-100-100 {
		t.Errorf("oldest minute %+v", m)
	}
	if m := v.Minutes[len(v.Minutes)-1]; !m.Start.Equal(t0.Add(100*time.Minute)) || m.Origin != 500 {
		t.Errorf("minute in progress %+v", m)
	}
}

// TestMulticastHistoryNeedsOperator: the history says how much each path
// carried (a fleet's traffic): operator only.
func TestMulticastHistoryNeedsOperator(t *testing.T) {
	e := newMCEnv(t, nil)
	for _, auth := range []string{"", "Bearer wrong"} {
		req, _ := http.NewRequest("GET", e.base+protocol.PathMulticastHistory, nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("auth %q: %d", auth, resp.StatusCode)
		}
	}
}

// TestDashboardMulticastChart: after one object went by multicast (taken
// over DTLS) and another by unicast, the operator's dashboard draws the
// last hour by path in headless Chromium, with the bytes of each path in
// its legend; before sign-in there is no chart.
func TestDashboardMulticastChart(t *testing.T) {
	if _, err := harness.ChromiumPath(); err != nil {
		t.Skip("no chromium:", err)
	}
	e := newMCEnv(t, func(o *Options) { o.MulticastPaths = []string{"/sw/*"}; o.RepairRate = -1 })
	kp := e.beacon(t)
	resp, body := e.get(t, kp, "/sw/a.bin", multicastHdr...)
	if !e.isOffer(t, "/sw/a.bin", resp, body) {
		t.Fatal("no offer")
	}
	o, _ := mcproto.DecodeOffer(bytes.NewReader(body))
	if got, _ := takeOffer(t, e, kp, o); !bytes.Equal(got, e.body) {
		t.Fatal("object differs")
	}
	e.get(t, kp, "/other.bin") // unicast

	br, err := harness.StartBrowser(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer br.Close()
	page, err := br.Open(e.base + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer page.Close()
	total := func(series string) int64 {
		v := page.EvalString(fmt.Sprintf(`(document.querySelector('#history-legend [data-series=%q]')||{dataset:{}}).dataset.total||""`, series))
		n, _ := strconv.ParseInt(v, 10, 64)
		return n
	}
	if !harness.WaitFor(15*time.Second, func() bool {
		return page.EvalString(`(document.getElementById("n-beacon")||{}).textContent||""`) == "1"
	}) {
		t.Fatal("the page never showed the totals")
	}
	if n := page.EvalString(`String(document.querySelectorAll("#history-chart polyline, #history-legend span").length)`); n != "0" {
		t.Fatalf("chart drawn before sign-in: %s elements", n)
	}
	if _, err := page.Eval(fmt.Sprintf(`document.getElementById("token").value = %q; document.getElementById("login").requestSubmit(); true`, testToken)); err != nil {
		t.Fatal(err)
	}
	size := int64(len(e.body))
	if !harness.WaitFor(15*time.Second, func() bool { return total("origin") == 2*size }) {
		t.Fatalf("chart never showed the origin pulls; legend %q", page.EvalString(`document.getElementById("history-legend").innerText`))
	}
	if got := total("unicast"); got != size {
		t.Errorf("unicast %d, want %d", got, size)
	}
	if got := total("repair"); got < size {
		t.Errorf("early + repair %d, want at least %d", got, size)
	}
	if got := total("saved"); got >= 0 {
		t.Errorf("saved %d: one beacon over DTLS alone saves nothing", got)
	}
	if n := page.EvalString(`String([...document.querySelectorAll("#history-chart polyline")].filter(p => p.getAttribute("points").includes(",")).length)`); n != "6" {
		t.Errorf("%s lines drawn, want 6", n)
	}
	dir := t.TempDir()
	if d := os.Getenv("SCREENSHOT_DIR"); d != "" {
		os.MkdirAll(d, 0o755)
		dir = d
	}
	if err := page.Screenshot(filepath.Join(dir, "dashboard-multicast.png")); err != nil {
		t.Fatal(err)
	}
}
