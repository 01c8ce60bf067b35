package mcnet

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/blockcast/beacon/shared/lossconn"
	"github.com/blockcast/beacon/shared/protocol"
	"github.com/blockcast/beacon/test/harness"
	"github.com/blockcast/beacon/test/harness/netns"
)

// The lab's addresses; they exist only inside its namespaces.
//
//	        origin (127.0.0.1 in castd's namespace)
//	          │
//	        castd  10.203.0.1 on lo: HTTP :8080, MQTT :1883, AMT :2268, DTLS :4433
//	       ╱     ╲
//	seg0 10.201.0.1 ╲ amtJ 10.202.J.1/30 ── ambJ (10.202.J.2): a beacon reached only by unicast
//	      │
//	 seg: bridge br0 (no IGMP snooping: a broadcast segment)
//	  ├── nbI 10.201.1.I+1/16: beacons that receive native SSM
//	  └── atk 10.201.2.1/16: the attacker
//
// Every beacon's default route leads to castd, which is also its "public"
// address: castd routes an end user at the beacon's address to it.
const (
	castIP     = "10.203.0.1"
	castSegIP  = "10.201.0.1"
	attackerIP = "10.201.2.1"
	castHTTP   = castIP + ":8080"
	castDTLS   = castIP + ":4433"
	castAMT    = castIP + ":2268"
	castMQTT   = castIP + ":1883"
	segIface   = "seg0"
	adminAddr  = "127.0.0.1:8082" // each beacon's local API, inside its namespace
	adminToken = "mcnet-operator-token-0123456789"
)

// node is one beacon of the lab.
type node struct {
	name   string
	ns     *netns.NS
	ip     string
	viaAMT bool
	proc   *harness.Proc
	// refuse, when set, says the node must refuse castd's offer (an
	// attacker changed it) and get the object by unicast instead.
	refuse bool
}

// lab is one test's namespaces and processes.
type lab struct {
	tb  testing.TB
	net *netns.Lab
	dir string

	cast, seg, attacker *netns.NS
	origin              *harness.Origin
	castd               *harness.Proc
	nodes               []*node
	mu                  sync.Mutex // nodes' procs
}

// newLab builds castd's namespace, the segment with native beacons'
// namespaces and, with attacker, the attacker's, and viaAMT namespaces
// linked to castd alone. Cleanups are registered before anything is made.
func newLab(tb testing.TB, native, viaAMT int, attacker bool) *lab {
	tb.Helper()
	nl := netns.NewTestLab(tb, "mcnet")
	l := &lab{tb: tb, net: nl, dir: tb.TempDir()}
	tb.Cleanup(l.stopAll)
	must := func(err error) {
		tb.Helper()
		if err != nil {
			tb.Fatal(err)
		}
	}
	add := func(name string) *netns.NS {
		tb.Helper()
		n, err := nl.Add(name)
		must(err)
		must(n.NoRPFilter())
		return n
	}
	l.cast, l.seg = add("cast"), add("seg")
	must(l.cast.IP("addr", "add", castIP+"/32", "dev", "lo"))
	must(l.seg.IP("link", "add", "br0", "type", "bridge", "mcast_snooping", "0"))
	must(l.seg.IP("link", "set", "br0", "up"))
	port := 0
	onSegment := func(n *netns.NS, ifname, addr string) {
		tb.Helper()
		p := fmt.Sprintf("p%d", port)
		port++
		must(nl.Link(l.seg, p, n, ifname))
		must(l.seg.IP("link", "set", p, "master", "br0"))
		must(n.Addr(ifname, addr))
	}
	onSegment(l.cast, segIface, castSegIP+"/16")
	for i := 0; i < native; i++ {
		n := &node{name: fmt.Sprintf("nb%d", i), ip: fmt.Sprintf("10.201.1.%d", i+1)}
		n.ns = add(n.name)
		onSegment(n.ns, "eth0", n.ip+"/16")
		must(n.ns.IP("route", "add", "default", "via", castSegIP))
		l.nodes = append(l.nodes, n)
	}
	for j := 0; j < viaAMT; j++ {
		n := &node{name: fmt.Sprintf("amb%d", j), ip: fmt.Sprintf("10.202.%d.2", j), viaAMT: true}
		n.ns = add(n.name)
		gw := fmt.Sprintf("10.202.%d.1", j)
		must(nl.Link(l.cast, fmt.Sprintf("amt%d", j), n.ns, "eth0"))
		must(l.cast.Addr(fmt.Sprintf("amt%d", j), gw+"/30"))
		must(n.ns.Addr("eth0", n.ip+"/30"))
		must(n.ns.IP("route", "add", "default", "via", gw))
		l.nodes = append(l.nodes, n)
	}
	if attacker {
		l.attacker = add("atk")
		onSegment(l.attacker, "eth0", attackerIP+"/16")
		must(l.attacker.IP("route", "add", "default", "via", castSegIP))
		// The attacker sends to the group out of its segment link.
		must(l.attacker.IP("route", "add", "232.0.0.0/8", "dev", "eth0"))
	}
	// The origin is an HTTP server in this process with its socket in
	// castd's namespace: only castd reaches it.
	var ln net.Listener
	must(l.cast.Do(func() (err error) { ln, err = net.Listen("tcp", "127.0.0.1:0"); return err }))
	l.origin = harness.ServeOrigin(ln)
	tb.Cleanup(func() { l.origin.Close() })
	return l
}

