package cross

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const feedDir = "openwrt/net/blockcast-beacon"

// uciSection reads one named section of a UCI file into option -> value.
// It understands what the shipped file uses: config/option lines, single
// quotes, comments.
func uciSection(t *testing.T, path, name string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	opts := map[string]string{}
	in := false
	found := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		kw, rest, _ := strings.Cut(line, " ")
		switch kw {
		case "config":
			_, sec, _ := strings.Cut(strings.TrimSpace(rest), " ")
			in = strings.Trim(strings.TrimSpace(sec), "'") == name
			found = found || in
		case "option":
			k, v, ok := strings.Cut(strings.TrimSpace(rest), " ")
			v = strings.TrimSpace(v)
			if !ok || len(v) < 2 || v[0] != '\'' || v[len(v)-1] != '\'' || strings.Count(v, "'") != 2 {
				t.Fatalf("%s: option line %q is not option NAME 'VALUE'", path, line)
			}
			if in {
				opts[k] = v[1 : len(v)-1]
			}
		default:
			t.Fatalf("%s: unexpected line %q", path, line)
		}
	}
	if !found {
		t.Fatalf("%s: no section %q", path, name)
	}
	return opts
}

// procdRun is what start_service asked procd for.
type procdRun struct {
	instances int
	command   []string
	params    map[string][]string
	logs      []string
	prepared  bool
}

// The stubs stand in for /lib/functions.sh (config_*) and procd.sh
// (procd_*) with their semantics: config_get falls back to the default for
// an unset or empty option. Values come from UCI_<section>_<option>.
const initStubs = `
config_load() { [ "$1" = blockcast ] || { echo "config_load $1" >&2; exit 3; }; }
config_get() {
	eval "__v=\${UCI_${2}_${3}:-\$4}"
	eval "$1=\$__v"
}
config_get_bool() {
	config_get __b "$2" "$3" "$4"
	case "$__b" in
	1|on|true|yes|enabled) __b=1 ;;
	0|off|false|no|disabled) __b=0 ;;
	*) __b="$4" ;;
	esac
	eval "$1=\$__b"
}
procd_open_instance() { echo "open"; }
procd_close_instance() { echo "close"; }
procd_set_param() { echo "param $1"; shift; for a in "$@"; do echo "	$a"; done; }
procd_append_param() { shift; for a in "$@"; do echo "	$a"; done; }
logger() { shift 2; echo "log $*"; }
`

// runInit sources the init script under shell with uci as the "main"
// section and runs start_service. blockcast_prepare (mkdir, chown, keygen
// on the router) is replaced by a marker.
func runInit(t *testing.T, shell []string, uci map[string]string, mounts string) procdRun {
	t.Helper()
	script := filepath.Join(root(t), feedDir, "files", "blockcast.init")
	mountsFile := filepath.Join(t.TempDir(), "mounts")
	if err := os.WriteFile(mountsFile, []byte(mounts), 0o644); err != nil {
		t.Fatal(err)
	}
	prog := initStubs + `. "$INIT"
MOUNTS="$FAKE_MOUNTS"
blockcast_prepare() { echo prepare; }
start_service
`
	cmd := exec.Command(shell[0], append(shell[1:], "-c", prog)...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "INIT=" + script, "FAKE_MOUNTS=" + mountsFile}
	for k, v := range uci {
		cmd.Env = append(cmd.Env, "UCI_main_"+k+"="+v)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v start_service: %v\n%s", shell, err, out)
	}
	r := procdRun{params: map[string][]string{}}
	param := "" // the procd_set_param whose values follow
	for _, line := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
		switch {
		case line == "open":
			r.instances++
		case line == "close", line == "":
		case line == "prepare":
			r.prepared = true
		case strings.HasPrefix(line, "log "):
			r.logs = append(r.logs, strings.TrimPrefix(line, "log "))
		case strings.HasPrefix(line, "param "):
			param = strings.TrimPrefix(line, "param ")
			if param != "command" {
				r.params[param] = []string{}
			}
			continue
		case strings.HasPrefix(line, "\t") && param == "command":
			r.command = append(r.command, line[1:])
			continue
		case strings.HasPrefix(line, "\t") && param != "":
			r.params[param] = append(r.params[param], line[1:])
			continue
		default:
			t.Fatalf("unexpected output line %q in\n%s", line, out)
		}
		param = ""
	}
	return r
}

func shells(t *testing.T) [][]string {
	t.Helper()
	// dash is stricter than OpenWrt's ash; busybox ash is what routers run.
	out := [][]string{{need(t, "sh")}}
	return append(out, []string{need(t, "busybox"), "sh"})
}

