package cross

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// The beacon's flags are the one table of its settings: every flag must
// have an option in the OpenWrt UCI config, a mapping in the init script
// and a line in the Pi's beacon.env, each with an example value the beacon
// accepts. The tests here read the flags from the beacon itself (its
// --help, which the FlagSet prints), so a new flag fails them until all
// three know it.

// uciOptionOf names the UCI option of the flags whose option is not the
// flag's name with '_' for '-'.
var uciOptionOf = map[string]string{
	"listen":       "listen_port", // with listen_addr
	"admin-listen": "admin_port",  // always on loopback
	"state-dir":    "cache_path",  // the wallet lives apart, in /etc/blockcast
	"key":          "wallet",
}

// uciExtra are UCI options that are not a flag of their own.
var uciExtra = []string{"enabled", "listen_addr"}

// notSettings are flags that are not configuration.
var notSettings = []string{"version"}

func uciOption(flag string) string {
	if o, ok := uciOptionOf[flag]; ok {
		return o
	}
	return strings.ReplaceAll(flag, "-", "_")
}

type beaconFlag struct {
	name string
	arg  string // "" for a bool flag
	env  string
}

var nativeOnce once

// nativeBeacon builds the beacon for this machine, once per run.
func nativeBeacon(t *testing.T) string {
	t.Helper()
	nativeOnce.Do(func() {
		out := filepath.Join(binDir, "beacon-native")
		cmd := exec.Command("go", "build", "-o", out, "./firmware/cmd/beacon")
		cmd.Dir = root(t)
		cmd.Env = append(os.Environ(), "GOFLAGS=", "GOTOOLCHAIN=local", "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			nativeOnce.err = fmt.Errorf("building the beacon: %w\n%s", err, b)
			return
		}
		nativeOnce.val = out
	})
	if nativeOnce.err != nil {
		t.Fatal(nativeOnce.err)
	}
	return nativeOnce.val
}

var helpFlagRE = regexp.MustCompile(`^  --([a-z0-9-]+)(?: (\S+))?   \[\$(BEACON_[A-Z0-9_]+)\]$`)

// beaconFlags returns the settings flags, as `beacon run --help` lists them.
func beaconFlags(t *testing.T, bin string) []beaconFlag {
	t.Helper()
	out, err := exec.Command(bin, "run", "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("beacon run --help: %v\n%s", err, out)
	}
	var flags []beaconFlag
	for _, line := range strings.Split(string(out), "\n") {
		m := helpFlagRE.FindStringSubmatch(line)
		switch {
		case m == nil && strings.HasPrefix(line, "  --"):
			t.Fatalf("--help line %q does not parse", line)
		case m != nil && !slices.Contains(notSettings, m[1]):
			flags = append(flags, beaconFlag{name: m[1], arg: m[2], env: m[3]})
		}
	}
	if len(flags) < 20 {
		t.Fatalf("only %d flags in --help:\n%s", len(flags), out)
	}
	return flags
}

var (
	uciLineRE = regexp.MustCompile(`^#?option ([a-z0-9_]+) '([^']*)'$`)
	envLineRE = regexp.MustCompile(`^#?(BEACON_[A-Z0-9_]+)=(.*)$`)
)

// examples reads every setting of a shipped file, set or commented out,
// with its example value: name -> value, in file order.
func examples(t *testing.T, path string, re *regexp.Regexp) ([]string, map[string]string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var names []string
	vals := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		m := re.FindStringSubmatch(strings.TrimSpace(sc.Text()))
		if m == nil {
			continue
		}
		if _, dup := vals[m[1]]; dup {
			t.Errorf("%s: %s twice", path, m[1])
		}
		names = append(names, m[1])
		vals[m[1]] = m[2]
	}
	return names, vals
}

