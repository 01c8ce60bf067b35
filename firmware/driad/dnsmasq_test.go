package driad

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/blockcast/beacon/test/harness"
)

// These tests run the lookup against a real DNS server: dnsmasq (Debian
// package dnsmasq-base), serving AMTRELAY records with --dns-rr on a free
// loopback port. They skip when dnsmasq is missing, and fail if CI=true.

const dnsmasqPath = "/usr/sbin/dnsmasq"

// startDNSMasq runs dnsmasq with the given extra options and returns the
// address it serves on. It is killed when the test ends.
func startDNSMasq(t *testing.T, opts ...string) netip.AddrPort {
	t.Helper()
	path, err := exec.LookPath(dnsmasqPath)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("dnsmasq is required in CI: %v", err)
		}
		t.Skipf("dnsmasq not installed: %v", err)
	}
	for try := 0; try < 5; try++ {
		port := freePort(t)
		args := append([]string{
			"--port=" + fmt.Sprint(port),
			"--no-resolv", "--no-hosts", "--no-daemon",
			"--listen-address=127.0.0.1", "--bind-interfaces",
			"--conf-file=/dev/null", "--pid-file=", "--log-facility=-",
			"--user=" + currentUser(),
		}, opts...)
		cmd := exec.Command(path, args...)
		var stderr harness.LineBuffer
		cmd.Stdout, cmd.Stderr = &stderr, &stderr
		// dnsmasq forks a child per TCP connection, which keeps the output
		// pipe open: kill the whole group, and do not wait on the pipe
		// for ever.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		cmd.WaitDelay = 2 * time.Second
		if err := cmd.Start(); err != nil {
			t.Fatalf("start dnsmasq: %v", err)
		}
		// Closed (not sent on) when dnsmasq has exited, so that both
		// waitDNS and stop can see it.
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		stop := func() {
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		addr := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port)
		if waitDNS(addr, done) {
			t.Cleanup(stop)
			return addr
		}
		stop()
		if !strings.Contains(stderr.String(), "in use") {
			t.Fatalf("dnsmasq did not start: %s", stderr.String())
		}
	}
	t.Fatal("no free port for dnsmasq")
	return netip.AddrPort{}
}

// freePort returns a loopback port that is free for UDP and TCP now.
func freePort(t *testing.T) uint16 {
	for {
		u, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := u.LocalAddr().(*net.UDPAddr).Port
		l, err := net.Listen("tcp4", fmt.Sprintf("127.0.0.1:%d", port))
		u.Close()
		if err == nil {
			l.Close()
			return uint16(port)
		}
	}
}

func currentUser() string {
	if os.Geteuid() == 0 {
		return "root" // dnsmasq would otherwise switch to nobody
	}
	return os.Getenv("USER")
}

// waitDNS polls until the server answers, or dnsmasq exits.
func waitDNS(addr netip.AddrPort, exited <-chan struct{}) bool {
	q, _ := appendQuery(nil, 1, "ready.test.", typeA)
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		select {
		case <-exited:
			return false
		default:
		}
		if _, err := exchangeUDP(context.Background(), addr, q, 100*time.Millisecond); err == nil {
			return true
		}
	}
	return false
}

// rr returns a dnsmasq --dns-rr option serving r at name.
func rr(t *testing.T, name string, r Relay) string {
	t.Helper()
	b, err := r.AppendRDATA(nil)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("--dns-rr=%s,%d,%s", strings.TrimSuffix(name, "."), TypeAMTRELAY, hex.EncodeToString(b))
}