// TestInitScriptFlags runs the init script's real UCI-to-flags code under
// sh and busybox ash, with the shipped /etc/config/blockcast as the base.
func TestInitScriptFlags(t *testing.T) {
	defaults := uciSection(t, filepath.Join(root(t), feedDir, "files", "blockcast.config"), "main")
	if defaults["cast_url"] != "" {
		t.Fatalf("the shipped config sets cast_url %q; it must be set per operator", defaults["cast_url"])
	}
	with := func(kv ...string) map[string]string {
		m := map[string]string{}
		for k, v := range defaults {
			m[k] = v
		}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	base := []string{"/usr/bin/beacon", "run", "--cast-url", "https://cast.example.net", "--listen", ":8081",
		"--admin-listen", "127.0.0.1:8082"}
	tail := []string{"--key", "/etc/blockcast/wallet.json", "--memory-limit", "32MiB", "--log-level", "info"}
	cmdline := func(mid ...string) []string {
		return append(append(append([]string{}, base...), mid...), tail...)
	}
	const usbMounted = "/dev/sda1 /mnt/sda1 ext4 rw,noatime 0 0\n"
	tests := []struct {
		name      string
		uci       map[string]string
		mounts    string
		want      []string // nil: no instance
		prepared  bool
		caps      string // the capability set procd is given, "" for none
		logSubstr string
	}{
		{
			name:     "shipped defaults: 8 MiB cache in RAM",
			uci:      with("cast_url", "https://cast.example.net"),
			want:     cmdline("--state-dir", "/tmp/blockcast", "--cache-size", "8MiB"),
			prepared: true,
		},
		{
			name:     "USB disk mounted",
			uci:      with("cast_url", "https://cast.example.net", "cache_path", "/mnt/sda1/blockcast", "cache_size", "2GiB"),
			mounts:   usbMounted,
			want:     cmdline("--state-dir", "/mnt/sda1/blockcast", "--cache-size", "2GiB"),
			prepared: true,
		},
		{
			name:      "USB disk missing: back to RAM, not the flash",
			uci:       with("cast_url", "https://cast.example.net", "cache_path", "/mnt/sda1/blockcast", "cache_size", "2GiB"),
			mounts:    "/dev/root /rom squashfs ro 0 0\n",
			want:      cmdline("--state-dir", "/tmp/blockcast", "--cache-size", "8MiB"),
			prepared:  true,
			logSubstr: "not mounted",
		},
		{
			name: "every option",
			uci: with("cast_url", "https://cast.example.net", "listen_addr", "fd00::1", "listen_port", "8090", "admin_port", "8091",
				"lan_url", "http://[fd00::1]:8090", "delegation", "/etc/blockcast/owner delegation.json", "check_interval", "30s",
				"log_level", "debug", "log_format", "json", "amt_relay", "amt.example.net", "lan_iface", "br-lan",
				"memory_limit", "24MiB", "wallet", "/etc/blockcast/w.json", "cache_path", "/overlay/blockcast", "cache_size", "12MiB",
				"amt_driad", "0", "amt_anycast", "yes", "amt_join", "192.0.2.7@232.1.1.1 reemit; 192.0.2.8@232.1.1.2",
				"amt_reemit_ttl", "4", "mqtt_url", "tls://cast.example.net:8883", "cast_key", "GBmoCdVRQJu4fpKfd1tbmk9M7i9RoXUJc2tSqJV3ajrX",
				"health_interval", "15s"),
			want: []string{"/usr/bin/beacon", "run", "--cast-url", "https://cast.example.net", "--listen", "[fd00::1]:8090",
				"--admin-listen", "127.0.0.1:8091", "--state-dir", "/overlay/blockcast", "--cache-size", "12MiB",
				"--key", "/etc/blockcast/w.json", "--memory-limit", "24MiB", "--lan-url", "http://[fd00::1]:8090",
				"--delegation", "/etc/blockcast/owner delegation.json", "--check-interval", "30s", "--log-level", "debug",
				"--log-format", "json", "--mqtt-url", "tls://cast.example.net:8883", "--cast-key", "GBmoCdVRQJu4fpKfd1tbmk9M7i9RoXUJc2tSqJV3ajrX",
				"--health-interval", "15s", "--amt-relay", "amt.example.net", "--amt-driad=false", "--amt-anycast=true",
				"--amt-join", "192.0.2.7@232.1.1.1 reemit; 192.0.2.8@232.1.1.2", "--lan-iface", "br-lan", "--amt-reemit-ttl", "4"},
			prepared: true,
			caps:     "/etc/capabilities/blockcast.json",
		},
		{
			name:     "lan_iface gets CAP_NET_RAW",
			uci:      with("cast_url", "https://cast.example.net", "lan_iface", "br-lan"),
			want:     append(cmdline("--state-dir", "/tmp/blockcast", "--cache-size", "8MiB"), "--lan-iface", "br-lan"),
			prepared: true,
			caps:     "/etc/capabilities/blockcast.json",
		},
		{
			name: "lan_iface and a port below 1024: both",
			uci:  with("cast_url", "https://cast.example.net", "lan_iface", "br-lan", "listen_port", "80"),
			want: append([]string{"/usr/bin/beacon", "run", "--cast-url", "https://cast.example.net", "--listen", ":80", "--admin-listen", "127.0.0.1:8082",
				"--state-dir", "/tmp/blockcast", "--cache-size", "8MiB"}, append(slices.Clone(tail), "--lan-iface", "br-lan")...),
			prepared: true,
			caps:     "/etc/capabilities/blockcast-raw-bind.json",
		},
		{
			name:     "a port below 1024 gets CAP_NET_BIND_SERVICE",
			uci:      with("cast_url", "https://cast.example.net", "listen_port", "80"),
			want:     append([]string{"/usr/bin/beacon", "run", "--cast-url", "https://cast.example.net", "--listen", ":80", "--admin-listen", "127.0.0.1:8082", "--state-dir", "/tmp/blockcast", "--cache-size", "8MiB"}, tail...),
			prepared: true,
			caps:     "/etc/capabilities/blockcast-bind.json",
		},
		{
			name:      "no castd URL: wallet made, nothing started",
			uci:       with(),
			prepared:  true,
			logSubstr: "set the castd URL",
		},
		{
			name:      "bad port",
			uci:       with("cast_url", "https://cast.example.net", "listen_port", "80a"),
			logSubstr: "bad port",
		},
		{
			name:      "port out of range",
			uci:       with("cast_url", "https://cast.example.net", "admin_port", "70000"),
			logSubstr: "bad port",
		},
		{
			name: "disabled",
			uci:  with("cast_url", "https://cast.example.net", "enabled", "0"),
		},
	}
	for _, sh := range shells(t) {
		for _, tt := range tests {
			t.Run(filepath.Base(sh[0])+"/"+tt.name, func(t *testing.T) {
				r := runInit(t, sh, tt.uci, tt.mounts)
				if r.prepared != tt.prepared {
					t.Errorf("prepared = %v, want %v", r.prepared, tt.prepared)
				}
				if tt.logSubstr != "" && !slices.ContainsFunc(r.logs, func(l string) bool { return strings.Contains(l, tt.logSubstr) }) {
					t.Errorf("logs %q, want one containing %q", r.logs, tt.logSubstr)
				}
				if tt.want == nil {
					if r.instances != 0 {
						t.Fatalf("started an instance: %q", r.command)
					}
					return
				}
				if r.instances != 1 {
					t.Fatalf("%d instances, want 1", r.instances)
				}
				if !slices.Equal(r.command, tt.want) {
					t.Errorf("command\n got %q\nwant %q", r.command, tt.want)
				}
				if got := r.params["respawn"]; !slices.Equal(got, []string{"3600", "5", "5"}) {
					t.Errorf("respawn %q", got)
				}
				for _, p := range []string{"user", "group"} {
					if got := r.params[p]; !slices.Equal(got, []string{"blockcast"}) {
						t.Errorf("%s %q: the beacon must not run as root", p, got)
					}
				}
				if got := r.params["file"]; !slices.Equal(got, []string{"/etc/config/blockcast"}) {
					t.Errorf("file %q: a config change must restart the instance", got)
				}
				caps, hasCaps := r.params["capabilities"]
				if tt.caps == "" && hasCaps || tt.caps != "" && !slices.Equal(caps, []string{tt.caps}) {
					t.Errorf("capabilities %q (set: %v), want %q", caps, hasCaps, tt.caps)
				}
			})
		}
	}
}

// TestInitScriptTriggers checks the reload trigger: `uci commit blockcast`
// must reach the service.
func TestInitScriptTriggers(t *testing.T) {
	script := filepath.Join(root(t), feedDir, "files", "blockcast.init")
	cmd := exec.Command(need(t, "busybox"), "sh", "-c", `procd_add_reload_trigger() { echo "trigger $*"; }
. "$INIT"
service_triggers`)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "INIT=" + script}
	out, err := cmd.CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "trigger blockcast" {
		t.Fatalf("service_triggers: %v %q", err, out)
	}
}

