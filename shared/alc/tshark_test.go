package alc_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/blockcast/beacon/shared/alc"
	"github.com/blockcast/beacon/shared/fec"
	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/manifest"
)

// tsharkPort is the UDP port the capture file's datagrams go to; tshark is
// told to read it as ALC.
const tsharkPort = 4001

// requireTshark returns tshark's path or skips (fails with CI=true).
func requireTshark(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("tshark")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("tshark not installed: %v", err)
		}
		t.Skipf("tshark not installed: %v", err)
	}
	return path
}

var tsharkFields = []string{
	"alc.version", "rmt-lct.version",
	"rmt-lct.fsize.cci", "rmt-lct.fsize.tsi", "rmt-lct.fsize.toi",
	"rmt-lct.flags.close_session", "rmt-lct.flags.close_object",
	"rmt-lct.hlen", "rmt-lct.codepoint", "rmt-lct.cci",
	"rmt-lct.tsi", "rmt-lct.tsi64", "rmt-lct.toi", "rmt-lct.toi64",
	"rmt-lct.ext", "rmt-lct.hec.type",
	"rmt-fec.encoding_id", "rmt-fec.instance_id", "rmt-fec.sbn", "rmt-fec.sbl", "rmt-fec.esi",
	"rmt-fec.fti.transfer_length", "rmt-fec.fti.encoding_symbol_length",
	"rmt-fec.fti.max_source_block_length", "rmt-fec.fti.max_number_encoding_symbols",
	"alc.payload", "_ws.malformed", "_ws.expert.severity", "_ws.expert.message",
}

// tsharkWarn is PI_WARN (epan/proto.h): expert info at or above it fails.
const tsharkWarn = 0x00600000

// tsharkCheck writes pkts as multicast UDP datagrams (IPv4 and IPv6) into
// a pcap, dissects it with tshark's ALC dissector and returns, per
// datagram, each field's occurrences.
func tsharkCheck(t *testing.T, pkts [][]byte) (v4, v6 []map[string][]string) {
	t.Helper()
	tshark := requireTshark(t)
	var dgrams [][]byte
	for _, fam := range [][2]string{{"192.0.2.10", "232.10.11.12"}, {"2001:db8::10", "ff3e::8000:1"}} {
		for _, p := range pkts {
			d, err := udpDatagram(fam[0], fam[1], tsharkPort, p)
			if err != nil {
				t.Fatal(err)
			}
			dgrams = append(dgrams, d)
		}
	}
	pcap := filepath.Join(t.TempDir(), "alc.pcap")
	if err := writePcap(pcap, dgrams); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	args := []string{"-r", pcap, "-d", fmt.Sprintf("udp.port==%d,alc", tsharkPort),
		"-T", "fields", "-E", "header=n", "-E", "separator=/t", "-E", "occurrence=a", "-E", "aggregator=,"}
	for _, f := range tsharkFields {
		args = append(args, "-e", f)
	}
	out, err := exec.CommandContext(ctx, tshark, args...).Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("tshark: %v: %s", err, stderr)
	}
	var rows []map[string][]string
	for _, line := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
		cols := strings.Split(line, "\t")
		row := map[string][]string{}
		for i, f := range tsharkFields {
			if i >= len(cols) || cols[i] == "" {
				continue
			}
			if f == "_ws.expert.message" {
				row[f] = []string{cols[i]}
				continue
			}
			row[f] = strings.Split(cols[i], ",")
		}
		rows = append(rows, row)
	}
	if len(rows) != len(dgrams) {
		t.Fatalf("tshark dissected %d packets, wrote %d:\n%s", len(rows), len(dgrams), out)
	}
	// The whole verbose dissection must also carry no expert warning.
	verbose, err := exec.CommandContext(ctx, tshark, "-r", pcap, "-d", fmt.Sprintf("udp.port==%d,alc", tsharkPort), "-V", "-z", "expert,warn").CombinedOutput()
	if err != nil {
		t.Fatalf("tshark -V: %v\n%s", err, verbose)
	}
	if testing.Verbose() {
		t.Logf("tshark -V:\n%s", verbose)
	}
	return rows[:len(pkts)], rows[len(pkts):]
}