// stopAll stops the processes, logging their tails if the test failed.
func (l *lab) stopAll() {
	l.mu.Lock()
	procs := []*harness.Proc{}
	for _, n := range l.nodes {
		if n.proc != nil {
			procs = append(procs, n.proc)
		}
	}
	l.mu.Unlock()
	procs = append(procs, l.castd)
	for _, p := range procs {
		if p == nil {
			continue
		}
		if err := p.Stop(10 * time.Second); err != nil && !l.tb.Failed() {
			l.tb.Errorf("%s: %v", p.Name, err)
		}
		if l.tb.Failed() {
			l.tb.Logf("--- %s log tail:\n%s", p.Name, p.Tail(3000))
		}
	}
}

// startCastd starts castd in its namespace, sending natively on the
// segment and into its AMT relay, with every /obj/ object multicast.
func (l *lab) startCastd(env string, extra ...string) {
	l.tb.Helper()
	args := append([]string{
		"--listen", castHTTP,
		"--state-dir", filepath.Join(l.dir, "castd"),
		"--origin", l.origin.URL,
		"--cache-size", "512MiB",
		"--mqtt-listen", castMQTT,
		"--route-token", harness.RouteToken,
		"--admin-token", adminToken,
		"--allow-private-nodes",
		"--amt-listen", castAMT,
		"--multicast",
		"--multicast-path", "/obj/*",
		"--multicast-iface", segIface,
		"--dtls-listen", castDTLS,
		"--multicast-rate", "400Mbit",
		"--multicast-rate-total", "800Mbit",
		"--repair-rate", "100Mbit",
		"--log-level", "debug",
	}, extra...)
	p, err := l.start(l.cast, "castd", env, binaries(l.tb).Castd, args)
	if err != nil {
		l.tb.Fatal(err)
	}
	l.castd = p
	if !harness.WaitFor(15*time.Second, func() bool {
		resp, err := l.cast.HTTPClient(2 * time.Second).Get("http://" + castHTTP + protocol.PathHealthz)
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == 200
	}) {
		l.tb.Fatalf("castd did not come up:\n%s", p.Tail(4000))
	}
}

// start runs bin in ns with BLOCKCAST_TEST_LOSS=env when env is set.
func (l *lab) start(ns *netns.NS, name, env, bin string, args []string) (*harness.Proc, error) {
	if env != "" {
		envBin, err := exec.LookPath("env")
		if err != nil {
			return nil, err
		}
		args = append([]string{lossconn.EnvVar + "=" + env, bin}, args...)
		bin = envBin
	}
	b, argv := ns.Wrap(bin, args...)
	return harness.Start(name, filepath.Join(l.dir, name+".log"), b, argv...)
}

// startBeacon starts n's beacon with loss env ("" for none).
func (l *lab) startBeacon(n *node, env string, extra ...string) {
	l.tb.Helper()
	args := []string{
		"--cast-url", "http://" + castHTTP,
		"--listen", n.ip + ":8081",
		"--lan-url", "http://" + n.ip + ":8081",
		"--admin-listen", adminAddr,
		"--state-dir", filepath.Join(l.dir, n.name),
		"--cache-size", "128MiB",
		"--check-interval", "2s",
		"--health-interval", "1s",
		"--amt-driad=false",
		"--log-level", "debug",
	}
	if n.viaAMT {
		args = append(args, "--multicast-receive", "amt")
	} else {
		args = append(args, "--multicast-receive", "native", "--multicast-iface", "eth0")
	}
	p, err := l.start(n.ns, n.name, env, binaries(l.tb).Beacon, append(args, extra...))
	if err != nil {
		l.tb.Fatal(err)
	}
	l.mu.Lock()
	n.proc = p
	l.mu.Unlock()
}

