// Package solanatest starts the LiteSVM JSON-RPC front (test/solana/rpc.js)
// for tests: a real Solana VM behind Solana's HTTP RPC on a free loopback
// port, installed from test/solana/package-lock.json with `npm ci` on first
// use (and by test/install-deps.sh), offline after that.
//
// Tests call Start(t); it skips when node or npm is missing, and fails then
// when CI=true. The process is stopped by t.Cleanup, and it exits by itself
// when the test binary dies (it watches its stdin).
package solanatest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// ErrNoNode means node or npm is not installed (tests skip, or fail when CI=true).
var ErrNoNode = errors.New("solanatest: node and npm are needed for the LiteSVM RPC front")

// minNodeMajor is the oldest Node.js that litesvm 1.5.0 runs on.
const minNodeMajor = 20

// stampFile, inside node_modules, holds the sha256 of the package-lock.json
// that was installed; install-deps.sh writes the same stamp.
const stampFile = ".lock-sha256"

// Dir returns the test/solana directory (where rpc.js and the lock file are).
func Dir() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", errors.New("solanatest: cannot locate the source directory")
	}
	return filepath.Dir(filepath.Dir(file)), nil
}

var installMu sync.Mutex

// Install runs `npm ci` in Dir unless node_modules already holds what
// package-lock.json says. A file lock serialises concurrent test binaries.
func Install(ctx context.Context) error {
	node, err := exec.LookPath("node")
	if err != nil {
		return ErrNoNode
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		return ErrNoNode
	}
	if err := checkNodeVersion(ctx, node); err != nil {
		return err
	}
	dir, err := Dir()
	if err != nil {
		return err
	}
	installMu.Lock()
	defer installMu.Unlock()
	lf, err := os.OpenFile(filepath.Join(dir, ".install.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return fmt.Errorf("solanatest: install lock: %w", err)
	}
	defer lf.Close()
	if err := syscall.Flock(int(lf.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("solanatest: install lock: %w", err)
	}
	defer syscall.Flock(int(lf.Fd()), syscall.LOCK_UN)

	lock, err := os.ReadFile(filepath.Join(dir, "package-lock.json"))
	if err != nil {
		return fmt.Errorf("solanatest: %w", err)
	}
	sum := sha256.Sum256(lock)
	want := hex.EncodeToString(sum[:])
	stamp := filepath.Join(dir, "node_modules", stampFile)
	if got, err := os.ReadFile(stamp); err == nil && strings.TrimSpace(string(got)) == want {
		return nil
	}
	cmd := exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund", "--prefer-offline", "--loglevel=error")
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("solanatest: npm ci in %s: %w\n%s", dir, err, out)
	}
	return os.WriteFile(stamp, []byte(want+"\n"), 0o644)
}

func checkNodeVersion(ctx context.Context, node string) error {
	out, err := exec.CommandContext(ctx, node, "--version").Output()
	if err != nil {
		return fmt.Errorf("solanatest: node --version: %w", err)
	}
	v := strings.TrimPrefix(strings.TrimSpace(string(out)), "v")
	major, err := strconv.Atoi(strings.SplitN(v, ".", 2)[0])
	if err != nil || major < minNodeMajor {
		return fmt.Errorf("%w: node %q is older than %d", ErrNoNode, v, minNodeMajor)
	}
	return nil
}

// Chain is a running LiteSVM RPC front.
type Chain struct {
	// URL is the JSON-RPC endpoint, http://127.0.0.1:PORT.
	URL string

	cmd    *exec.Cmd
	stdin  io.WriteCloser
	done   chan struct{}
	stderr *bytes.Buffer
	mu     sync.Mutex
}

// Launch installs (when needed) and starts the front on a free loopback
// port, returning once it accepts requests. Close stops it.
func Launch(ctx context.Context) (*Chain, error) {
	if err := Install(ctx); err != nil {
		return nil, err
	}
	dir, err := Dir()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("node", filepath.Join(dir, "rpc.js"), "--listen", "127.0.0.1:0")
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	c := &Chain{cmd: cmd, stdin: stdin, done: make(chan struct{}), stderr: new(bytes.Buffer)}
	cmd.Stderr = &lockedWriter{mu: &c.mu, w: c.stderr}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("solanatest: start node: %w", err)
	}
	go func() { _ = cmd.Wait(); close(c.done) }()

	line := make(chan string, 1)
	go func() {
		r := bufio.NewReader(stdout)
		s, _ := r.ReadString('\n')
		line <- s
		_, _ = io.Copy(io.Discard, r)
	}()
	var first string
	select {
	case first = <-line:
	case <-ctx.Done():
		c.Close()
		return nil, fmt.Errorf("solanatest: waiting for the RPC front: %w", ctx.Err())
	case <-time.After(30 * time.Second):
		c.Close()
		return nil, fmt.Errorf("solanatest: the RPC front did not start in 30s: %s", c.Stderr())
	}
	var hello struct {
		Listening string `json:"listening"`
	}
	if err := json.Unmarshal([]byte(first), &hello); err != nil || hello.Listening == "" {
		c.Close()
		return nil, fmt.Errorf("solanatest: the RPC front did not start (%q): %s", first, c.Stderr())
	}
	c.URL = "http://" + hello.Listening
	return c, nil
}