// TestShellScripts checks the syntax of every shell script that ships,
// under dash and busybox ash, and with shellcheck.
func TestShellScripts(t *testing.T) {
	r := root(t)
	scripts := []string{feedDir + "/files/blockcast.init"}
	for _, glob := range []string{"openwrt/sdkless/*.*", "rpi/debian/*"} {
		m, err := filepath.Glob(filepath.Join(r, glob))
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range m {
			if !strings.HasSuffix(p, ".md") {
				rel, _ := filepath.Rel(r, p)
				scripts = append(scripts, rel)
			}
		}
	}
	if len(scripts) < 9 {
		t.Fatalf("found only %v", scripts)
	}
	sc := need(t, "shellcheck")
	for _, s := range scripts {
		p := filepath.Join(r, s)
		for _, sh := range shells(t) {
			if out, err := exec.Command(sh[0], append(sh[1:], "-n", p)...).CombinedOutput(); err != nil {
				t.Errorf("%v -n %s: %v\n%s", sh, s, err, out)
			}
		}
		// The init script names its dialect (ash: local is fine); the
		// maintainer scripts are plain sh.
		args := []string{"-e", "SC1091", p}
		if !strings.HasSuffix(s, ".init") {
			args = append([]string{"-s", "sh"}, args...)
		}
		if out, err := exec.Command(sc, args...).CombinedOutput(); err != nil {
			t.Errorf("shellcheck %s: %v\n%s", s, err, out)
		}
	}
}
