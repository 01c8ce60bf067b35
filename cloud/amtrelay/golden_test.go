package amtrelay

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/blockcast/beacon/shared/goldenhex"

	"github.com/blockcast/beacon/shared/amt"
)

var (
	goldenGW4    = netip.MustParseAddrPort("203.0.113.7:40000")
	goldenGW6    = netip.MustParseAddrPort("[2001:db8::7]:40001")
	goldenRelay4 = netip.MustParseAddr("198.51.100.1")
	goldenRelay6 = netip.MustParseAddr("2001:db8::1")
)

// goldenReplies are the relay's answers to fixed messages from fixed
// addresses, with a fixed secret: what the relay puts on the wire.
func goldenReplies(t *testing.T) []struct {
	name string
	b    []byte
} {
	t.Helper()
	type reply = struct {
		name string
		b    []byte
	}
	mk := func(o Options) *Relay {
		o.Listen, o.Logger, o.randSource = ":0", testLogger(t), fixedRand(1)
		r, err := New(o)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		if len(r.conns) != 2 {
			t.Skip("no IPv6")
		}
		return r
	}
	ask := func(r *Relay, m amt.Message, gw netip.AddrPort, relay netip.Addr) []byte {
		b, err := m.AppendTo(nil)
		if err != nil {
			t.Fatal(err)
		}
		c := r.conns[0]
		if gw.Addr().Is6() {
			c = r.conns[1]
		}
		out := r.handle(c, b, nil, gw, relay, 0, time.Now())
		if out == nil {
			t.Fatalf("no reply to %v", m.Type())
		}
		return out
	}
	plain := mk(Options{})
	withG := mk(Options{SendGatewayAddr: true})
	full := mk(Options{MaxGateways: 1})
	other := netip.MustParseAddrPort("203.0.113.8:40000")
	full.handle(full.conns[0], authUpdate(t, full, other, 1, amt.ChangeRecords([]amt.Channel{chA}, nil)), nil, other, goldenRelay4, 0, time.Now())
	if full.Stats().Gateways != 1 {
		t.Fatal("could not fill the relay")
	}
	req4 := &amt.Request{Nonce: 0x99aabbcc}
	req6 := &amt.Request{Nonce: 0x99aabbcd, IPv6: true}
	disc := &amt.RelayDiscovery{Nonce: 0x11223344}
	return []reply{
		{"advertisement_v4", ask(plain, disc, goldenGW4, goldenRelay4)},
		{"advertisement_v6", ask(plain, disc, goldenGW6, goldenRelay6)},
		{"query_v4", ask(plain, req4, goldenGW4, goldenRelay4)},
		{"query_v4_g", ask(withG, req4, goldenGW4, goldenRelay4)},
		{"query_v4_l", ask(full, req4, goldenGW4, goldenRelay4)},
		{"query_v6", ask(plain, req6, goldenGW6, goldenRelay6)},
		{"query_v6_g", ask(withG, req6, goldenGW6, goldenRelay6)},
		{"query_v6_igmp", ask(plain, req4, goldenGW6, goldenRelay6)},
	}
}

// TestGolden compares the relay's replies with testdata/<name>.hex.
// Regenerate with `go test -run TestGolden -update` and review the diff.
func TestGolden(t *testing.T) {
	for _, g := range goldenReplies(t) {
		t.Run(g.name, func(t *testing.T) {
			path := filepath.Join("testdata", g.name+".hex")
			if *goldenhex.Update {
				if err := os.WriteFile(path, goldenhex.Format(g.name, g.b), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			raw, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create)", err)
			}
			want, err := goldenhex.Parse(raw)
			if err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			if !bytes.Equal(g.b, want) {
				t.Errorf("reply differs from %s:\ngot\n%swant\n%s", path, hex.Dump(g.b), hex.Dump(want))
			}
			if _, err := (amt.Options{Strict: true}).Parse(want); err != nil {
				t.Errorf("strict parse: %v", err)
			}
		})
	}
}

