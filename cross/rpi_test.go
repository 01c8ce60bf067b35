package cross

import (
	"bufio"
	"bytes"
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/blockcast/beacon/shared/protocol"
	"github.com/blockcast/beacon/test/harness"
)

// unitFile reads a systemd unit into section -> key -> values (keys may
// repeat, as SystemCallFilter does).
func unitFile(t *testing.T, path string) map[string]map[string][]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	u := map[string]map[string][]string{}
	sec := ""
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
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

// envFile reads a systemd EnvironmentFile (KEY=VALUE, # comments; the
// shipped file uses no quoting).
func envFile(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var env []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, _, ok := strings.Cut(line, "=")
		if !ok || !strings.HasPrefix(k, "BEACON_") || strings.ContainsAny(line, `"'\`) {
			t.Fatalf("%s: line %q is not a plain BEACON_*=value", path, line)
		}
		env = append(env, line)
	}
	return env
}

// TestUnitHardening pins the sandbox the unit runs the beacon in.
func TestUnitHardening(t *testing.T) {
	u := unitFile(t, filepath.Join(root(t), "rpi", "blockcast.service"))
	s := u["Service"]
	want := map[string]string{
		"DynamicUser":              "yes",
		"StateDirectory":           "blockcast",
		"ConfigurationDirectory":   "blockcast",
		"ProtectSystem":            "strict",
		"ProtectHome":              "yes",
		"PrivateTmp":               "yes",
		"PrivateDevices":           "yes",
		"NoNewPrivileges":          "yes",
		"CapabilityBoundingSet":    "CAP_NET_RAW",
		"AmbientCapabilities":      "CAP_NET_RAW",
		"MemoryDenyWriteExecute":   "yes",
		"SystemCallArchitectures":  "native",
		"EnvironmentFile":          "/etc/blockcast/beacon.env",
		"ExecStart":                "/usr/bin/beacon run",
		"RestartPreventExitStatus": "2",
	}
	for k, v := range want {
		if got := s[k]; len(got) != 1 || got[0] != v {
			t.Errorf("[Service] %s = %q, want %q", k, got, v)
		}
	}
	if f := s["SystemCallFilter"]; !slices.Contains(f, "@system-service") || !slices.ContainsFunc(f, func(v string) bool { return strings.HasPrefix(v, "~@privileged") }) {
		t.Errorf("SystemCallFilter %q", f)
	}
	// A private user namespace would void CAP_NET_RAW in the host's
	// network namespace: re-emission on the LAN would fail.
	if got := s["PrivateUsers"]; len(got) > 0 && got[len(got)-1] != "no" {
		t.Errorf("PrivateUsers=%q: the beacon's CAP_NET_RAW would not reach the LAN", got)
	}
	if got := u["Install"]["WantedBy"]; !slices.Equal(got, []string{"multi-user.target"}) {
		t.Errorf("WantedBy %q", got)
	}
}

// TestDebInstall builds the amd64 .deb as `make package-deb` does, installs
// it with dpkg into a scratch root (maintainer scripts run, chrootless, with
// DPKG_ROOT set), checks the unit with systemd-analyze, starts the
// installed beacon as the unit would (its ExecStart, its EnvironmentFile)
// and sees it serve, then purges the package.
func TestDebInstall(t *testing.T) {
	dpkg := need(t, "dpkg")
	dpkgDeb := need(t, "dpkg-deb")
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("dpkg --root needs root in CI")
		}
		t.Skip("dpkg --root needs root")
	}
	dir := packages(t, "deb", []string{"amd64"}, "--cast-url", testCastURL)
	debs, err := filepath.Glob(filepath.Join(dir, "*_amd64.deb"))
	if err != nil || len(debs) != 1 {
		t.Fatalf("debs %v %v", debs, err)
	}
	deb := debs[0]

	// Control fields.
	out, err := exec.Command(dpkgDeb, "--field", deb, "Package", "Version", "Architecture", "Section").Output()
	if err != nil {
		t.Fatal(err)
	}
	want := "Package: blockcast-beacon\nVersion: " + PackageVersion(testVersion) + "-1\nArchitecture: amd64\nSection: net\n"
	if string(out) != want {
		t.Errorf("control:\n%s\nwant:\n%s", out, want)
	}
	conffiles, err := exec.Command("sh", "-c", `dpkg-deb --ctrl-tarfile "$1" | tar -xOf - ./conffiles`, "sh", deb).Output()
	if err != nil || strings.TrimSpace(string(conffiles)) != "/etc/blockcast/beacon.env" {
		t.Errorf("conffiles %q %v", conffiles, err)
	}

	// Install into a scratch root.
	r := t.TempDir()
	for _, d := range []string{"var/lib/dpkg/info", "var/lib/dpkg/updates", "var/log"} {
		if err := os.MkdirAll(filepath.Join(r, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"var/lib/dpkg/status", "var/lib/dpkg/available"} {
		if err := os.WriteFile(filepath.Join(r, f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	dpkgRun := func(args ...string) string {
		t.Helper()
		args = append([]string{"--root=" + r, "--force-script-chrootless", "--log=" + filepath.Join(r, "var/log/dpkg.log")}, args...)
		cmd := exec.Command(dpkg, args...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("dpkg %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	dpkgRun("-i", deb)
	purged := false
	t.Cleanup(func() {
		if !purged {
			exec.Command(dpkg, "--root="+r, "--force-script-chrootless", "-P", "blockcast-beacon").Run()
		}
	})
	if out := dpkgRun("-s", "blockcast-beacon"); !strings.Contains(out, "Status: install ok installed") {
		t.Fatalf("dpkg -s:\n%s", out)
	}
	bin := filepath.Join(r, "usr/bin/beacon")
	unit := filepath.Join(r, "lib/systemd/system/blockcast.service")
	env := filepath.Join(r, "etc/blockcast/beacon.env")
	for _, p := range []string{bin, unit, env} {
		if _, err := os.Stat(p); err != nil {
			t.Fatal(err)
		}
	}
	// postinst enabled the unit in the scratch root (systemctl --root).
	if _, err := os.Lstat(filepath.Join(r, "etc/systemd/system/multi-user.target.wants/blockcast.service")); err != nil && hasCmd("systemctl") {
		t.Errorf("unit not enabled by postinst: %v", err)
	}

	// systemd-analyze verify, against the scratch root so that ExecStart
	// resolves to the installed binary. The root gets the host's targets and
	// slices (what the rest of the OS would provide). verify only warns about
	// a misspelt value, so any output is a failure.
	if sa := need(t, "systemd-analyze"); sa != "" {
		units := filepath.Join(r, "usr/lib/systemd/system")
		if err := os.MkdirAll(units, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, glob := range []string{"*.target", "*.slice"} {
			m, _ := filepath.Glob(filepath.Join("/lib/systemd/system", glob))
			for _, p := range m {
				if b, err := os.ReadFile(p); err == nil {
					os.WriteFile(filepath.Join(units, filepath.Base(p)), b, 0o644)
				}
			}
		}
		cmd := exec.Command(sa, "verify", "--root="+r, "--man=no", "/lib/systemd/system/blockcast.service")
		if out, err := cmd.CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
			t.Errorf("systemd-analyze verify: %v\n%s", err, out)
		}
	}

	// Start it as the unit would: ExecStart with the EnvironmentFile. The
	// overrides are what systemd and this machine supply: the state
	// directory (StateDirectory= makes /var/lib/blockcast), free loopback
	// ports, and the castd of this test.
	u := unitFile(t, unit)
	argv := strings.Fields(u["Service"]["ExecStart"][0])
	if argv[0] != "/usr/bin/beacon" {
		t.Fatalf("ExecStart %q", argv)
	}
	fileEnv := envFile(t, filepath.Join(r, u["Service"]["EnvironmentFile"][0]))
	if !slices.Contains(fileEnv, "BEACON_CAST_URL="+testCastURL) {
		t.Errorf("env file %q: --cast-url was not written into it", fileEnv)
	}
	sys, err := harness.NewSystem(t.TempDir(), harness.Binaries{Castd: castd(t), Beacon: bin})
	if err != nil {
		t.Fatal(err)
	}
	defer sys.Close()
	if err := sys.StartCastd(); err != nil {
		t.Fatal(err)
	}
	stateDir := filepath.Join(r, "var/lib/blockcast")
	cmd := exec.Command(bin, argv[1:]...)
	cmd.Env = append([]string{"PATH=/usr/bin:/bin"}, fileEnv...)
	cmd.Env = append(cmd.Env,
		"BEACON_STATE_DIR="+stateDir,
		"BEACON_CAST_URL="+sys.CastdURL(),
		"BEACON_LISTEN="+sys.BeaconAddr,
		"BEACON_LAN_URL=http://"+sys.BeaconAddr,
		"BEACON_ADMIN_LISTEN="+sys.AdminAddr,
		"BEACON_CHECK_INTERVAL=2s",
	)
	logFile, err := os.Create(filepath.Join(t.TempDir(), "beacon.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(os.Interrupt)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			t.Error("beacon did not stop on SIGINT")
		}
		if t.Failed() {
			b, _ := os.ReadFile(logFile.Name())
			t.Logf("beacon log:\n%s", b)
		}
	}()
	if err := harness.WaitRegistered(sys.AdminAddr, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := sys.WaitRoutable(20 * time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(stateDir, "wallet.json")); err != nil {
		t.Errorf("no wallet in the state directory after the first start: %v", err)
	}
	const size = 64 << 10
	path := "/obj/64k/deb"
	for i, wantCache := range []string{"MISS", "HIT"} {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		res, err := harness.Fetch(ctx, sys.CastdURL()+path, nil)
		cancel()
		if err != nil {
			t.Fatalf("fetch %d: %v", i, err)
		}
		if len(res.Hops) != 2 || res.Hops[0].Route != protocol.DecisionBeacon || res.Status != http.StatusOK ||
			res.Hops[1].Cache != wantCache || res.SHA256 != harness.ContentSHA256(path, size) {
			t.Fatalf("fetch %d: status %d hops %+v, want a %s from the beacon", i, res.Status, res.Hops, wantCache)
		}
		waitStored(t, sys.AdminAddr, 1)
	}

	// Purge: package files go, the wallet stays (it is the node's identity).
	dpkgRun("-P", "blockcast-beacon")
	purged = true
	for _, p := range []string{bin, unit, env} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s still there after purge: %v", p, err)
		}
	}
	if _, err := os.Stat(filepath.Join(stateDir, "wallet.json")); err != nil {
		t.Errorf("purge removed the wallet: %v", err)
	}
}

func hasCmd(name string) bool {
	_, err := exec.LookPath(name)
	return err == nil
}