// acceptsFlags runs the beacon with args and --version: the flags parse
// (every value through its flag's Set) before --version is acted on.
func acceptsFlags(t *testing.T, bin string, args []string) {
	t.Helper()
	out, err := exec.Command(bin, append(append([]string{"run"}, args...), "--version")...).CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "beacon ") {
		t.Errorf("the beacon refuses %q: %v\n%s", args, err, out)
	}
}

// TestFlagTableUCI: every flag has a UCI option in the shipped config
// (its example value in a comment when it has no default), the init script
// turns each option into its flag, and the beacon accepts the result.
func TestFlagTableUCI(t *testing.T) {
	bin := nativeBeacon(t)
	flags := beaconFlags(t, bin)
	names, vals := examples(t, filepath.Join(root(t), feedDir, "files", "blockcast.config"), uciLineRE)
	known := slices.Clone(uciExtra)
	for _, f := range flags {
		o := uciOption(f.name)
		known = append(known, o)
		if _, ok := vals[o]; !ok {
			t.Errorf("--%s has no UCI option %q in files/blockcast.config", f.name, o)
		}
	}
	for _, n := range names {
		if !slices.Contains(known, n) {
			t.Errorf("UCI option %q is no beacon flag's", n)
		}
	}

	// Every option set at once to its example value.
	uci := map[string]string{}
	for n, v := range vals {
		uci[n] = v
	}
	uci["cast_url"] = testCastURL
	sh := []string{need(t, "busybox"), "sh"}
	r := runInit(t, sh, uci, "")
	if r.instances != 1 {
		t.Fatalf("%d instances with every option set (logs %q)", r.instances, r.logs)
	}
	cmd := r.command
	if len(cmd) < 2 || cmd[0] != "/usr/bin/beacon" || cmd[1] != "run" {
		t.Fatalf("command %q", cmd)
	}
	for _, f := range flags {
		if !slices.ContainsFunc(cmd, func(a string) bool { return a == "--"+f.name || strings.HasPrefix(a, "--"+f.name+"=") }) {
			t.Errorf("the init script does not pass --%s (UCI option %s) on: %q", f.name, uciOption(f.name), cmd)
		}
	}
	acceptsFlags(t, bin, cmd[2:])
}

// TestFlagTableEnv: every flag has a line in the Pi's beacon.env (set, or
// commented out with an example), and every value there is one the beacon
// accepts for its flag.
func TestFlagTableEnv(t *testing.T) {
	bin := nativeBeacon(t)
	flags := beaconFlags(t, bin)
	names, vals := examples(t, filepath.Join(root(t), "rpi", "beacon.env"), envLineRE)
	var args []string
	for _, f := range flags {
		v, ok := vals[f.env]
		if !ok {
			t.Errorf("--%s has no %s line in rpi/beacon.env", f.name, f.env)
			continue
		}
		if f.name == "cast-url" && v == "" {
			v = testCastURL // the one line the operator must fill in
		}
		args = append(args, "--"+f.name+"="+v)
	}
	for _, n := range names {
		if !slices.ContainsFunc(flags, func(f beaconFlag) bool { return f.env == n }) {
			t.Errorf("rpi/beacon.env sets %s, which is no beacon flag's", n)
		}
	}
	acceptsFlags(t, bin, args)
}

// TestFlagTableHelp: the table the tests read is the beacon's, bools
// included (a bool flag needs --flag=false, which the init script writes).
func TestFlagTableHelp(t *testing.T) {
	flags := beaconFlags(t, nativeBeacon(t))
	var bools []string
	for _, f := range flags {
		if f.arg == "" {
			bools = append(bools, f.name)
		}
	}
	if !slices.Contains(bools, "amt-driad") || !slices.Contains(bools, "amt-anycast") {
		t.Errorf("bool flags %q, want amt-driad and amt-anycast among them", bools)
	}
	var b bytes.Buffer
	for _, f := range flags {
		fmt.Fprintf(&b, "%s ", f.name)
	}
	t.Logf("%d settings flags: %s", len(flags), b.String())
}
