package amtrelay

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/blockcast/beacon/shared/amt"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// vethPair is a veth link: hostIf in the test's network namespace, its
// peer in namespace ns, where an SSM source sends from srcAddr4/srcAddr6.
type vethPair struct {
	ns, hostIf, nsIf   string
	srcAddr4, srcAddr6 netip.Addr
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		if _, err := exec.LookPath("ip"); err == nil {
			return
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("needs root and iproute2")
	}
	t.Skip("needs root and iproute2")
}

func run(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// newVethPair creates the namespace and link, and removes them when the
// test ends, failed or not.
func newVethPair(t *testing.T) *vethPair {
	t.Helper()
	n := os.Getpid() % 250
	v := &vethPair{
		ns:       fmt.Sprintf("amtrelay-test-%d", os.Getpid()),
		hostIf:   fmt.Sprintf("amtr%dh", os.Getpid()%100000),
		nsIf:     "src0",
		srcAddr4: netip.AddrFrom4([4]byte{198, 18, byte(n), 2}),
		srcAddr6: netip.MustParseAddr(fmt.Sprintf("2001:db8:ad:%x::2", n)),
	}
	hostAddr4 := netip.AddrFrom4([4]byte{198, 18, byte(n), 1})
	hostAddr6 := netip.MustParseAddr(fmt.Sprintf("2001:db8:ad:%x::1", n))
	run(t, "netns", "add", v.ns)
	t.Cleanup(func() {
		exec.Command("ip", "link", "del", v.hostIf).Run()
		exec.Command("ip", "netns", "del", v.ns).Run()
	})
	run(t, "link", "add", v.hostIf, "type", "veth", "peer", "name", v.nsIf, "netns", v.ns)
	run(t, "addr", "add", hostAddr4.String()+"/24", "dev", v.hostIf)
	run(t, "addr", "add", hostAddr6.String()+"/64", "dev", v.hostIf, "nodad")
	run(t, "link", "set", v.hostIf, "up")
	run(t, "-n", v.ns, "addr", "add", v.srcAddr4.String()+"/24", "dev", v.nsIf)
	run(t, "-n", v.ns, "addr", "add", v.srcAddr6.String()+"/64", "dev", v.nsIf, "nodad")
	run(t, "-n", v.ns, "link", "set", v.nsIf, "up")
	run(t, "-n", v.ns, "link", "set", "lo", "up")
	return v
}

// sourceConn opens a UDP socket in the namespace that sends multicast out
// of its veth from src.
func (v *vethPair) sourceConn(t *testing.T, src netip.Addr) *net.UDPConn {
	t.Helper()
	type result struct {
		uc  *net.UDPConn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		// Enter the namespace on a locked thread, make the socket (it
		// stays in the namespace) and come back. If coming back fails the
		// thread stays locked, and the runtime discards it.
		runtime.LockOSThread()
		home, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			ch <- result{err: err}
			return
		}
		defer home.Close()
		ns, err := os.Open("/var/run/netns/" + v.ns)
		if err != nil {
			ch <- result{err: err}
			return
		}
		defer ns.Close()
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- result{err: fmt.Errorf("setns: %w", err)}
			return
		}
		var res result
		res.uc, res.err = openSource(v.nsIf, src)
		if err := unix.Setns(int(home.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- result{err: fmt.Errorf("setns back: %w", err)}
			return
		}
		runtime.UnlockOSThread()
		ch <- res
	}()
	res := <-ch
	if res.err != nil {
		t.Fatalf("source socket in %s: %v", v.ns, res.err)
	}
	t.Cleanup(func() { res.uc.Close() })
	return res.uc
}

func openSource(ifName string, src netip.Addr) (*net.UDPConn, error) {
	ifi, err := net.InterfaceByName(ifName)
	if err != nil {
		return nil, err
	}
	uc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, 5000)))
	if err != nil {
		return nil, err
	}
	if src.Is4() {
		err = ipv4.NewPacketConn(uc).SetMulticastInterface(ifi)
	} else {
		err = ipv6.NewPacketConn(uc).SetMulticastInterface(ifi)
	}
	if err != nil {
		uc.Close()
		return nil, err
	}
	return uc, nil
}

