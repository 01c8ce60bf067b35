package amtnet

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/blockcast/beacon/firmware/amtgw"
	"github.com/blockcast/beacon/shared/amt"
	"github.com/blockcast/beacon/shared/protocol"
	"github.com/blockcast/beacon/test/harness"
	"github.com/blockcast/beacon/test/harness/netns"
)

// The lab's addresses. They exist only inside the lab's namespaces.
//
//	src ──(10.200.1.0/30, fd00:200:1::/64)── relay ──(10.200.2.0/30, fd00:200:2::/64)── gw ──(10.200.3.0/30)── lan
//	                                           │  └──(10.200.4.0/30, fd00:200:4::/64)── attacker
//	                                           └──(10.200.6.0/30)── nat ──(10.200.5.0/30)── gw   (with NAT instead of the direct link)
//
// The source sends native SSM on the src link, where castd receives it
// (--amt-native-iface src0). The beacon's namespace reaches the relay only
// by unicast: nothing forwards multicast, or anything else, between
// namespaces. The relay link also holds the discovery anycast address
// 192.52.193.1, so the beacon can find the relay by RFC 7450 discovery.
var (
	srcIP4         = netip.MustParseAddr("10.200.1.1")
	srcIP6         = netip.MustParseAddr("fd00:200:1::1")
	amtRelayIP4    = netip.MustParseAddr("10.200.2.1")
	amtRelayIP6    = netip.MustParseAddr("fd00:200:2::1")
	gwIP4          = netip.MustParseAddr("10.200.2.2")
	gwIP6          = netip.MustParseAddr("fd00:200:2::2")
	gwLANIP4       = netip.MustParseAddr("10.200.3.1")
	lanIP4         = netip.MustParseAddr("10.200.3.2")
	attackerIP4    = netip.MustParseAddr("10.200.4.2")
	natInIP4       = netip.MustParseAddr("10.200.5.1")
	natGwIP4       = netip.MustParseAddr("10.200.5.2")
	natOutIP4      = netip.MustParseAddr("10.200.6.2")
	amtRelayNatIP4 = netip.MustParseAddr("10.200.6.1")
)

const (
	castdHTTP   = "127.0.0.1:8080" // inside the relay namespace
	beaconAdmin = "127.0.0.1:8082" // inside the gateway namespace
	lanIface    = "lan0"           // the beacon's LAN interface
	nativeIface = "src0"           // castd's native multicast interface
)

// labOpts chooses the lab's optional parts.
type labOpts struct {
	attacker bool // a third namespace on its own link to the relay
	nat      bool // the gateway reaches the relay through a NAT namespace
}

// lab is one test's set of namespaces and processes.
type lab struct {
	tb  testing.TB
	net *netns.Lab
	dir string

	src, amtRelay, gw, lan, attacker, nat *netns.NS

	castd, beacon *harness.Proc
	castdArgs     []string
}

