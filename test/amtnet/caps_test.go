package amtnet

import (
	"bufio"
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/blockcast/beacon/cross"
	"github.com/blockcast/beacon/test/harness"
)

// dynamicUID plays the user systemd's DynamicUser= allocates (its range is
// 61184–65519); nothing on a test machine owns it.
const dynamicUID = 61901

// TestDebUnitReemits builds the amd64 .deb as `make package-deb` does,
// takes blockcast.service out of it, and runs the beacon in the gateway
// namespace with that unit's identity and capabilities applied by setpriv
// (util-linux) as systemd would apply them: a non-root dynamic user, the
// unit's bounding set, its ambient capabilities, no new privileges. The
// beacon re-emits a tunnelled channel on its LAN interface, and a receiver
// in the LAN namespace gets the stream. A unit without CAP_NET_RAW (as
// shipped before) makes the beacon exit: "needs root or CAP_NET_RAW".
func TestDebUnitReemits(t *testing.T) {
	tools := require(t, "setpriv", "dpkg-deb")
	unit, bin := debUnit(t, tools["dpkg-deb"])
	svc := unit["Service"]
	setpriv := []string{"--reuid=" + fmt.Sprint(dynamicUID), "--regid=" + fmt.Sprint(dynamicUID), "--clear-groups"}
	if last(svc["DynamicUser"]) != "yes" {
		t.Fatalf("the unit has no DynamicUser=yes (User=%q): this test plays a dynamic user", svc["User"])
	}
	if v := last(svc["PrivateUsers"]); v != "" && v != "no" {
		t.Fatalf("PrivateUsers=%s: in a user namespace of its own the beacon's capabilities do not reach the LAN's network namespace", v)
	}
	bounding, ambient := capList(svc["CapabilityBoundingSet"]), capList(svc["AmbientCapabilities"])
	setpriv = append(setpriv, "--bounding-set=-all"+bounding, "--inh-caps=-all"+ambient)
	if ambient != "" {
		setpriv = append(setpriv, "--ambient-caps=-all"+ambient)
	}
	if last(svc["NoNewPrivileges"]) == "yes" {
		setpriv = append(setpriv, "--no-new-privs")
	}
	t.Logf("the unit's sandbox as setpriv applies it: %q", setpriv)

	// The state directory, as StateDirectory= makes it: owned by the
	// service user, mode 0700.
	state, err := os.MkdirTemp("", "amtnet-state-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(state) })
	if err := os.Chmod(state, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(state, dynamicUID, dynamicUID); err != nil {
		t.Fatal(err)
	}

	l := newLab(t, labOpts{})
	group := netip.MustParseAddrPort("232.10.7.1:5007")
	l.startCastd("--amt-query-interval", "10s")
	argv := append(append(setpriv, "--", bin), strings.Fields(strings.TrimPrefix(last(svc["ExecStart"]), "/usr/bin/beacon"))...)
	argv = append(argv,
		"--cast-url", "http://127.0.0.1:9",
		"--listen", "127.0.0.1:8081",
		"--lan-url", "http://10.200.3.1:8081",
		"--admin-listen", beaconAdmin,
		"--state-dir", state,
		"--amt-driad=false",
		"--lan-iface", lanIface,
		"--amt-reemit-ttl", "4",
		"--amt-join", srcIP4.String()+"@"+group.Addr().String()+" relay="+amtRelayIP4.String()+" reemit",
	)
	wbin, wargs := l.gw.Wrap(tools["setpriv"], argv...)
	p, err := harness.Start("beacon", filepath.Join(l.dir, "beacon.log"), wbin, wargs...)
	if err != nil {
		t.Fatal(err)
	}
	l.beacon = p
	if !harness.WaitFor(15*time.Second, func() bool {
		_, err := l.gwState()
		return err == nil || p.Exited()
	}) || p.Exited() {
		t.Fatalf("the beacon did not come up under the unit's sandbox:\n%s", p.Tail(3000))
	}
	// It is the unit's user, with CAP_NET_RAW and nothing else.
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.Pid()))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{fmt.Sprintf("Uid:\t%d\t%d\t%d\t%d", dynamicUID, dynamicUID, dynamicUID, dynamicUID), "CapEff:\t0000000000002000", "CapBnd:\t0000000000002000", "NoNewPrivs:\t1"} {
		if !bytes.Contains(status, []byte(want+"\n")) {
			t.Errorf("beacon /proc status lacks %q:\n%s", want, status)
		}
	}
	l.waitJoined(srcIP4, group.Addr(), 15*time.Second)

	snd := newSender(t, l.src, "eth0", srcIP4, group)
	rcv := newReceiver(t, l.lan, "eth0", srcIP4, group, snd.run)
	waitAMTRelayNative(t, l, 1)
	const n = 200
	if err := snd.send(0, n, time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if !rcv.waitCount(n, 10*time.Second) {
		t.Errorf("the LAN received %d of %d datagrams", rcv.count(), n)
	}
	if err := checkInOrder(rcv.arrivals()); err != nil {
		t.Error(err)
	}
	t.Logf("%d datagrams re-emitted on the LAN by the beacon as the .deb's unit runs it", rcv.count())
}

// debUnit builds the amd64 .deb from the native beacon, unpacks it, and
// returns its unit (section -> key -> values) and its /usr/bin/beacon.
func debUnit(t *testing.T, dpkgDeb string) (map[string]map[string][]string, string) {
	t.Helper()
	root, err := harness.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	tg, err := cross.Lookup("amd64")
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	beacon := binaries(t).Beacon
	fi, err := os.Stat(beacon)
	if err != nil {
		t.Fatal(err)
	}
	const version = "v0.0.1"
	man := filepath.Join(work, cross.ManifestName)
	m := &cross.Manifest{Version: version, PackageVersion: cross.PackageVersion(version),
		Artifacts: []cross.Artifact{{Target: tg, Binary: beacon, Size: fi.Size()}}}
	if err := cross.WriteManifest(man, m); err != nil {
		t.Fatal(err)
	}
	// cross/pkgtool is a module of its own; `go run` builds it as make does.
	out := filepath.Join(work, "pkg")
	cmd := exec.Command("go", "run", ".", "--root", root, "--manifest", man, "--out", out, "--formats", "deb")
	cmd.Dir = filepath.Join(root, "cross", "pkgtool")
	cmd.Env = append(os.Environ(), "GOFLAGS=", "GOTOOLCHAIN=local", "CGO_ENABLED=0", "SOURCE_DATE_EPOCH=1700000000")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("pkgtool: %v\n%s", err, b)
	}
	debs, err := filepath.Glob(filepath.Join(out, "*_amd64.deb"))
	if err != nil || len(debs) != 1 {
		t.Fatalf("debs %v %v", debs, err)
	}
	// Unpacked where the dynamic user can reach the binary.
	dir, err := os.MkdirTemp("", "amtnet-deb-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if b, err := exec.Command(dpkgDeb, "-x", debs[0], dir).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb -x: %v\n%s", err, b)
	}
	unit := filepath.Join(dir, "lib/systemd/system/blockcast.service")
	return readUnit(t, unit), filepath.Join(dir, "usr/bin/beacon")
}

// readUnit reads a systemd unit into section -> key -> values.
func readUnit(t *testing.T, path string) map[string]map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u := map[string]map[string][]string{}
	sec := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			sec = line[1 : len(line)-1]
			u[sec] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || sec == "" {
				t.Fatalf("%s: bad line %q", path, line)
			}
			u[sec][k] = append(u[sec][k], v)
		}
	}
	return u
}

// last is a setting's effective value: the last assignment wins.
func last(vs []string) string {
	if len(vs) == 0 {
		return ""
	}
	return vs[len(vs)-1]
}

// capList turns a unit's capability list ("CAP_NET_RAW CAP_X") into
// setpriv's ",+net_raw,+x". An empty assignment resets the list, as in
// systemd.
func capList(vs []string) string {
	var out string
	for _, v := range vs {
		if strings.TrimSpace(v) == "" {
			out = ""
			continue
		}
		for _, c := range strings.Fields(v) {
			out += ",+" + strings.ToLower(strings.TrimPrefix(c, "CAP_"))
		}
	}
	return out
}
