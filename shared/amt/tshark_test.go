package amt

import (
	"context"
	"encoding/hex"
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
)

// TestTshark sends every message the codec produces, over IPv4 and IPv6
// loopback, as real UDP datagrams while tshark captures them, then checks
// with Wireshark's AMT, IP, IGMP, ICMPv6/MLD and UDP dissectors that nothing
// is malformed, no expert info of warning or error severity is raised, every
// checksum that can be verified is good, and the dissected fields equal what
// went in. Two deliberately broken datagrams are sent too, and must be
// flagged, so that the checks are known to bite.
func TestTshark(t *testing.T) {
	tshark := requireTshark(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// Receivers, so the datagrams have somewhere to go; their ports tell
	// tshark where to apply the AMT dissector.
	conn4, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn4.Close()
	dst4 := conn4.LocalAddr().(*net.UDPAddr).AddrPort()
	var dst6 netip.AddrPort
	if conn6, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback}); err != nil {
		t.Logf("no IPv6 loopback, sending over IPv4 only: %v", err)
	} else {
		defer conn6.Close()
		dst6 = conn6.LocalAddr().(*net.UDPAddr).AddrPort()
	}

	type sent struct {
		fx      fixture
		outer6  bool
		control string // non-empty: a broken datagram tshark must flag
		b       []byte
	}
	var all []sent
	for _, outer := range []netip.AddrPort{dst4, dst6} {
		if !outer.IsValid() {
			continue
		}
		for _, fx := range fixtures(t) {
			b, err := fx.msg.AppendTo(nil)
			if err != nil {
				t.Fatal(err)
			}
			all = append(all, sent{fx: fx, outer6: outer.Addr().Is6(), b: b})
		}
	}
	// Controls: an Update whose IGMP checksum is off by one, and a Relay
	// Discovery cut short.
	for _, s := range all[:len(fixtures(t))] {
		if s.fx.name == "membership_update_v4" {
			bad := append([]byte(nil), s.b...)
			bad[len(bad)-1]++
			all = append(all, sent{fx: s.fx, control: "bad IGMP checksum", b: bad})
		}
		if s.fx.name == "relay_discovery" {
			all = append(all, sent{fx: s.fx, control: "truncated", b: s.b[:5]})
		}
	}

	probe, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer probe.Close()
	probePort := strconv.Itoa(probe.LocalAddr().(*net.UDPAddr).Port)

	pcap := filepath.Join(t.TempDir(), "amt.pcapng")
	// Exact destinations: other programs on this machine may use the same
	// port numbers on other loopback addresses.
	filter := fmt.Sprintf("udp port %s or (dst host %s and udp dst port %d)", probePort, dst4.Addr(), dst4.Port())
	decodeAs := []string{"-d", fmt.Sprintf("udp.port==%d,amt", dst4.Port())}
	if dst6.IsValid() {
		filter += fmt.Sprintf(" or (dst host %s and udp dst port %d)", dst6.Addr(), dst6.Port())
		decodeAs = append(decodeAs, "-d", fmt.Sprintf("udp.port==%d,amt", dst6.Port()))
	}
	capture(ctx, t, tshark, pcap, filter, probe, len(all), func() {
		for _, s := range all {
			to := dst4
			if s.outer6 {
				to = dst6
			}
			c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(to))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.Write(s.b); err != nil {
				t.Fatal(err)
			}
			c.Close()
		}
	})

	rows := dissect(ctx, t, tshark, pcap, probePort, decodeAs, tsharkFields, nil)
	// UDP and IPv4 header checksums are verified in a second pass: the
	// outer UDP checksum on loopback is left to offload and never filled
	// in, so only the inner ones (the last occurrence) are checked.
	sums := dissect(ctx, t, tshark, pcap, probePort, decodeAs,
		[]string{"udp.dstport", "ip.checksum.status", "udp.checksum.status"},
		[]string{"-o", "ip.check_checksum:TRUE", "-o", "udp.check_checksum:TRUE"})
	if len(rows) != len(all) || len(sums) != len(all) {
		t.Fatalf("tshark dissected %d/%d packets, sent %d", len(rows), len(sums), len(all))
	}
	for i, s := range all {
		name := s.fx.name
		if s.outer6 {
			name += " over IPv6"
		}
		problems := checkRow(rows[i], sums[i], s.fx, s.outer6)
		if s.control != "" {
			if len(problems) == 0 {
				t.Errorf("control %q (%s): tshark found nothing wrong", s.control, name)
			}
			continue
		}
		for _, p := range problems {
			t.Errorf("%s: %s", name, p)
		}
	}
}