// mcfilter reports whether the kernel holds a source filter for ch on
// ifName, from /proc/net/mcfilter{,6}.
func mcfilter(t *testing.T, ifName string, ch amt.Channel) bool {
	t.Helper()
	ifi, err := net.InterfaceByName(ifName)
	if err != nil {
		t.Fatal(err)
	}
	idx := strconv.Itoa(ifi.Index) // the name column is truncated
	// thread-self: /proc/net is the main thread's namespace.
	path, group, source := "/proc/thread-self/net/mcfilter", hexAddr(ch.Group), hexAddr(ch.Source)
	if ch.Group.Is6() {
		path += "6"
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 4 && f[0] == idx && strings.EqualFold(f[2], group) && strings.EqualFold(f[3], source) {
			return true
		}
	}
	return false
}

func hexAddr(a netip.Addr) string {
	s := ""
	for _, b := range a.AsSlice() {
		s += fmt.Sprintf("%02x", b)
	}
	if a.Is4() {
		return "0x" + s
	}
	return s
}

// TestNativeMulticast sends real SSM traffic from a network namespace over
// a veth pair and checks that it arrives tunnelled, unchanged, at the
// gateways joined to its (S,G), over IPv4 and IPv6, and that the relay
// joins and leaves natively with its gateways.
func TestNativeMulticast(t *testing.T) {
	requireRoot(t)
	v := newVethPair(t)
	r := startRelay(t, Options{Listen: ":0", NativeInterface: v.hostIf})

	tests := []struct {
		name  string
		ch    amt.Channel
		gwLo  netip.Addr
		p     bool
		group string
	}{
		{"ipv4", amt.Channel{Source: v.srcAddr4, Group: netip.MustParseAddr("232.1.1.1")}, lo4, false, "232.1.1.1:5001"},
		{"ipv6", amt.Channel{Source: v.srcAddr6, Group: netip.MustParseAddr("ff3e::8000:7")}, lo6, true, "[ff3e::8000:7]:5001"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := v.sourceConn(t, tt.ch.Source)
			to := netip.MustParseAddrPort(tt.group)
			if mcfilter(t, v.hostIf, tt.ch) {
				t.Fatal("joined before any gateway asked")
			}
			g := newGateway(t, tt.gwLo, relayAddr(t, r, tt.gwLo))
			g.ipv6 = tt.p
			g.request()
			g.joinAndWait(r, tt.ch)
			if !mcfilter(t, v.hostIf, tt.ch) {
				t.Fatalf("no native membership for %v on %s", tt.ch, v.hostIf)
			}

			payload := bytes.Repeat([]byte("TS-packet-"), 131) // 1310 bytes
			var inner []byte
			deadline := time.Now().Add(5 * time.Second)
			for inner == nil {
				if time.Now().After(deadline) {
					t.Fatalf("no tunnelled data; stats %+v", r.Stats())
				}
				if _, err := src.WriteToUDPAddrPort(payload, to); err != nil {
					t.Fatal(err)
				}
				b, _, err := g.recv(50 * time.Millisecond)
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					continue
				}
				if err != nil {
					t.Fatal(err)
				}
				if inner, err = amt.ParseDataHeader(b); err != nil {
					t.Fatal(err)
				}
			}
			d, err := amt.ParseInnerUDP(inner)
			if err != nil {
				t.Fatalf("tunnelled datagram: %v", err)
			}
			if d.Channel() != tt.ch || d.SrcPort != 5000 || d.DstPort != 5001 || !bytes.Equal(d.Payload, payload) {
				t.Errorf("tunnelled %v %d→%d (%d bytes), want %v 5000→5001 (%d bytes)",
					d.Channel(), d.SrcPort, d.DstPort, len(d.Payload), tt.ch, len(payload))
			}

			g.update(amt.ChangeRecords(nil, []amt.Channel{tt.ch}))
			waitFor(t, "leave", func() bool { return !hasChannels(r, g.addr(), tt.ch) })
			if mcfilter(t, v.hostIf, tt.ch) {
				t.Errorf("native membership kept after the last gateway left")
			}
		})
	}
	if s := r.Stats(); s.Drops.BadDatagram != 0 {
		t.Errorf("%d native datagrams refused", s.Drops.BadDatagram)
	}
}

func TestNativeErrors(t *testing.T) {
	if _, err := New(Options{Listen: "127.0.0.1:0", NativeInterface: "no-such-if0", Logger: testLogger(t)}); err == nil {
		t.Error("New with a missing interface succeeded")
	}
}