func testResolver(t *testing.T, ns netip.AddrPort) *Resolver {
	r, err := New(Config{Nameservers: []netip.AddrPort{ns}, Timeout: 200 * time.Millisecond, Attempts: 2, RateLimit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestLookupDNSMasq(t *testing.T) {
	var (
		src4    = netip.MustParseAddr("198.51.100.12")
		src6    = netip.MustParseAddr("2001:db8::a")
		aliased = netip.MustParseAddr("198.51.100.13")
		noRelay = netip.MustParseAddr("198.51.100.14")
		none    = netip.MustParseAddr("198.51.100.99")
		noData  = netip.MustParseAddr("198.51.100.98")
		badName = netip.MustParseAddr("198.51.100.15")

		r1    = Relay{Precedence: 10, Type: RelayIPv4, Addr: netip.MustParseAddr("203.0.113.15")}
		r2    = Relay{Precedence: 10, Type: RelayIPv6, Addr: netip.MustParseAddr("2001:db8::15")}
		named = Relay{Precedence: 128, DiscoveryOptional: true, Type: RelayName, Name: "amtrelays.example.com."}
		r6    = Relay{Precedence: 5, DiscoveryOptional: true, Type: RelayIPv4, Addr: netip.MustParseAddr("192.0.2.66")}
		alias = Relay{Precedence: 7, Type: RelayIPv4, Addr: netip.MustParseAddr("192.0.2.77")}
		stop  = Relay{Precedence: 1, Type: RelayNone}
		later = Relay{Precedence: 20, Type: RelayIPv4, Addr: netip.MustParseAddr("192.0.2.20")}
		ghost = Relay{Precedence: 3, Type: RelayName, Name: "nowhere.example."}
	)
	ns := startDNSMasq(t,
		rr(t, ReverseName(src4), r1),
		rr(t, ReverseName(src4), named),
		rr(t, ReverseName(src4), r2),
		// An unassigned relay type, which must be skipped.
		fmt.Sprintf("--dns-rr=%s,%d,0a09aabb", strings.TrimSuffix(ReverseName(src4), "."), TypeAMTRELAY),
		"--host-record=amtrelays.example.com,192.0.2.7,2001:db8::7",
		rr(t, ReverseName(src6), r6),
		// RFC 2317-style delegation: the reverse name is a CNAME.
		rr(t, "13.sub.relays.example.", alias),
		"--cname="+strings.TrimSuffix(ReverseName(aliased), ".")+",13.sub.relays.example",
		rr(t, ReverseName(noRelay), stop),
		rr(t, ReverseName(noRelay), later),
		rr(t, ReverseName(badName), ghost),
		// The name exists with another type only: NOERROR, no data.
		"--txt-record="+strings.TrimSuffix(ReverseName(noData), ".")+",hello",
		// Answer NXDOMAIN for the rest of the reverse zone, as an
		// authoritative server would (dnsmasq refuses it otherwise).
		"--local=/51.198.in-addr.arpa/",
	)
	r := testResolver(t, ns)
	ctx := context.Background()

	t.Run("precedence and names", func(t *testing.T) {
		got, err := r.Lookup(ctx, src4)
		if err != nil {
			t.Fatal(err)
		}
		n4 := named
		n4.Addr = netip.MustParseAddr("192.0.2.7")
		n6 := named
		n6.Addr = netip.MustParseAddr("2001:db8::7")
		if len(got) != 4 {
			t.Fatalf("got %v, want 4 relays", got)
		}
		if !(got[0] == r1 && got[1] == r2 || got[0] == r2 && got[1] == r1) {
			t.Errorf("first two = %v, want the precedence-10 relays", got[:2])
		}
		if got[2] != n4 || got[3] != n6 {
			t.Errorf("last two = %v, want %v then %v", got[2:], n4, n6)
		}
	})
	t.Run("ipv6 source", func(t *testing.T) {
		got, err := r.Lookup(ctx, src6)
		if err != nil || len(got) != 1 || got[0] != r6 {
			t.Fatalf("Lookup(%v) = %v, %v; want [%v]", src6, got, err, r6)
		}
	})
	t.Run("cname", func(t *testing.T) {
		got, err := r.Lookup(ctx, aliased)
		if err != nil || len(got) != 1 || got[0] != alias {
			t.Fatalf("Lookup(%v) = %v, %v; want [%v]", aliased, got, err, alias)
		}
	})
	t.Run("type 0 first", func(t *testing.T) {
		got, err := r.Lookup(ctx, noRelay)
		if !errors.Is(err, ErrNoRelay) {
			t.Fatalf("Lookup(%v) = %v, %v; want ErrNoRelay", noRelay, got, err)
		}
	})
	t.Run("no records", func(t *testing.T) {
		got, err := r.Lookup(ctx, none)
		if !errors.Is(err, ErrNotFound) {
			t.Fatalf("Lookup(%v) = %v, %v; want ErrNotFound", none, got, err)
		}
	})
	t.Run("no data", func(t *testing.T) {
		got, err := r.Lookup(ctx, noData)
		if !errors.Is(err, ErrNotFound) {
			t.Fatalf("Lookup(%v) = %v, %v; want ErrNotFound", noData, got, err)
		}
	})
	t.Run("name without addresses", func(t *testing.T) {
		got, err := r.Lookup(ctx, badName)
		if err == nil {
			t.Fatalf("Lookup(%v) = %v; want an error", badName, got)
		}
	})
	t.Run("equal precedence is random", func(t *testing.T) {
		firsts := map[netip.Addr]int{}
		for i := 0; i < 40; i++ {
			got, err := r.Lookup(ctx, src4)
			if err != nil {
				t.Fatal(err)
			}
			firsts[got[0].Addr]++
		}
		// Both orders have probability 1/2; seeing one only in 40 tries
		// happens with probability 2^-39.
		if firsts[r1.Addr] == 0 || firsts[r2.Addr] == 0 {
			t.Errorf("first relay over 40 lookups: %v; want both precedence-10 relays", firsts)
		}
	})
}

// TestLookupTCPFallback serves more records than fit the 1232-byte EDNS
// buffer, so that dnsmasq truncates the UDP answer and the lookup has to
// retry over TCP.
func TestLookupTCPFallback(t *testing.T) {
	src := netip.MustParseAddr("192.0.2.200")
	var opts []string
	var want []Relay
	for i := 0; i < 40; i++ {
		r := Relay{Precedence: uint8(i), Type: RelayIPv6, Addr: netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(i + 1)})}
		want = append(want, r)
		opts = append(opts, rr(t, ReverseName(src), r))
	}
	ns := startDNSMasq(t, opts...)
	// Check the premise: over UDP the answer is truncated.
	q, _ := appendQuery(nil, 7, ReverseName(src), TypeAMTRELAY)
	resp, err := exchangeUDP(context.Background(), ns, q, time.Second)
	if err != nil || !resp.truncated {
		t.Fatalf("UDP answer: truncated=%v, %v; the test needs a truncated answer", resp != nil && resp.truncated, err)
	}
	got, err := testResolver(t, ns).Lookup(context.Background(), src)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("got %d relays, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("relay %d = %v, want %v", i, got[i], want[i])
		}
	}
}

