// Package brokertest starts real MQTT brokers for tests: a Mosquitto
// process (Debian's mosquitto package) on a free loopback port, with a
// generated configuration, killed when the test ends.
package brokertest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
)

// MosquittoPath is where Debian installs the broker.
const MosquittoPath = "/usr/sbin/mosquitto"

// Mosquitto is a running (or stopped) Mosquitto broker.
type Mosquitto struct {
	t    testing.TB
	Port int
	conf string

	mu  sync.Mutex
	cmd *exec.Cmd
	out *bytes.Buffer
}

// StartMosquitto starts Mosquitto on a free 127.0.0.1 port with anonymous
// access and no persistence. Without the binary the test is skipped, or
// fails when CI=true.
func StartMosquitto(t testing.TB) *Mosquitto {
	t.Helper()
	if _, err := os.Stat(MosquittoPath); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("mosquitto missing (%v); install the mosquitto package", err)
		}
		t.Skipf("mosquitto missing: %v", err)
	}
	m := &Mosquitto{t: t, Port: FreePort(t)}
	m.conf = filepath.Join(t.TempDir(), "mosquitto.conf")
	conf := fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\n", m.Port)
	if err := os.WriteFile(m.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		m.Stop()
		if t.Failed() {
			m.mu.Lock()
			t.Logf("mosquitto output:\n%s", m.out)
			m.mu.Unlock()
		}
	})
	m.Start()
	return m
}

// URL returns the broker's tcp:// URL.
func (m *Mosquitto) URL() string { return "tcp://" + m.Addr() }

// Addr returns the broker's host:port.
func (m *Mosquitto) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(m.Port)) }

// Start starts the broker (again) on its port and waits until it accepts
// connections.
func (m *Mosquitto) Start() {
	m.t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd != nil {
		m.t.Fatal("mosquitto already running")
	}
	if m.out == nil {
		m.out = new(bytes.Buffer)
	}
	cmd := exec.Command(MosquittoPath, "-c", m.conf)
	cmd.Stdout, cmd.Stderr = &lockedWriter{mu: &m.mu, w: m.out}, &lockedWriter{mu: &m.mu, w: m.out}
	if err := cmd.Start(); err != nil {
		m.t.Fatalf("start mosquitto: %v", err)
	}
	m.cmd = cmd
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", m.Addr(), time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			m.t.Fatalf("mosquitto did not listen on %s: %v\n%s", m.Addr(), err, m.out)
		}
		m.mu.Unlock()
		time.Sleep(20 * time.Millisecond)
		m.mu.Lock()
	}
}

// Stop kills the broker (SIGKILL: no goodbye to its clients) and waits for
// it to exit. It is safe to call when stopped.
func (m *Mosquitto) Stop() {
	m.mu.Lock()
	cmd := m.cmd
	m.cmd = nil
	m.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	// Start holds mu while it polls, and releases it between polls; the
	// output copier only appends.
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.w.Len() > 1<<20 {
		return len(p), nil
	}
	return l.w.Write(p)
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