// requireTshark returns tshark's path, or skips the test when tshark or
// root (for capturing) is missing; with CI=true it fails instead.
func requireTshark(t *testing.T) string {
	t.Helper()
	skip := t.Skipf
	if os.Getenv("CI") == "true" {
		skip = t.Fatalf
	}
	path, err := exec.LookPath("tshark")
	if err != nil {
		skip("tshark not installed: %v", err)
	}
	if os.Geteuid() != 0 {
		skip("capturing on lo needs root")
	}
	return path
}

// capture records what crosses the ports in filter on lo to pcap while
// send runs. tshark's "Capturing on" comes a moment before its filter is
// live, so after it the test sends probes to probePort until tshark prints
// one, and only then calls send; it stops tshark with SIGINT once tshark has
// printed n packets for the other ports. Every wait is bounded, and tshark
// is killed if it does not stop.
func capture(ctx context.Context, t *testing.T, tshark, pcap, filter string, probe *net.UDPConn, n int, send func()) {
	t.Helper()
	probePort := strconv.Itoa(probe.LocalAddr().(*net.UDPAddr).Port)
	cmd := exec.CommandContext(ctx, tshark, "-i", "lo", "-f", filter, "-w", pcap,
		"-P", "-l", "-T", "fields", "-e", "udp.dstport", "-E", "occurrence=f")
	cmd.WaitDelay = 5 * time.Second
	stderr := new(harness.LineBuffer)
	stdout := new(harness.LineBuffer)
	cmd.Stderr, cmd.Stdout = stderr, stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}
	defer stop()

	// waitFor polls cond until it holds, tshark exits, or the time is up.
	waitFor := func(what string, d time.Duration, tick func(), cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(d)
		for !cond() {
			if tick != nil {
				tick()
			}
			select {
			case err := <-exited:
				stopped = true
				t.Fatalf("tshark exited while waiting for %s: %v\nstderr: %s", what, err, stderr)
			case <-time.After(50 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s\nstderr: %s\nstdout: %s", what, stderr, stdout)
			}
		}
	}
	waitFor("tshark to report capturing", 20*time.Second, nil, func() bool {
		return strings.Contains(stderr.String(), "Capturing on")
	})
	var probes int
	waitFor("a probe to be captured", 20*time.Second, func() {
		if probes++; probes%4 == 1 { // one probe every 200 ms
			_, _ = probe.WriteToUDP([]byte("probe"), probe.LocalAddr().(*net.UDPAddr))
		}
	}, func() bool {
		for _, l := range stdout.Lines() {
			if l == probePort {
				return true
			}
		}
		return false
	})

	send()

	waitFor(fmt.Sprintf("tshark to capture %d packets", n), 20*time.Second, nil, func() bool {
		got := 0
		for _, l := range stdout.Lines() {
			if l != probePort {
				got++
			}
		}
		return got >= n
	})
	stop()
}

// dissect reads pcap with tshark and returns, per packet but the probes,
// every occurrence of each field (comma-aggregated by tshark, split here).
// fields must include udp.dstport.
func dissect(ctx context.Context, t *testing.T, tshark, pcap, probePort string, decodeAs, fields, extra []string) []map[string][]string {
	t.Helper()
	args := append([]string{"-r", pcap}, decodeAs...)
	args = append(args, extra...)
	args = append(args, "-T", "fields", "-E", "header=n", "-E", "separator=/t", "-E", "occurrence=a", "-E", "aggregator=,")
	for _, f := range fields {
		args = append(args, "-e", f)
	}
	out, err := exec.CommandContext(ctx, tshark, args...).Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("tshark -r: %v: %s", err, stderr)
	}
	var rows []map[string][]string
	for _, line := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
		if line == "" {
			continue
		}
		cols := strings.Split(line, "\t")
		row := make(map[string][]string, len(fields))
		for i, f := range fields {
			if i >= len(cols) || cols[i] == "" {
				continue
			}
			if f == "_ws.expert.message" {
				row[f] = []string{cols[i]} // messages may contain commas
				continue
			}
			row[f] = strings.Split(cols[i], ",")
		}
		if ports := row["udp.dstport"]; len(ports) > 0 && ports[0] == probePort {
			continue
		}
		rows = append(rows, row)
	}
	return rows
}