// TestLookupServerFailover: the first nameserver does not answer at all,
// the second is dnsmasq.
func TestLookupServerFailover(t *testing.T) {
	src := netip.MustParseAddr("192.0.2.201")
	want := Relay{Precedence: 1, Type: RelayIPv4, Addr: netip.MustParseAddr("192.0.2.1")}
	ns := startDNSMasq(t, rr(t, ReverseName(src), want))
	dead, err := net.ListenPacket("udp4", "127.0.0.1:0") // never answers
	if err != nil {
		t.Fatal(err)
	}
	defer dead.Close()
	r, err := New(Config{
		Nameservers: []netip.AddrPort{dead.LocalAddr().(*net.UDPAddr).AddrPort(), ns},
		Timeout:     100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err := r.Lookup(context.Background(), src)
	if err != nil || len(got) != 1 || got[0] != want {
		t.Fatalf("Lookup = %v, %v; want [%v]", got, err, want)
	}
	// With only the dead server the lookup times out, in bounded time.
	r, _ = New(Config{Nameservers: []netip.AddrPort{dead.LocalAddr().(*net.UDPAddr).AddrPort()}, Timeout: 50 * time.Millisecond, MaxTimeout: 100 * time.Millisecond, Attempts: 2})
	start := time.Now()
	if _, err := r.Lookup(context.Background(), src); !errors.Is(err, ErrTimeout) {
		t.Errorf("dead server: %v, want ErrTimeout", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("dead server: gave up after %v", d)
	}
	// A cancelled context ends the lookup at once.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := r.Lookup(ctx, src); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
}
