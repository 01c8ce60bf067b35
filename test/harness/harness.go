// Package harness runs the real system on loopback for the demo, the
// end-to-end tests and the benchmarks: it builds the binaries, starts castd
// and beacons as processes, serves a real HTTP origin, and fetches through
// the request router the way an end user's client does.
package harness

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/blockcast/beacon/shared/protocol"
)

// ModuleRoot finds the repository root (the directory holding go.mod).
func ModuleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside the module")
	}
	return filepath.Dir(mod), nil
}

// Binaries are the built programs.
type Binaries struct {
	Castd, Beacon string
}

var buildMu sync.Mutex

// Build compiles castd and beacon into dir.
func Build(dir string) (Binaries, error) {
	buildMu.Lock()
	defer buildMu.Unlock()
	root, err := ModuleRoot()
	if err != nil {
		return Binaries{}, err
	}
	b := Binaries{Castd: filepath.Join(dir, "castd"), Beacon: filepath.Join(dir, "beacon")}
	// testhooks: the test hooks (shared/lossconn) that release builds leave out.
	cmd := exec.Command("go", "build", "-trimpath", "-tags", "testhooks", "-o", dir+string(os.PathSeparator),
		"-ldflags", "-X main.version=test", "./cloud/cmd/castd", "./firmware/cmd/beacon")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return Binaries{}, fmt.Errorf("go build: %w\n%s", err, out)
	}
	return b, nil
}

