package amtgw

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/blockcast/beacon/shared/amt"
	"golang.org/x/net/ipv4"
)

// fakeRaw records what a reemitter writes.
type fakeRaw struct {
	pkts [][]byte
	to   []*net.IPAddr
	err  error
}

func (f *fakeRaw) WriteToIP(b []byte, addr *net.IPAddr) (int, error) {
	if f.err != nil {
		return 0, f.err
	}
	f.pkts = append(f.pkts, bytes.Clone(b))
	f.to = append(f.to, addr)
	return len(b), nil
}

func (f *fakeRaw) Close() error { return nil }

func TestReemitter(t *testing.T) {
	tests := []struct {
		name    string
		ttl     uint8 // option
		in      uint8 // datagram TTL
		wantTTL uint8 // 0: not sent
	}{
		{"decrement", 0, 64, 63},
		{"last hop", 0, 2, 1},
		{"expired", 0, 1, 0},
		{"override", 16, 1, 16},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := &fakeRaw{}
			r := newReemitterOn("test0", raw, tt.ttl, 4, 2048, testLogger(t))
			d := datagram(ch4, 5004, "ts packets")
			d.TTL = tt.in
			pkt, err := amt.AppendInnerUDP(nil, d)
			if err != nil {
				t.Fatal(err)
			}
			parsed, err := amt.ParseInnerUDP(pkt)
			if err != nil {
				t.Fatal(err)
			}
			r.send(&parsed, bytes.Clone(pkt))
			r.send(&parsed, bytes.Clone(pkt)) // the group's address is reused
			st := r.state()
			if tt.wantTTL == 0 {
				if len(raw.pkts) != 0 || st.TTLExpired != 2 {
					t.Fatalf("sent %d, ttl expired %d; want none sent", len(raw.pkts), st.TTLExpired)
				}
				return
			}
			if len(raw.pkts) != 2 || st.Sent != 2 || raw.to[0] != raw.to[1] || !raw.to[0].IP.Equal(ch4.Group.AsSlice()) {
				t.Fatalf("sent %d to %v (state %+v)", len(raw.pkts), raw.to, st)
			}
			out, err := amt.ParseInnerUDP(raw.pkts[0]) // checks the header checksum
			if err != nil {
				t.Fatalf("re-emitted datagram does not parse: %v", err)
			}
			if out.TTL != tt.wantTTL || out.Src != ch4.Source || out.Dst != ch4.Group || string(out.Payload) != "ts packets" {
				t.Errorf("re-emitted %+v, want TTL %d and the rest unchanged", out, tt.wantTTL)
			}
			if !bytes.Equal(raw.pkts[0][12:], pkt[12:]) || !bytes.Equal(raw.pkts[0][:8], pkt[:8]) {
				t.Errorf("re-emission changed more than TTL and checksum:\n%x\n%x", raw.pkts[0], pkt)
			}
		})
	}
	raw := &fakeRaw{err: errors.New("no route")}
	r := newReemitterOn("test0", raw, 0, 4, 2048, testLogger(t))
	pkt, _ := amt.AppendInnerUDP(nil, datagram(ch4, 5004, "x"))
	d, _ := amt.ParseInnerUDP(pkt)
	r.send(&d, pkt)
	if st := r.state(); st.Errors != 1 || st.LastError != "no route" {
		t.Errorf("state after a failed write %+v", st)
	}
}