// newLab builds the namespaces and links. Cleanups are registered before
// anything is created: the processes stop, then the namespaces go.
func newLab(tb testing.TB, opts labOpts) *lab {
	tb.Helper()
	nl := netns.NewTestLab(tb, "amtnet")
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
		// Re-emitted datagrams keep their source, which is not on the
		// LAN; SSM receivers must not drop them by reverse-path checks.
		must(n.NoRPFilter())
		return n
	}
	l.src, l.amtRelay, l.gw, l.lan = add("src"), add("relay"), add("gw"), add("lan")

	must(nl.Link(l.src, "eth0", l.amtRelay, nativeIface))
	must(l.src.Addr("eth0", "10.200.1.1/30"))
	must(l.src.Addr("eth0", "fd00:200:1::1/64"))
	must(l.amtRelay.Addr(nativeIface, "10.200.1.2/30"))
	must(l.amtRelay.Addr(nativeIface, "fd00:200:1::2/64"))
	// The sources send SSM out of their only link.
	must(l.src.IP("route", "add", "232.0.0.0/8", "dev", "eth0"))

	if opts.nat {
		l.nat = add("nat")
		must(nl.Link(l.gw, "wan0", l.nat, "in0"))
		must(l.gw.Addr("wan0", "10.200.5.2/30"))
		must(l.nat.Addr("in0", "10.200.5.1/30"))
		must(nl.Link(l.nat, "out0", l.amtRelay, "nat0"))
		must(l.nat.Addr("out0", "10.200.6.2/30"))
		must(l.amtRelay.Addr("nat0", "10.200.6.1/30"))
		must(l.gw.IP("route", "add", "default", "via", natInIP4.String()))
	} else {
		must(nl.Link(l.amtRelay, "gw0", l.gw, "wan0"))
		must(l.amtRelay.Addr("gw0", "10.200.2.1/30"))
		must(l.amtRelay.Addr("gw0", "fd00:200:2::1/64"))
		must(l.amtRelay.Addr("gw0", amt.DiscoveryAddr4.String()+"/32"))
		must(l.gw.Addr("wan0", "10.200.2.2/30"))
		must(l.gw.Addr("wan0", "fd00:200:2::2/64"))
		must(l.gw.IP("route", "add", "default", "via", amtRelayIP4.String()))
		must(l.gw.IP("-6", "route", "add", "default", "via", amtRelayIP6.String()))
	}

	must(nl.Link(l.gw, lanIface, l.lan, "eth0"))
	must(l.gw.Addr(lanIface, "10.200.3.1/30"))
	must(l.lan.Addr("eth0", "10.200.3.2/30"))
	// Players on the LAN join SSM through their default route.
	must(l.lan.IP("route", "add", "default", "via", gwLANIP4.String()))

	if opts.attacker {
		l.attacker = add("attacker")
		must(nl.Link(l.amtRelay, "atk0", l.attacker, "eth0"))
		must(l.amtRelay.Addr("atk0", "10.200.4.1/30"))
		must(l.attacker.Addr("eth0", "10.200.4.2/30"))
		must(l.attacker.IP("route", "add", "default", "via", "10.200.4.1"))
	}
	return l
}

// stopAll stops the processes, logging their tails if the test failed.
func (l *lab) stopAll() {
	for _, p := range []*harness.Proc{l.beacon, l.castd} {
		if p == nil {
			continue
		}
		if err := p.Stop(10 * time.Second); err != nil && !l.tb.Failed() {
			l.tb.Errorf("%s: %v", p.Name, err)
		}
		if l.tb.Failed() {
			l.tb.Logf("--- %s log tail:\n%s", p.Name, p.Tail(8000))
		}
	}
}

// startCastd starts castd in the relay namespace as the AMT relay on port
// 2268 of every address, receiving native SSM on src0. extra flags are
// added; they are kept for restartCastd.
func (l *lab) startCastd(extra ...string) {
	l.tb.Helper()
	l.castdArgs = append([]string{
		"--listen", castdHTTP,
		"--state-dir", filepath.Join(l.dir, "castd"),
		"--origin", "http://127.0.0.1:9", // AMT needs no origin
		"--mqtt-listen", "",
		"--amt-listen", ":2268",
		"--amt-native-iface", nativeIface,
		"--log-level", "debug",
	}, extra...)
	l.runCastd()
}

func (l *lab) runCastd() {
	l.tb.Helper()
	bin, args := l.amtRelay.Wrap(binaries(l.tb).Castd, l.castdArgs...)
	p, err := harness.Start("castd", filepath.Join(l.dir, "castd.log"), bin, args...)
	if err != nil {
		l.tb.Fatal(err)
	}
	l.castd = p
	if !harness.WaitFor(15*time.Second, func() bool {
		_, err := l.castdMetric("castd_amt_gateways")
		return err == nil
	}) {
		l.tb.Fatalf("castd did not come up:\n%s", p.Tail(4000))
	}
}