var tsharkFields = []string{
	"amt.type", "amt.discovery_nonce", "amt.request_nonce",
	"amt.relay_address.ipv4", "amt.relay_address.ipv6",
	"amt.request.p", "amt.membership_query.l", "amt.membership_query.g",
	"amt.response_mac", "amt.gateway.port_number", "amt.gateway.ip_address",
	"ip.src", "ip.dst", "ip.ttl", "ipv6.src", "ipv6.dst", "ipv6.hlim", "ip.opt.ra", "ipv6.opt.router_alert",
	"igmp.type", "igmp.checksum.status", "igmp.max_resp", "igmp.qrv", "igmp.qqic", "igmp.num_src",
	"igmp.record_type", "igmp.maddr", "igmp.saddr",
	"icmpv6.type", "icmpv6.checksum.status", "icmpv6.mld.maximum_response_code", "icmpv6.mld.flag.qrv",
	"icmpv6.mld.qqi", "icmpv6.mld.multicast_address",
	"icmpv6.mldr.mar.record_type", "icmpv6.mldr.mar.multicast_address", "icmpv6.mldr.mar.source_address",
	"udp.srcport", "udp.dstport", "data.data",
	"_ws.malformed", "_ws.expert.severity", "_ws.expert.message",
}

// Expert severities as tshark prints them (epan/proto.h PI_WARN, PI_ERROR).
const tsharkWarn = 0x00600000