// checkDissection compares what tshark read with the packet that went in.
func checkDissection(row map[string][]string, p *alc.Packet) []string {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	want := func(field string, want ...string) {
		if got := row[field]; strings.Join(got, ",") != strings.Join(want, ",") {
			bad("%s = %q, want %q", field, got, want)
		}
	}
	num := func(field string, v uint64) { want(field, strconv.FormatUint(v, 10)) }
	flag := func(field string, v bool) {
		if v {
			want(field, "1")
		} else {
			want(field, "0")
		}
	}
	if m := row["_ws.malformed"]; len(m) > 0 {
		bad("malformed: %q", m)
	}
	for _, s := range row["_ws.expert.severity"] {
		if sev, err := strconv.ParseUint(s, 10, 32); err != nil || sev >= tsharkWarn {
			bad("expert info of severity %s: %q", s, row["_ws.expert.message"])
		}
	}
	num("alc.version", alc.Version)
	num("rmt-lct.version", alc.Version)
	num("rmt-lct.fsize.cci", uint64(max(len(p.CCI), 4)))
	tsiLen, toiLen := 4, 4
	switch {
	case p.TSI >= 1<<32:
		tsiLen, toiLen = 6, 6
	case p.TOI >= 1<<32:
		toiLen = 8
	}
	num("rmt-lct.fsize.tsi", uint64(tsiLen))
	num("rmt-lct.fsize.toi", uint64(toiLen))
	flag("rmt-lct.flags.close_session", p.CloseSession)
	flag("rmt-lct.flags.close_object", p.CloseObject)
	num("rmt-lct.hlen", uint64(p.Len()-alc.PayloadIDLen-len(p.Payload)))
	num("rmt-lct.codepoint", alc.EncodingID)
	want("rmt-lct.cci", hex.EncodeToString(append(make([]byte, 0, 4), p.CCI...)))
	// Wireshark files a TSI/TOI of up to 32 bits under the short field,
	// longer ones under the 64-bit field.
	if tsiLen <= 4 {
		num("rmt-lct.tsi", p.TSI)
	} else {
		num("rmt-lct.tsi64", p.TSI)
	}
	if toiLen <= 4 {
		num("rmt-lct.toi", p.TOI)
	} else {
		num("rmt-lct.toi64", p.TOI)
	}
	var hets []string
	if p.FTI != nil {
		hets = append(hets, strconv.Itoa(alc.ExtFTI))
	}
	for _, e := range p.Exts {
		hets = append(hets, strconv.Itoa(int(e.Type)))
	}
	want("rmt-lct.hec.type", hets...)
	num("rmt-fec.encoding_id", alc.EncodingID)
	num("rmt-fec.sbn", uint64(p.SBN))
	num("rmt-fec.sbl", uint64(p.SBL))
	want("rmt-fec.esi", fmt.Sprintf("0x%08x", p.ESI))
	if f := p.FTI; f != nil {
		// Shown twice: in EXT_FTI and in the FEC tree.
		id := strconv.Itoa(int(f.InstanceID))
		want("rmt-fec.instance_id", id, id)
		num("rmt-fec.fti.transfer_length", f.TransferLength)
		num("rmt-fec.fti.encoding_symbol_length", uint64(f.SymbolLen))
		num("rmt-fec.fti.max_source_block_length", uint64(f.MaxBlockLen))
		num("rmt-fec.fti.max_number_encoding_symbols", uint64(f.MaxSymbols))
	}
	if len(p.Payload) > 0 {
		want("alc.payload", hex.EncodeToString(p.Payload))
	} else {
		want("alc.payload")
	}
	if p.FTI == nil {
		want("rmt-fec.instance_id")
	}
	return problems
}

// TestTshark checks that Wireshark's alc, rmt-lct and rmt-fec dissectors
// read every field of every packet shape exactly as encoded, with nothing
// malformed and no expert warning, over IPv4 and IPv6. Two control packets
// (truncated, wrong version) must be flagged, so the check is known to bite.
func TestTshark(t *testing.T) {
	var pkts [][]byte
	var want []*alc.Packet
	for _, fx := range append(fixtures(), transportFixtures(t)...) {
		b, err := fx.p.AppendTo(nil)
		if err != nil {
			t.Fatal(err)
		}
		p := fx.p
		pkts, want = append(pkts, b), append(want, &p)
	}
	// Controls: a packet cut inside its FEC Payload ID, and one of LCT
	// version 2.
	full, _ := fixtures()[0].p.AppendTo(nil)
	cut := append([]byte(nil), full[:36]...)
	v2 := append([]byte(nil), full...)
	v2[0] = 0x20 | v2[0]&0x0f
	controls := [][]byte{cut, v2}
	pkts = append(pkts, controls...)
	v4, v6 := tsharkCheck(t, pkts)
	for fam, rows := range map[string][]map[string][]string{"IPv4": v4, "IPv6": v6} {
		for i, p := range want {
			for _, pr := range checkDissection(rows[i], p) {
				t.Errorf("%s packet %d (TOI %#x): %s", fam, i, p.TOI, pr)
			}
		}
		for i := range controls {
			row := rows[len(want)+i]
			if len(row["_ws.malformed"]) == 0 && len(row["_ws.expert.severity"]) == 0 {
				t.Errorf("%s: control packet %d not flagged by tshark: %v", fam, i, row)
			}
		}
	}
}

// transportFixtures are the packets the object transport sends besides
// data: a manifest (TOI 0) and hash parts (TOI | HashListBit), built by
// the manifest package, with their data packets.
func transportFixtures(t *testing.T) []fixture {
	key, err := identity.FromSeed(bytes.Repeat([]byte{7}, identity.SeedSize))
	if err != nil {
		t.Fatal(err)
	}
	ch, err := manifest.ChannelOf("192.0.2.10", "232.10.11.12", tsharkPort)
	if err != nil {
		t.Fatal(err)
	}
	obj := symbol(300*alc.MaxSymbolSize+10, 3)
	now := time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC)
	m, lists, err := manifest.Build(bytes.NewReader(obj), int64(len(obj)), manifest.Params{
		URL: "/fw/beacon.ipk", ContentType: "application/octet-stream", ETag: `"v1"`,
		Sequence: 1, Issued: now, Expires: now.Add(time.Hour), TSI: 77, TOI: 5, Channel: ch,
	}, key, fec.NewCodec())
	if err != nil {
		t.Fatal(err)
	}
	mp, err := m.Packet()
	if err != nil {
		t.Fatal(err)
	}
	fxs := []fixture{{"manifest", mp}}
	for _, hl := range lists {
		for _, h := range hl.Parts() {
			p, err := h.Packet(m)
			if err != nil {
				t.Fatal(err)
			}
			fxs = append(fxs, fixture{fmt.Sprintf("hash part %d/%d", h.SBN, h.Chunk), p})
		}
	}
	for i := range fxs {
		fxs[i].p.CCI = zeroCCI
	}
	return fxs
}