// Start launches the front for t and stops it when t ends. It skips t when
// node or npm is missing, unless CI=true.
func Start(t testing.TB) *Chain {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c, err := Launch(ctx)
	if errors.Is(err, ErrNoNode) && os.Getenv("CI") != "true" {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close()
		if t.Failed() {
			t.Logf("litesvm rpc stderr:\n%s", c.Stderr())
		}
	})
	return c
}

// Close stops the process: closing its stdin makes it exit; it is killed
// (with its process group) if it has not within 5 s.
func (c *Chain) Close() {
	_ = c.stdin.Close()
	select {
	case <-c.done:
		return
	case <-time.After(5 * time.Second):
	}
	_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
	<-c.done
}

// Exited reports whether the process has exited.
func (c *Chain) Exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// Pid is the node process's id.
func (c *Chain) Pid() int { return c.cmd.Process.Pid }

// Stderr returns what the process wrote to stderr so far.
func (c *Chain) Stderr() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stderr.String()
}

// ExpireBlockhash makes the current blockhash stale (the test-only method
// litesvm_expireBlockhash) and returns the new one.
func (c *Chain) ExpireBlockhash(ctx context.Context) (string, error) {
	var out struct {
		Blockhash string `json:"blockhash"`
	}
	err := c.Call(ctx, "litesvm_expireBlockhash", nil, &out)
	return out.Blockhash, err
}

// AdvanceSlots lets n slots pass (test-only litesvm_advanceSlots); 32 of
// them finalize what landed before. It returns the new slot.
func (c *Chain) AdvanceSlots(ctx context.Context, n int) (uint64, error) {
	var slot uint64
	err := c.Call(ctx, "litesvm_advanceSlots", []any{n}, &slot)
	return slot, err
}

// RPCError is a JSON-RPC error response.
type RPCError struct {
	Code    int             `json:"code"`
	Message string          `json:"message"`
	Data    json.RawMessage `json:"data,omitempty"`
}

func (e *RPCError) Error() string { return fmt.Sprintf("rpc error %d: %s", e.Code, e.Message) }

// Call makes one JSON-RPC call and decodes its result into out.
func (c *Chain) Call(ctx context.Context, method string, params []any, out any) error {
	if params == nil {
		params = []any{}
	}
	body, err := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.URL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("solanatest: %s: %w", method, err)
	}
	defer resp.Body.Close()
	var r struct {
		Result json.RawMessage `json:"result"`
		Error  *RPCError       `json:"error"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&r); err != nil {
		return fmt.Errorf("solanatest: %s: HTTP %d: %w", method, resp.StatusCode, err)
	}
	if r.Error != nil {
		return fmt.Errorf("solanatest: %s: %w", method, r.Error)
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(r.Result, out)
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
