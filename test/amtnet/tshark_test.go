package amtnet

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/blockcast/beacon/test/harness"

	"github.com/blockcast/beacon/test/harness/netns"
)

// probePort is where captures send their readiness probes (discard).
const probePort = 9

// capture is tshark recording one interface of a namespace to a pcap file.
type capture struct {
	tb     testing.TB
	pcap   string
	cmd    *exec.Cmd
	stdout *harness.LineBuffer
	stderr *harness.LineBuffer
	exited chan error
	done   bool

	probeTo netip.AddrPort
}

// startCapture runs tshark in ns on iface, recording what filter (a
// capture filter) lets through, plus probes: tshark prints "Capturing on"
// a moment before its filter is live, so UDP probes are sent from ns to
// probeTo:9 until one shows up, and only then does startCapture return.
func startCapture(tb testing.TB, tshark string, ns *netns.NS, iface, filter string, probeTo netip.Addr) *capture {
	tb.Helper()
	c := &capture{tb: tb, pcap: filepath.Join(tb.TempDir(), ns.String()+"-"+iface+".pcapng"),
		stdout: new(harness.LineBuffer), stderr: new(harness.LineBuffer), exited: make(chan error, 1)}
	c.cmd = ns.Command(tshark, "-i", iface, "-f", fmt.Sprintf("(%s) or udp port %d", filter, probePort),
		"-w", c.pcap, "-P", "-l", "-T", "fields", "-e", "udp.dstport", "-E", "occurrence=f")
	c.cmd.Stdout, c.cmd.Stderr = c.stdout, c.stderr
	if err := c.cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	go func() { c.exited <- c.cmd.Wait() }()
	tb.Cleanup(c.stop)

	c.probeTo = netip.AddrPortFrom(probeTo, probePort)
	c.sync(ns)
	return c
}

// sync sends probes from ns until tshark prints one more than it had:
// everything sent before sync returns is then in the capture.
func (c *capture) sync(ns *netns.NS) {
	c.tb.Helper()
	network := "udp4"
	if c.probeTo.Addr().Is6() {
		network = "udp6"
	}
	probe, err := ns.ListenUDP(network, nil)
	if err != nil {
		c.tb.Fatal(err)
	}
	defer probe.Close()
	probes := func() int {
		n := 0
		for _, l := range c.stdout.Lines() {
			if l == strconv.Itoa(probePort) {
				n++
			}
		}
		return n
	}
	before := probes()
	to := net.UDPAddrFromAddrPort(c.probeTo)
	deadline := time.Now().Add(20 * time.Second)
	for i := 0; probes() == before; i++ {
		if strings.Contains(c.stderr.String(), "Capturing on") && i%4 == 0 {
			probe.WriteToUDP([]byte("probe"), to)
		}
		select {
		case err := <-c.exited:
			c.done = true
			c.tb.Fatalf("tshark exited: %v\n%s", err, c.stderr)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			c.tb.Fatalf("tshark did not capture a probe in 20s:\n%s", c.stderr)
		}
	}
}

// stop ends the capture (SIGINT, so the file is complete).
func (c *capture) stop() {
	if c.done {
		return
	}
	c.done = true
	c.cmd.Process.Signal(os.Interrupt)
	select {
	case <-c.exited:
	case <-time.After(10 * time.Second):
		c.cmd.Process.Kill()
		<-c.exited
	}
}

// packet is one dissected frame: every occurrence of each field asked for,
// outer headers first.
type packet map[string][]string

func (p packet) first(field string) string {
	if v := p[field]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// last returns the innermost occurrence of field.
func (p packet) last(field string) string {
	if v := p[field]; len(v) > 0 {
		return v[len(v)-1]
	}
	return ""
}

func (p packet) frame() string { return p.first("frame.number") }

// outer6 reports whether the outer IP header is IPv6.
func (p packet) outer6() bool {
	for _, proto := range strings.Split(p.first("frame.protocols"), ":") {
		switch proto {
		case "ip":
			return false
		case "ipv6":
			return true
		}
	}
	return false
}

// outer returns the outer source and destination address and port.
func (p packet) outer() (src, dst netip.AddrPort) {
	f := "ip."
	if p.outer6() {
		f = "ipv6."
	}
	sa, _ := netip.ParseAddr(p.first(f + "src"))
	da, _ := netip.ParseAddr(p.first(f + "dst"))
	sp, _ := strconv.Atoi(p.first("udp.srcport"))
	dp, _ := strconv.Atoi(p.first("udp.dstport"))
	return netip.AddrPortFrom(sa, uint16(sp)), netip.AddrPortFrom(da, uint16(dp))
}

// inner returns the occurrences of an IP or UDP field inside the AMT
// message: those after the outer header's.
func (p packet) inner(field string) []string {
	v := p[field]
	outer := strings.HasPrefix(field, "udp.") ||
		strings.HasPrefix(field, "ipv6.") == p.outer6() && strings.HasPrefix(field, "ip")
	if outer && len(v) > 0 {
		return v[1:]
	}
	return v
}

// problems returns what tshark itself found wrong: malformed packets and
// expert information of warning severity or worse.
func (p packet) problems() []string {
	var out []string
	if len(p["_ws.malformed"]) > 0 {
		out = append(out, fmt.Sprintf("malformed: %q", p["_ws.malformed"]))
	}
	for i, s := range p["_ws.expert.severity"] {
		if sev, err := strconv.ParseUint(s, 10, 32); err != nil || sev >= tsharkWarn {
			msg := ""
			if i < len(p["_ws.expert.message"]) {
				msg = p["_ws.expert.message"][i]
			}
			out = append(out, fmt.Sprintf("expert info, severity %s: %s", s, msg))
		}
	}
	return out
}

// tsharkWarn is the expert severity PI_WARN as tshark prints it
// (epan/proto.h); PI_ERROR is above it.
const tsharkWarn = 0x00600000

// dissect reads pcap with tshark (the AMT dissector on amtPorts besides
// its own 2268) and returns every packet but the probes.
func dissect(tb testing.TB, tshark, pcap string, amtPorts []uint16, fields []string, extra ...string) []packet {
	tb.Helper()
	args := []string{"-r", pcap, "-T", "json"}
	for _, p := range amtPorts {
		args = append(args, "-d", fmt.Sprintf("udp.port==%d,amt", p))
	}
	args = append(args, extra...)
	for _, f := range append([]string{"frame.number", "frame.protocols", "udp.dstport", "udp.srcport"}, fields...) {
		args = append(args, "-e", f)
	}
	var stderr bytes.Buffer
	cmd := exec.Command(tshark, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		tb.Fatalf("tshark -r %s: %v\n%s", pcap, err, stderr.String())
	}
	var frames []struct {
		Source struct {
			Layers packet `json:"layers"`
		} `json:"_source"`
	}
	if err := json.Unmarshal(out, &frames); err != nil {
		tb.Fatalf("tshark JSON: %v", err)
	}
	var pkts []packet
	for _, f := range frames {
		p := f.Source.Layers
		if p.first("udp.dstport") == strconv.Itoa(probePort) {
			continue
		}
		pkts = append(pkts, p)
	}
	return pkts
}