// TestGoldenTshark has Wireshark's AMT, IGMP and MLD dissectors read the
// relay's replies from a pcap and checks that nothing is malformed or
// flagged and that the dissected AMT fields are the expected ones.
func TestGoldenTshark(t *testing.T) {
	tshark, err := exec.LookPath("tshark")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("tshark not installed")
		}
		t.Skip("tshark not installed")
	}
	replies := goldenReplies(t)
	// A control the checks must catch: a query cut short.
	replies = append(replies, struct {
		name string
		b    []byte
	}{"control_truncated_v4", replies[2].b[:20]})
	var pcap bytes.Buffer
	pcap.Write([]byte{0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 101, 0, 0, 0}) // LINKTYPE_RAW
	for i, g := range replies {
		to := goldenGW4
		from := goldenRelay4
		if strings.Contains(g.name, "v6") {
			to, from = goldenGW6, goldenRelay6
		}
		pkt := outerUDP(t, netip.AddrPortFrom(from, amt.Port), to, g.b)
		rec := make([]byte, 16)
		binary.LittleEndian.PutUint32(rec[0:], uint32(i))
		binary.LittleEndian.PutUint32(rec[8:], uint32(len(pkt)))
		binary.LittleEndian.PutUint32(rec[12:], uint32(len(pkt)))
		pcap.Write(rec)
		pcap.Write(pkt)
	}
	path := filepath.Join(t.TempDir(), "replies.pcap")
	if err := os.WriteFile(path, pcap.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, tshark, "-n", "-r", path, "-T", "fields", "-E", "separator=|",
		"-o", "ip.check_checksum:TRUE", "-o", "udp.check_checksum:TRUE",
		"-e", "amt.type", "-e", "amt.membership_query.g", "-e", "amt.membership_query.l",
		"-e", "igmp.qqic", "-e", "icmpv6.type", "-e", "_ws.malformed", "-e", "_ws.expert.severity").Output()
	if err != nil {
		t.Fatalf("tshark: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != len(replies) {
		t.Fatalf("tshark read %d packets, wrote %d:\n%s", len(lines), len(replies), out)
	}
	for i, g := range replies {
		f := strings.Split(lines[i], "|")
		if strings.HasPrefix(g.name, "control") {
			if f[5] == "" && f[6] == "" {
				t.Errorf("%s: tshark found nothing wrong: %q", g.name, lines[i])
			}
			continue
		}
		wantType := "4"
		if strings.HasPrefix(g.name, "advertisement") {
			wantType = "2"
		}
		if f[0] != wantType {
			t.Errorf("%s: amt.type %q, want %s", g.name, f[0], wantType)
		}
		if f[5] != "" || f[6] != "" {
			t.Errorf("%s: tshark flags it: malformed %q expert severity %q", g.name, f[5], f[6])
		}
		if wantType != "4" {
			continue
		}
		if g1 := strings.HasSuffix(g.name, "_g"); (f[1] == "1") != g1 {
			t.Errorf("%s: G flag %q", g.name, f[1])
		}
		if l := strings.HasSuffix(g.name, "_l"); (f[2] == "1") != l {
			t.Errorf("%s: L flag %q", g.name, f[2])
		}
		if mld := g.name == "query_v6" || g.name == "query_v6_g"; mld && f[4] != "130" || !mld && f[3] != "125" {
			t.Errorf("%s: encapsulated query not dissected as expected: %q", g.name, lines[i])
		}
	}
}

// outerUDP wraps payload in an IP/UDP packet with a correct checksum.
func outerUDP(t *testing.T, from, to netip.AddrPort, payload []byte) []byte {
	t.Helper()
	udp := binary.BigEndian.AppendUint16(nil, from.Port())
	udp = binary.BigEndian.AppendUint16(udp, to.Port())
	udp = binary.BigEndian.AppendUint16(udp, uint16(8+len(payload)))
	udp = append(udp, 0, 0)
	udp = append(udp, payload...)
	binary.BigEndian.PutUint16(udp[6:], udpChecksum(from.Addr(), to.Addr(), udp))
	var ip []byte
	var err error
	if from.Addr().Is4() {
		ip, err = amt.AppendIPv4(nil, amt.IPv4Header{DontFragment: true, TTL: 64, Protocol: amt.ProtoUDP, Src: from.Addr(), Dst: to.Addr()}, len(udp))
	} else {
		ip, err = amt.AppendIPv6(nil, amt.IPv6Header{NextHeader: amt.ProtoUDP, HopLimit: 64, Src: from.Addr(), Dst: to.Addr()}, len(udp))
	}
	if err != nil {
		t.Fatal(err)
	}
	return append(ip, udp...)
}
