package netns

import (
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

func newTestLab(t *testing.T) *Lab {
	t.Helper()
	Require(t)
	return NewTestLab(t, "nstest")
}

// TestLab builds two namespaces joined by a veth, sends a datagram across
// from sockets opened inside each, checks that the namespaces are really
// separate from the caller's, and that Close removes them and what ran in
// them.
func TestLab(t *testing.T) {
	l := newTestLab(t)
	a, err := l.Add("a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := l.Add("b")
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Link(a, "veth-a", b, "veth-b"); err != nil {
		t.Fatal(err)
	}
	for _, step := range []error{
		a.Addr("veth-a", "10.254.0.1/30"),
		b.Addr("veth-b", "10.254.0.2/30"),
		a.Addr("veth-a", "fd00:254::1/64"),
		b.Addr("veth-b", "fd00:254::2/64"),
		b.Sysctl("net.ipv4.conf.all.rp_filter", "0"),
	} {
		if step != nil {
			t.Fatal(step)
		}
	}
	// Set in b, as a program inside it sees; a and the caller keep theirs.
	if v, err := b.Command("cat", "/proc/sys/net/ipv4/conf/all/rp_filter").Output(); err != nil || strings.TrimSpace(string(v)) != "0" {
		t.Errorf("rp_filter in b = %q, %v", v, err)
	}
	callers, _ := os.ReadFile("/proc/sys/net/ipv4/conf/all/rp_filter")
	if err := a.Sysctl("net.ipv4.conf.all.rp_filter", "2"); err != nil {
		t.Fatal(err)
	}
	if v, err := a.Command("cat", "/proc/sys/net/ipv4/conf/all/rp_filter").Output(); err != nil || strings.TrimSpace(string(v)) != "2" {
		t.Errorf("rp_filter in a = %q, %v", v, err)
	}
	if v, _ := os.ReadFile("/proc/sys/net/ipv4/conf/all/rp_filter"); string(v) != string(callers) {
		t.Errorf("the caller's rp_filter changed from %q to %q", callers, v)
		os.WriteFile("/proc/sys/net/ipv4/conf/all/rp_filter", callers, 0o644)
	}
	if _, err := net.InterfaceByName("veth-a"); err == nil {
		t.Error("veth-a is visible outside its namespace")
	}
	if ifi, err := a.InterfaceByName("veth-a"); err != nil || ifi.Flags&net.FlagUp == 0 {
		t.Errorf("veth-a in a: %+v, %v", ifi, err)
	}

	for _, tc := range []struct{ network, from, to string }{
		{"udp4", "10.254.0.1", "10.254.0.2"},
		{"udp6", "fd00:254::1", "fd00:254::2"},
	} {
		rx, err := b.ListenUDP(tc.network, &net.UDPAddr{IP: net.ParseIP(tc.to)})
		if err != nil {
			t.Fatal(err)
		}
		defer rx.Close()
		tx, err := a.ListenUDP(tc.network, &net.UDPAddr{IP: net.ParseIP(tc.from)})
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Close()
		if _, err := tx.WriteToUDP([]byte("hello"), rx.LocalAddr().(*net.UDPAddr)); err != nil {
			t.Fatal(err)
		}
		rx.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 16)
		n, from, err := rx.ReadFromUDP(buf)
		if err != nil || string(buf[:n]) != "hello" || !from.IP.Equal(net.ParseIP(tc.from)) {
			t.Errorf("%s: got %q from %v, %v", tc.network, buf[:n], from, err)
		}
	}

	// A program run inside a namespace sees its interfaces.
	out, err := b.Command("ip", "-o", "addr", "show", "dev", "veth-b").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "10.254.0.2/30") {
		t.Errorf("ip addr in b: %v\n%s", err, out)
	}
	sleeper := a.Command("sleep", "60")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- sleeper.Wait() }()
	// `ip netns exec` enters the namespace after it starts: wait for that,
	// or Close could run before the process is there to be found.
	inside := false
	for deadline := time.Now().Add(5 * time.Second); !inside && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		out, _ := exec.Command("ip", "netns", "pids", a.Name()).Output()
		inside = strings.Contains(" "+strings.Join(strings.Fields(string(out)), " ")+" ", " "+strconv.Itoa(sleeper.Process.Pid)+" ")
	}
	if !inside {
		t.Fatal("sleep never entered the namespace")
	}

	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		sleeper.Process.Kill()
		t.Error("Close left a process running in a namespace")
	}
	list, _ := exec.Command("ip", "netns", "list").Output()
	if strings.Contains(string(list), a.Name()) || strings.Contains(string(list), b.Name()) {
		t.Errorf("namespaces left after Close:\n%s", list)
	}
	if _, err := l.Add("c"); err == nil {
		t.Error("Add after Close succeeded")
	}
}

// TestHTTPInside: a client from HTTPClient reaches a server bound to the
// namespace's loopback, which the caller's own clients cannot.
func TestHTTPInside(t *testing.T) {
	l := newTestLab(t)
	a, err := l.Add("a")
	if err != nil {
		t.Fatal(err)
	}
	var ln net.Listener
	if err := a.Do(func() (err error) {
		ln, err = net.Listen("tcp", "127.0.0.1:0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "inside")
	})}
	go srv.Serve(ln)
	defer srv.Close()
	url := "http://" + ln.Addr().String() + "/"

	// Something in the caller's namespace may listen on the same port by
	// chance; it is not this server unless it answers "inside".
	outside := &http.Client{Timeout: time.Second, Transport: &http.Transport{Proxy: nil}}
	if resp, err := outside.Get(url); err == nil {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) == "inside" {
			t.Error("the namespace's loopback is reachable from outside it")
		}
	}
	resp, err := a.HTTPClient(5 * time.Second).Get(url)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "inside" {
		t.Errorf("got %q from the server in the namespace", body)
	}
}