// FreeAddr returns a loopback address with a port that was free a moment
// ago. Ports come from below the kernel's ephemeral range (32768 and up by
// default), so an outgoing connection of another test cannot take one
// between this call and the listen that uses it, and no port is handed out
// twice in one test process.
func FreeAddr() (string, error) {
	freeMu.Lock()
	defer freeMu.Unlock()
	for try := 0; try < 200; try++ {
		port := 20000 + rand.IntN(12000)
		if freeGiven[port] {
			continue
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		ln.Close()
		freeGiven[port] = true
		return addr, nil
	}
	return "", errors.New("harness: no free port found in 20000-31999")
}

var (
	freeMu    sync.Mutex
	freeGiven = map[int]bool{}
)

// Proc is a started program whose output goes to a log file.
type Proc struct {
	Name   string
	Log    string
	cmd    *exec.Cmd
	done   chan struct{}
	err    error
	killed bool // by Kill: its exit status is expected
}

// Start runs bin with args, logging to logPath.
func Start(name, logPath, bin string, args ...string) (*Proc, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Proc{Name: name, Log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

// Pid is the process ID.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Exited reports whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Stop sends SIGTERM and waits up to timeout, then kills. It returns the
// exit error (nil for a clean exit after SIGTERM).
func (p *Proc) Stop(timeout time.Duration) error {
	if p.Exited() {
		if p.killed {
			return nil
		}
		return p.err
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		// A Go program dumps its goroutines on SIGQUIT: the log then
		// shows where the shutdown hung.
		p.cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-p.done:
		case <-time.After(3 * time.Second):
			p.cmd.Process.Kill()
			<-p.done
		}
		// The test's temporary directory goes with the test: keep the
		// log, dump included, where a person can read it afterwards.
		kept := filepath.Join(os.TempDir(), fmt.Sprintf("blockcast-hang-%s-%d.log", p.Name, p.cmd.Process.Pid))
		if b, err := os.ReadFile(p.Log); err == nil {
			os.WriteFile(kept, b, 0o644)
		}
		return fmt.Errorf("%s did not stop within %s after SIGTERM (log with a goroutine dump kept in %s)", p.Name, timeout, kept)
	}
}

// Kill sends SIGKILL (a crash) and waits.
func (p *Proc) Kill() {
	if !p.Exited() {
		p.killed = true
		p.cmd.Process.Kill()
	}
	<-p.done
}

// Tail returns the last n bytes of the log, for failure messages.
func (p *Proc) Tail(n int) string {
	b, _ := os.ReadFile(p.Log)
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// WaitFor polls cond every 50 ms until it is true or timeout passes.
func WaitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// WaitHTTP waits until url answers 200.
func WaitHTTP(url string, timeout time.Duration) error {
	var last error
	ok := WaitFor(timeout, func() bool {
		resp, err := http.Get(url)
		if err != nil {
			last = err
			return false
		}
		resp.Body.Close()
		last = fmt.Errorf("status %s", resp.Status)
		return resp.StatusCode == http.StatusOK
	})
	if !ok {
		return fmt.Errorf("%s not ready after %s: %v", url, timeout, last)
	}
	return nil
}

// BeaconStatus reads a beacon's local status endpoint into a map.
func BeaconStatus(adminAddr string) (map[string]any, error) {
	resp, err := http.Get("http://" + adminAddr + protocol.PathStatus)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var m map[string]any
	return m, json.NewDecoder(resp.Body).Decode(&m)
}

// WaitRegistered waits until the beacon at adminAddr reports it is registered.
func WaitRegistered(adminAddr string, timeout time.Duration) error {
	if !WaitFor(timeout, func() bool {
		st, err := BeaconStatus(adminAddr)
		return err == nil && st["registered"] == true
	}) {
		st, err := BeaconStatus(adminAddr)
		return fmt.Errorf("beacon at %s not registered after %s (status %v, err %v)", adminAddr, timeout, st, err)
	}
	return nil
}

// Hop is one response on the way to the content.
type Hop struct {
	URL      string
	Status   int
	Route    string // X-Blockcast-Route of a router redirect
	Node     string
	Location string
	Cache    string // X-Cache of the final answer
}

// Result is a fetch through the router.
type Result struct {
	Hops   []Hop
	Status int
	Body   []byte
	SHA256 string
	Header http.Header
	Took   time.Duration
}

// Fetch GETs url as an end user's client does, following redirects (at most
// 5) and recording each hop. extra headers go on every request.
func Fetch(ctx context.Context, url string, extra http.Header) (*Result, error) {
	return FetchVia(ctx, nil, url, extra)
}

// FetchVia is Fetch with connections made by dial (nil: the default), e.g.
// a network namespace's DialContext.
func FetchVia(ctx context.Context, dial func(ctx context.Context, network, addr string) (net.Conn, error), url string, extra http.Header) (*Result, error) {
	client := &http.Client{
		Transport: &http.Transport{DisableCompression: true, Proxy: nil, DialContext: dial},
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
	defer client.CloseIdleConnections()
	res := &Result{}
	start := time.Now()
	for i := 0; i < 6; i++ {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return nil, err
		}
		for k, v := range extra {
			req.Header[k] = v
		}
		resp, err := client.Do(req)
		if err != nil {
			return res, err
		}
		hop := Hop{URL: url, Status: resp.StatusCode, Route: resp.Header.Get("X-Blockcast-Route"),
			Node: resp.Header.Get("X-Blockcast-Node-Target"), Location: resp.Header.Get("Location"), Cache: resp.Header.Get("X-Cache")}
		res.Hops = append(res.Hops, hop)
		if resp.StatusCode >= 300 && resp.StatusCode < 400 && hop.Location != "" {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			url = hop.Location
			continue
		}
		h := sha256.New()
		var buf bytes.Buffer
		_, err = io.Copy(io.MultiWriter(h, &buf), resp.Body)
		resp.Body.Close()
		res.Status, res.Header, res.Body = resp.StatusCode, resp.Header, buf.Bytes()
		res.SHA256 = hex.EncodeToString(h.Sum(nil))
		res.Took = time.Since(start)
		if err != nil {
			return res, fmt.Errorf("reading body from %s: %w", url, err)
		}
		return res, nil
	}
	return res, errors.New("too many redirects")
}

// RSS returns the resident set size of pid in bytes (Linux).
func RSS(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmRSS")
}

// SharedBuild builds castd and the beacon once for a whole test binary, on
// first use, so that a run in which every test skips builds nothing.
// TestMain calls Remove after m.Run.
type SharedBuild struct {
	Prefix string // of the temporary directory

	once sync.Once
	dir  string
	bins Binaries
	err  error
}

// Get builds on the first call and returns the same binaries (or error)
// after.
func (s *SharedBuild) Get() (Binaries, error) {
	s.once.Do(func() {
		if s.dir, s.err = os.MkdirTemp("", s.Prefix); s.err == nil {
			s.bins, s.err = Build(s.dir)
		}
	})
	return s.bins, s.err
}

// Remove deletes what Get built.
func (s *SharedBuild) Remove() {
	if s.dir != "" {
		os.RemoveAll(s.dir)
	}
}