// TestReemit sends a channel through the tunnel and out of a veth
// interface whose peer lives in another network namespace, where a
// receiver that joined (S,G) must get it with source S and the TTL
// decremented; a channel joined without reemit must not appear. It needs
// root (skipped otherwise, failed when CI=true).
func TestReemit(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("TestReemit needs root in CI")
		}
		t.Skip("needs root for a network namespace and a raw socket")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	id := os.Getpid() % 100000
	ns := fmt.Sprintf("amtgw%d", id)
	host, peer := fmt.Sprintf("amtgw%da", id), fmt.Sprintf("amtgw%db", id)
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	// Clean up first, so that a failure half way leaves nothing behind.
	t.Cleanup(func() {
		exec.Command("ip", "link", "del", host).Run()
		exec.Command("ip", "netns", "del", ns).Run()
	})
	ip("netns", "add", ns)
	ip("link", "add", host, "type", "veth", "peer", "name", peer)
	ip("addr", "add", "10.77.0.1/24", "dev", host)
	ip("link", "set", host, "up")
	ip("link", "set", peer, "netns", ns)
	ip("-n", ns, "addr", "add", "10.77.0.2/24", "dev", peer)
	ip("-n", ns, "link", "set", peer, "up")
	ip("-n", ns, "link", "set", "lo", "up")
	// The source S is not on the link: turn off reverse-path filtering.
	for _, k := range []string{"all", "default", peer} {
		exec.Command("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.conf."+k+".rp_filter=0").Run()
	}

	const port = 5004
	other := Channel{Source: ch4.Source, Group: netip.MustParseAddr("232.1.2.4")}
	helper := exec.Command("ip", "netns", "exec", ns, os.Args[0], "-test.run=^TestReemitReceiver$", "-test.v")
	helper.Env = append(os.Environ(),
		"AMTGW_RECEIVER=1", "AMTGW_IFACE="+peer, "AMTGW_PORT="+strconv.Itoa(port),
		"AMTGW_CHANNELS="+ch4.Source.String()+","+ch4.Group.String()+","+other.Group.String())
	stdout, err := helper.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	helper.Stderr = &stderr
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { helper.Process.Kill(); helper.Wait() })
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	next := func(timeout time.Duration) (string, bool) {
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					return "", false
				}
				if strings.HasPrefix(l, "RECV ") || l == "READY" {
					return l, true
				}
			case <-time.After(timeout):
				return "", false
			}
		}
	}
	if l, ok := next(5 * time.Second); l != "READY" || !ok {
		t.Fatalf("receiver did not start: %q\n%s", l, stderr.String())
	}

	relay := newTestRelay(t, "udp", "127.0.0.1:0")
	opts := fastOptions(t, Static{{Addr: relay.addr}})
	opts.ReemitInterface = host
	g, _ := startGateway(t, opts)
	if err := g.Join(ch4, netip.AddrPort{}, true); err != nil {
		t.Fatal(err)
	}
	if err := g.Join(other, netip.AddrPort{}, false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, "membership", func() bool {
		_, a := relay.member(ch4)
		_, b := relay.member(other)
		return a && b
	})
	for i := 0; i < 3; i++ {
		relay.send(other, datagram(other, port, "not for the LAN"))
		relay.send(ch4, datagram(ch4, port, fmt.Sprintf("payload %d", i)))
	}
	for i := 0; i < 3; i++ {
		l, ok := next(3 * time.Second)
		if !ok {
			t.Fatalf("datagram %d not received on the LAN side; receiver: %s; state %+v", i, stderr.String(), g.State().Reemit)
		}
		want := fmt.Sprintf("RECV src=%v dst=%v ttl=63 payload=payload %d", ch4.Source, ch4.Group, i)
		if l != want {
			t.Errorf("got %q, want %q", l, want)
		}
	}
	if l, ok := next(200 * time.Millisecond); ok {
		t.Errorf("unexpected datagram on the LAN: %q", l)
	}
	if st := g.State().Reemit; st == nil || st.Sent != 3 || st.Interface != host {
		t.Errorf("re-emission state %+v", st)
	}
}

// TestReemitReceiver is TestReemit's receiver, run in the namespace: it
// joins (S,G1) and (S,G2) on the interface and prints what arrives.
func TestReemitReceiver(t *testing.T) {
	if os.Getenv("AMTGW_RECEIVER") != "1" {
		t.Skip("run by TestReemit")
	}
	ifi, err := net.InterfaceByName(os.Getenv("AMTGW_IFACE"))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Split(os.Getenv("AMTGW_CHANNELS"), ",")
	c, err := net.ListenPacket("udp4", "0.0.0.0:"+os.Getenv("AMTGW_PORT"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p := ipv4.NewPacketConn(c)
	src := &net.UDPAddr{IP: net.ParseIP(f[0])}
	for _, grp := range f[1:] {
		if err := p.JoinSourceSpecificGroup(ifi, &net.UDPAddr{IP: net.ParseIP(grp)}, src); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.SetControlMessage(ipv4.FlagTTL|ipv4.FlagDst|ipv4.FlagInterface, true); err != nil {
		t.Fatal(err)
	}
	fmt.Println("READY")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	buf := make([]byte, 2048)
	for ctx.Err() == nil {
		c.SetReadDeadline(time.Now().Add(time.Second))
		n, cm, from, err := p.ReadFrom(buf)
		if err != nil {
			continue
		}
		fmt.Printf("RECV src=%v dst=%v ttl=%d payload=%s\n", from.(*net.UDPAddr).IP, cm.Dst, cm.TTL, buf[:n])
	}
}

func TestReemitSetupErrors(t *testing.T) {
	if _, err := newReemitter("nosuchif0", 0, 4, 2048, testLogger(t)); err == nil {
		t.Error("re-emission on a missing interface succeeded")
	}
	if lo, err := net.InterfaceByName("lo"); err == nil && lo.Flags&net.FlagMulticast == 0 {
		if _, err := newReemitter("lo", 0, 4, 2048, testLogger(t)); !errors.Is(err, ErrReemit) {
			t.Errorf("re-emission on lo (no multicast): %v, want ErrReemit", err)
		}
	}
	g, err := New(Options{Relays: Static{}, ReemitInterface: "nosuchif0", Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "nosuchif0") {
		t.Errorf("Run with a missing re-emission interface: %v", err)
	}
	if err := g.Join(ch4, netip.AddrPort{}, false); !errors.Is(err, ErrClosed) {
		t.Errorf("Join after a failed Run: %v, want ErrClosed", err)
	}
}