// killCastd kills castd with SIGKILL, a crash.
func (l *lab) killCastd() { l.castd.Kill() }

// startBeacon starts the beacon in the gateway namespace with lan0 as its
// LAN interface. Its castd URL leads nowhere: registration only retries,
// and the AMT gateway does not depend on it.
func (l *lab) startBeacon(extra ...string) {
	l.tb.Helper()
	args := append([]string{
		"--cast-url", "http://127.0.0.1:9",
		"--listen", "127.0.0.1:8081",
		"--lan-url", "http://10.200.3.1:8081",
		"--admin-listen", beaconAdmin,
		"--state-dir", filepath.Join(l.dir, "beacon"),
		"--amt-driad=false",
		"--lan-iface", lanIface,
		// ffmpeg sends with TTL 1, which a router may not forward.
		"--amt-reemit-ttl", "4",
		"--log-level", "debug",
	}, extra...)
	bin, argv := l.gw.Wrap(binaries(l.tb).Beacon, args...)
	p, err := harness.Start("beacon", filepath.Join(l.dir, "beacon.log"), bin, argv...)
	if err != nil {
		l.tb.Fatal(err)
	}
	l.beacon = p
	if !harness.WaitFor(15*time.Second, func() bool {
		_, err := l.gwState()
		return err == nil
	}) {
		l.tb.Fatalf("beacon did not come up:\n%s", p.Tail(4000))
	}
}

// gwState reads the beacon's gateway state from its local API.
func (l *lab) gwState() (amtgw.State, error) {
	var st amtgw.State
	resp, err := l.gw.HTTPClient(5 * time.Second).Get("http://" + beaconAdmin + protocol.PathAMT)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("GET /v1/amt: %s", resp.Status)
	}
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// channelState returns the gateway's state of (s,g).
func (l *lab) channelState(s, g netip.Addr) (amtgw.ChannelState, bool) {
	st, err := l.gwState()
	if err != nil {
		return amtgw.ChannelState{}, false
	}
	for _, c := range st.Channels {
		if c.Source == s && c.Group == g {
			return c, true
		}
	}
	return amtgw.ChannelState{}, false
}

// waitJoined waits until the gateway reports (s,g) joined.
func (l *lab) waitJoined(s, g netip.Addr, timeout time.Duration) {
	l.tb.Helper()
	var last amtgw.ChannelState
	if !harness.WaitFor(timeout, func() bool {
		c, ok := l.channelState(s, g)
		last = c
		return ok && c.Status == amtgw.StatusJoined
	}) {
		st, err := l.gwState()
		l.tb.Fatalf("%s@%s not joined after %s: %+v\ngateway: %+v (%v)", s, g, timeout, last, st, err)
	}
}

// amtCommand posts a join or leave to the beacon's local API.
func (l *lab) amtCommand(op, channel string) {
	l.tb.Helper()
	body := strings.NewReader(`{"channel":` + strconv.Quote(channel) + `}`)
	resp, err := l.gw.HTTPClient(5*time.Second).Post("http://"+beaconAdmin+protocol.PathAMT+"/"+op, "application/json", body)
	if err != nil {
		l.tb.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		l.tb.Fatalf("POST /v1/amt/%s %q: %s", op, channel, resp.Status)
	}
}

// castdMetric reads one unlabelled sample from castd's /metrics.
func (l *lab) castdMetric(name string) (float64, error) {
	resp, err := l.amtRelay.HTTPClient(5 * time.Second).Get("http://" + castdHTTP + protocol.PathMetrics)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && f[0] == name {
			return strconv.ParseFloat(f[1], 64)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("castd has no metric %s", name)
}

// sharedDir makes a directory that an unprivileged program (VLC) can
// write, removed with the test.
func sharedDir(tb testing.TB) string {
	tb.Helper()
	d, err := os.MkdirTemp("", "amtnet-shared-")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(d) })
	if err := os.Chmod(d, 0o777); err != nil {
		tb.Fatal(err)
	}
	return d
}
