package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/blockcast/beacon/test/harness"
)

// demoRecipe reads the command `make demo` runs from the Makefile, so that
// this test runs what the README's first command runs, not a copy of it.
func demoRecipe(t *testing.T, root string) []string {
	t.Helper()
	f, err := os.Open(filepath.Join(root, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	inDemo := false
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "demo:"):
			inDemo = true
		case inDemo && strings.HasPrefix(line, "\t"):
			return strings.Fields(line)
		case inDemo:
			t.Fatalf("Makefile: the demo target has no recipe")
		}
	}
	t.Fatalf("Makefile: no demo target")
	return nil
}

// TestMakeDemo runs the demo as `make demo` does (`go run ./test/demo --bin
// <built binaries>`) and checks that it shows what the README promises:
// the request routed to the beacon, a MISS then a HIT, one origin pull, and
// everything stopped, nothing left running, exit 0.
func TestMakeDemo(t *testing.T) {
	root, err := harness.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	binDir := t.TempDir()
	if _, err := harness.Build(binDir); err != nil {
		t.Fatal(err)
	}
	recipe := demoRecipe(t, root)
	if want := "$(GO) run ./test/demo --bin $(BIN)"; strings.Join(recipe, " ") != want {
		t.Fatalf("Makefile's demo recipe is %q; this test runs %q: update one or the other", strings.Join(recipe, " "), want)
	}
	args := []string{"run", "./test/demo", "--bin", binDir}

	// The demo's default state directory is under the system temp dir;
	// TMPDIR keeps it inside this test's.
	tmp := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp, "GOFLAGS=", "CGO_ENABLED=0")
	// Its own process group: a timeout kills the demo and all it started,
	// not only `go run`.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err = cmd.Run()
	took := time.Since(start)
	out := stdout.String()
	if err != nil {
		t.Fatalf("demo: %v after %s\n--- stdout:\n%s\n--- stderr:\n%s", err, took.Round(time.Millisecond), out, stderr.String())
	}
	t.Logf("demo took %s", took.Round(time.Millisecond))

	stateDir := filepath.Join(tmp, "blockcast-demo")
	obj := "/obj/4M/demo-video.bin"
	req1, req2, _ := strings.Cut(out, "request 2:")
	_, mc, _ := strings.Cut(out, "--- multicast:")
	pop := "/obj/4M/popular-update.bin"
	checks := []struct {
		in, what, re string
	}{
		{out, "the state directory", `all state and logs under ` + regexp.QuoteMeta(stateDir) + `\n`},
		{req1, "request 1 routed to the beacon", `router: 302 → http://127\.0\.0\.1:\d+` + regexp.QuoteMeta(obj) + ` \(decision "beacon", node \w+\)`},
		{req1, "request 1 a MISS", `X-Cache: MISS\n +→ MISS: 4194304 bytes in .*matches the origin`},
		{req2, "request 2 routed to the beacon", `router: 302 → http://127\.0\.0\.1:\d+` + regexp.QuoteMeta(obj) + ` \(decision "beacon"`},
		{req2, "request 2 a HIT", `X-Cache: HIT\n +→ HIT: 4194304 bytes in .*matches the origin`},
		{req2, "one origin pull", `origin requests for ` + regexp.QuoteMeta(obj) + `: 1 `},
		{req2, "a clean stop", `stopped castd and the beacon cleanly; nothing is left running\.`},
		// The multicast part: one beacon by unicast, three take the offer
		// of one session, every one then serves a HIT; one origin pull.
		{mc, "the first beacon by unicast", `beacon0 \(http://[\d.:]+\): 200, X-Cache: MISS, 4194304 bytes in .*matches the origin`},
		{mc, "castd's offers", `castd: 3 multicast offers, 1 session; sent [\d.]+ KiB data`},
		{mc, "the offer", `the offer beacon\d took: manifest ` + regexp.QuoteMeta(pop) + ` seq \d+ toi \d+ \(4194304 bytes, application/octet-stream\) on 127\.0\.0\.1,232\.[\d.]+:\d+; AMT relay 127\.0\.0\.1:\d+, DTLS 127\.0\.0\.1:\d+`},
		{mc, "bytes by path, unicast", `beacon0: unicast \(HTTP from castd\) 4096\.0 KiB`},
		{mc, "bytes by path, multicast", `(?s)(beacon[123]: multicast [1-9][\d.]* KiB, early media [\d.]+ KiB, repair [\d.]+ KiB, HTTP fallback [\d.]+ KiB\n.*){3}`},
		{mc, "a HIT with the right hash at every beacon", `(?s)(beacon\d \(http://[\d.:]+\): 200, X-Cache: HIT, 4194304 bytes in .*?matches the origin\n.*){4}`},
		{mc, "one origin pull for the popular object", `origin requests for ` + regexp.QuoteMeta(pop) + `: 1 `},
	}
	for _, c := range checks {
		if !regexp.MustCompile(c.re).MatchString(c.in) {
			t.Errorf("the demo's output does not show %s (%s):\n%s", c.what, c.re, out)
		}
	}
	if stderr.Len() > 0 && strings.Contains(stderr.String(), "demo failed") {
		t.Errorf("stderr: %s", stderr.String())
	}
	for _, log := range []string{"castd.log", "beacon.log"} {
		if _, err := os.Stat(filepath.Join(stateDir, log)); err != nil {
			t.Errorf("the demo's %s: %v", log, err)
		}
	}

	// Nothing left running: no process of the demo's group, and none
	// started from the binaries it was given.
	if err := syscall.Kill(-cmd.Process.Pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("processes of the demo's group are still running (kill -0: %v)", err)
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	if left := procsFrom(binDir); len(left) > 0 {
		t.Errorf("still running after the demo: %v", left)
	}
}

// procsFrom lists running processes whose program is in dir.
func procsFrom(dir string) []string {
	ents, _ := os.ReadDir("/proc")
	var out []string
	for _, e := range ents {
		raw, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(raw) == 0 {
			continue
		}
		argv0, _, _ := bytes.Cut(raw, []byte{0})
		if strings.HasPrefix(string(argv0), dir+string(os.PathSeparator)) {
			out = append(out, e.Name()+" "+string(argv0))
		}
	}
	return out
}
