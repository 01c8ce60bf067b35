package mcrecv

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/blockcast/beacon/shared/manifest"
	"golang.org/x/net/ipv4"
)

// TestNativeSSMJoin runs the real native join (listenSSM) in a network
// namespace of its own: a veth interface carrying 232.0.0.0/8, two local
// sources, datagrams looped back to the joined socket. The channel's
// source gets through; the other source, sending to the same group and
// port, is filtered out by the SSM join in the kernel.
func TestNativeSSMJoin(t *testing.T) {
	if os.Getenv("MCRECV_SSM_CHILD") == "1" {
		ssmChild(t)
		return
	}
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs root for a network namespace")
		}
		t.Skip("needs root for a network namespace")
	}
	ns := fmt.Sprintf("mcrecv-%d", os.Getpid())
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	run("netns", "add", ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	for _, c := range [][]string{
		{"link", "set", "lo", "up"},
		{"link", "add", "wan0", "type", "veth", "peer", "name", "wan1"},
		{"link", "set", "wan1", "up"},
		{"link", "set", "wan0", "multicast", "on", "up"},
		{"addr", "add", "10.9.0.1/24", "dev", "wan0"},
		{"addr", "add", "10.9.0.2/24", "dev", "wan0"},
		{"route", "add", "232.0.0.0/8", "dev", "wan0"},
	} {
		run(append([]string{"-n", ns}, c...)...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", ns, os.Args[0], "-test.run", "^TestNativeSSMJoin$", "-test.v")
	cmd.Env = append(os.Environ(), "MCRECV_SSM_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS") {
		t.Fatalf("in the namespace: %v\n%s", err, out)
	}
}

func ssmChild(t *testing.T) {
	ch, err := manifest.ChannelOf("10.9.0.1", "232.1.2.3", 5004)
	if err != nil {
		t.Fatal(err)
	}
	c, err := listenSSM(ch, "wan0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ifi, err := net.InterfaceByName("wan0")
	if err != nil {
		t.Fatal(err)
	}
	sendFrom := func(src, msg string) {
		s, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(src)})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		p := ipv4.NewPacketConn(s)
		p.SetMulticastInterface(ifi)
		p.SetMulticastLoopback(true)
		if _, err := s.WriteToUDP([]byte(msg), &net.UDPAddr{IP: net.IPv4(232, 1, 2, 3), Port: 5004}); err != nil {
			t.Fatal(err)
		}
	}
	sendFrom("10.9.0.2", "other source")
	sendFrom("10.9.0.1", "channel source")
	buf := make([]byte, 100)
	c.(interface{ SetReadDeadline(time.Time) error }).SetReadDeadline(time.Now().Add(2 * time.Second))
	n, from, err := c.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatal(err)
	}
	if string(buf[:n]) != "channel source" || from.Addr() != netip.MustParseAddr("10.9.0.1") {
		t.Fatalf("got %q from %v", buf[:n], from)
	}
	c.(interface{ SetReadDeadline(time.Time) error }).SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, from, err := c.ReadFromUDPAddrPort(buf); err == nil {
		t.Fatalf("also got %q from %v", buf[:n], from)
	}
}