// checkRow compares one dissected packet with the fixture that produced it
// and returns what disagrees.
func checkRow(row, sums map[string][]string, fx fixture, outer6 bool) []string {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	// want compares the occurrences of field with want (all of them).
	want := func(field string, want ...string) {
		if got := row[field]; strings.Join(got, ",") != strings.Join(want, ",") {
			bad("%s = %q, want %q", field, got, want)
		}
	}
	// inner drops the outer header's occurrence of an IP field.
	inner := func(field string) []string {
		vals := row[field]
		if outer := strings.HasPrefix(field, "ipv6.") == outer6; outer && len(vals) > 0 {
			vals = vals[1:]
		}
		return vals
	}
	wantInner := func(field string, want ...string) {
		if got := inner(field); strings.Join(got, ",") != strings.Join(want, ",") {
			bad("inner %s = %q, want %q", field, got, want)
		}
	}
	sameAddr := func(field string, want netip.Addr) {
		vals := row[field]
		if len(vals) != 1 {
			bad("%s = %q, want %v", field, vals, want)
			return
		}
		if got, err := netip.ParseAddr(vals[0]); err != nil || got != want {
			bad("%s = %q, want %v", field, vals[0], want)
		}
	}
	hexNum := func(field string, want uint64) {
		vals := row[field]
		if len(vals) != 1 {
			bad("%s = %q, want %#x", field, vals, want)
			return
		}
		if got, err := strconv.ParseUint(strings.TrimPrefix(vals[0], "0x"), 16, 64); err != nil || got != want {
			bad("%s = %q, want %#x", field, vals[0], want)
		}
	}
	flag := func(field string, v bool) {
		if v {
			want(field, "1")
		} else {
			want(field, "0")
		}
	}
	mac := func(m [6]byte) uint64 {
		var v uint64
		for _, c := range m {
			v = v<<8 | uint64(c)
		}
		return v
	}
	gateway := func(ap netip.AddrPort) {
		want("amt.gateway.port_number", strconv.Itoa(int(ap.Port())))
		// Wireshark shows the 16-byte field as IPv6: IPv4-compatible.
		var a [16]byte
		copy(a[:], appendGateway(nil, ap)[2:])
		sameAddr("amt.gateway.ip_address", netip.AddrFrom16(a))
	}
	checksumsGood := func(field string) {
		for _, v := range row[field] {
			if v != "1" {
				bad("%s = %q, want all 1 (good)", field, row[field])
				break
			}
		}
		if len(row[field]) == 0 {
			bad("%s missing", field)
		}
	}
	addrs := func(as []netip.Addr) []string {
		var s []string
		for _, a := range as {
			s = append(s, a.String())
		}
		return s
	}
	records := func(recs []GroupRecord) (types, groups, sources []string) {
		for _, r := range recs {
			types = append(types, strconv.Itoa(int(r.Type)))
			groups = append(groups, r.Group.String())
			sources = append(sources, addrs(r.Sources)...)
		}
		return
	}

	if len(row["_ws.malformed"]) > 0 {
		bad("malformed: %q", row["_ws.malformed"])
	}
	for i, s := range row["_ws.expert.severity"] {
		if sev, err := strconv.ParseUint(s, 10, 32); err != nil || sev >= tsharkWarn {
			bad("expert info of severity %s: %q (#%d)", s, row["_ws.expert.message"], i)
		}
	}
	if st := sums["ip.checksum.status"]; len(st) > 0 {
		for _, v := range st {
			if v != "1" {
				bad("IPv4 header checksum status %q", st)
				break
			}
		}
	}
	want("amt.type", strconv.Itoa(int(fx.msg.Type())))

	switch m := fx.msg.(type) {
	case *RelayDiscovery:
		hexNum("amt.discovery_nonce", uint64(m.Nonce))
	case *RelayAdvertisement:
		hexNum("amt.discovery_nonce", uint64(m.Nonce))
		if m.Relay.Is4() {
			sameAddr("amt.relay_address.ipv4", m.Relay)
		} else {
			sameAddr("amt.relay_address.ipv6", m.Relay)
		}
	case *Request:
		hexNum("amt.request_nonce", uint64(m.Nonce))
		flag("amt.request.p", m.IPv6)
	case *MembershipQuery:
		hexNum("amt.request_nonce", uint64(m.Nonce))
		hexNum("amt.response_mac", mac(m.MAC))
		flag("amt.membership_query.l", m.Limit)
		flag("amt.membership_query.g", m.Gateway.IsValid())
		if m.Gateway.IsValid() {
			gateway(m.Gateway)
		} else {
			want("amt.gateway.port_number")
		}
		q := fx.query
		if q.Group.Is4() {
			wantInner("ip.src", fxRelay4.String())
			wantInner("ip.dst", "224.0.0.1")
			wantInner("ip.ttl", "1")
			if len(row["ip.opt.ra"]) != 1 {
				bad("no IPv4 Router Alert: %q", row["ip.opt.ra"])
			}
			want("igmp.type", "0x11")
			checksumsGood("igmp.checksum.status")
			want("igmp.max_resp", strconv.Itoa(int(q.MaxRespCode)))
			want("igmp.qrv", strconv.Itoa(int(q.QRV)))
			want("igmp.qqic", strconv.Itoa(int(q.QQIC)))
			want("igmp.num_src", "0")
		} else {
			wantInner("ipv6.src", fxLL6.String())
			wantInner("ipv6.dst", "ff02::1")
			wantInner("ipv6.hlim", "1")
			if len(row["ipv6.opt.router_alert"]) != 1 {
				bad("no IPv6 Router Alert: %q", row["ipv6.opt.router_alert"])
			}
			want("icmpv6.type", "130")
			checksumsGood("icmpv6.checksum.status")
			want("icmpv6.mld.maximum_response_code", strconv.Itoa(int(q.MaxRespCode)))
			want("icmpv6.mld.flag.qrv", strconv.Itoa(int(q.QRV)))
			want("icmpv6.mld.qqi", strconv.Itoa(int(q.QQIC)))
			want("icmpv6.mld.multicast_address", "::")
		}
	case *MembershipUpdate:
		hexNum("amt.request_nonce", uint64(m.Nonce))
		hexNum("amt.response_mac", mac(m.MAC))
		types, groups, sources := records(fx.records)
		if fx.records[0].Group.Is4() {
			wantInner("ip.dst", "224.0.0.22")
			wantInner("ip.ttl", "1")
			want("igmp.type", "0x22")
			checksumsGood("igmp.checksum.status")
			want("igmp.record_type", types...)
			want("igmp.maddr", groups...)
			want("igmp.saddr", sources...)
		} else {
			wantInner("ipv6.dst", "ff02::16")
			wantInner("ipv6.hlim", "1")
			want("icmpv6.type", "143")
			checksumsGood("icmpv6.checksum.status")
			want("icmpv6.mldr.mar.record_type", types...)
			want("icmpv6.mldr.mar.multicast_address", groups...)
			want("icmpv6.mldr.mar.source_address", sources...)
		}
	case *MulticastData:
		d := fx.data
		f := "ip."
		if d.Src.Is6() {
			f = "ipv6."
		}
		wantInner(f+"src", d.Src.String())
		wantInner(f+"dst", d.Dst.String())
		if ports := row["udp.srcport"]; len(ports) != 2 || ports[1] != strconv.Itoa(int(d.SrcPort)) {
			bad("inner udp.srcport: %q, want %d", ports, d.SrcPort)
		}
		if ports := row["udp.dstport"]; len(ports) != 2 || ports[1] != strconv.Itoa(int(d.DstPort)) {
			bad("inner udp.dstport: %q, want %d", ports, d.DstPort)
		}
		want("data.data", hex.EncodeToString(d.Payload))
		if st := sums["udp.checksum.status"]; len(st) != 2 || st[1] != "1" {
			bad("inner UDP checksum status %q, want good", st)
		}
	case *Teardown:
		hexNum("amt.request_nonce", uint64(m.Nonce))
		hexNum("amt.response_mac", mac(m.MAC))
		gateway(m.Gateway)
	}
	return problems
}