// waitReady waits until castd routes an end user at each node's address
// to that node.
func (l *lab) waitReady(nodes []*node) {
	l.tb.Helper()
	var wg sync.WaitGroup
	errs := make([]error, len(nodes))
	for i, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var last string
			if !harness.WaitFor(60*time.Second, func() bool {
				last = l.route(n)
				return last == "beacon"
			}) {
				errs[i] = fmt.Errorf("%s: castd does not route to it (decision %q):\n%s", n.name, last, n.proc.Tail(2000))
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			l.tb.Fatal(err)
		}
	}
}

// route asks castd's router where an end user at n's address goes.
func (l *lab) route(n *node) string {
	req, _ := http.NewRequest("GET", "http://"+castHTTP+protocol.PathRoute+"?path=/probe&client="+n.ip, nil)
	req.Header.Set("Authorization", "Bearer "+harness.RouteToken)
	resp, err := l.cast.HTTPClient(5 * time.Second).Do(req)
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	var d struct{ Decision string }
	json.NewDecoder(resp.Body).Decode(&d)
	return d.Decision
}

// fetch asks castd's router for path as an end user in n's namespace
// (so at n's address) and follows the redirect to n.
func (l *lab) fetch(n *node, path string, timeout time.Duration) (*harness.Result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	res, err := harness.FetchVia(ctx, n.ns.DialContext, "http://"+castHTTP+path, nil)
	if err != nil {
		return res, fmt.Errorf("%s: %w", n.name, err)
	}
	if len(res.Hops) != 2 || res.Hops[1].URL != "http://"+n.ip+":8081"+path {
		return res, fmt.Errorf("%s: hops %+v, want castd's redirect to the beacon", n.name, res.Hops)
	}
	return res, nil
}

// scrape reads a /metrics page from ns.
func scrape(ns *netns.NS, url string) (string, error) {
	resp, err := ns.HTTPClient(5 * time.Second).Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var b strings.Builder
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		b.WriteString(sc.Text())
		b.WriteByte('\n')
	}
	return b.String(), sc.Err()
}

func (l *lab) castdMetrics() string {
	l.tb.Helper()
	s, err := scrape(l.cast, "http://"+castHTTP+protocol.PathMetrics)
	if err != nil {
		l.tb.Fatalf("castd /metrics: %v", err)
	}
	return s
}

func (l *lab) beaconMetrics(n *node) string {
	l.tb.Helper()
	s, err := scrape(n.ns, "http://"+adminAddr+protocol.PathMetrics)
	if err != nil {
		l.tb.Fatalf("%s /metrics: %v", n.name, err)
	}
	return s
}

// sample returns the value of the sample named exactly name (with its
// labels, e.g. `x_total{path="repair"}`), 0 when absent.
func sample(page, name string) float64 {
	for _, line := range strings.Split(page, "\n") {
		if rest, ok := strings.CutPrefix(line, name+" "); ok {
			v, _ := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			return v
		}
	}
	return 0
}

// sum adds every sample of a metric family whose labels contain sel.
func sum(page, family, sel string) float64 {
	var t float64
	for _, line := range strings.Split(page, "\n") {
		if !strings.HasPrefix(line, family+"{") || !strings.Contains(line, sel) {
			continue
		}
		f := strings.Fields(line)
		v, _ := strconv.ParseFloat(f[len(f)-1], 64)
		t += v
	}
	return t
}

// linkBytes returns the bytes ifname in ns has received and sent.
func linkBytes(ns *netns.NS, ifname string) (rx, tx uint64, err error) {
	out, err := exec.Command("ip", "-n", ns.Name(), "-j", "-s", "link", "show", "dev", ifname).Output()
	if err != nil {
		return 0, 0, fmt.Errorf("ip -s link show %s: %w", ifname, err)
	}
	var links []struct {
		Stats struct {
			RX struct{ Bytes uint64 } `json:"rx"`
			TX struct{ Bytes uint64 } `json:"tx"`
		} `json:"stats64"`
	}
	if err := json.Unmarshal(out, &links); err != nil || len(links) != 1 {
		return 0, 0, fmt.Errorf("ip -s link show %s: %q: %v", ifname, out, err)
	}
	return links[0].Stats.RX.Bytes, links[0].Stats.TX.Bytes, nil
}

// rejected formats a beacon's rejected-packet counters by reason.
func rejected(page string) string {
	var b strings.Builder
	for _, line := range strings.Split(page, "\n") {
		if rest, ok := strings.CutPrefix(line, "beacon_multicast_packets_rejected_total{"); ok {
			b.WriteString(rest)
			b.WriteByte(' ')
		}
	}
	return strings.TrimSpace(b.String())
}
