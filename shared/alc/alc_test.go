package alc_test

import (
	"bytes"
	"encoding/hex"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/blockcast/beacon/shared/alc"
	"github.com/blockcast/beacon/shared/amt"
	"github.com/blockcast/beacon/shared/goldenhex"
)

type fixture struct {
	name string
	p    alc.Packet
}

func symbol(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7)
	}
	return b
}

var zeroCCI = []byte{0, 0, 0, 0}

// fixtures are the packet shapes the transport sends, plus the header
// variants a receiver must read.
func fixtures() []fixture {
	fti := &alc.FTI{TransferLength: 20 << 20, InstanceID: 0xBC, SymbolLen: alc.MaxSymbolSize, MaxBlockLen: 200, MaxSymbols: 256}
	return []fixture{
		{"source_with_fti", alc.Packet{Codepoint: 129, CCI: zeroCCI, TSI: 0x01020304, TOI: 42, FTI: fti,
			SBN: 3, SBL: 200, ESI: 5, Payload: symbol(alc.MaxSymbolSize, 1)}},
		{"parity", alc.Packet{Codepoint: 129, CCI: zeroCCI, TSI: 0x01020304, TOI: 42,
			SBN: 77, SBL: 196, ESI: 230, Payload: symbol(64, 2)}},
		{"last_short_symbol_close_object", alc.Packet{Codepoint: 129, CCI: zeroCCI, TSI: 9, TOI: 42, CloseObject: true,
			SBN: 0, SBL: 1, ESI: 0, Payload: []byte("last")}},
		{"close_session_no_payload", alc.Packet{Codepoint: 129, CCI: zeroCCI, TSI: 9, TOI: 0, CloseSession: true}},
		{"tsi48_toi48", alc.Packet{Codepoint: 129, CCI: zeroCCI, TSI: 0xA1A2A3A4A5A6, TOI: 0xB1B2B3B4B5B6,
			SBN: 1, SBL: 10, ESI: 2, Payload: []byte{0xee}}},
		{"toi64", alc.Packet{Codepoint: 129, CCI: zeroCCI, TSI: 1, TOI: 0x0102030405060708,
			SBN: 0xFFFFFFFF, SBL: 255, ESI: 0xFFFF, Payload: []byte{1, 2}}},
		{"cci128_extensions", alc.Packet{Codepoint: 129, PSI: 2, CCI: bytes.Repeat([]byte{0xcc}, 16), TSI: 5, TOI: 6,
			Exts: []alc.Ext{{Type: alc.ExtNOP, Data: []byte{0, 0}}, {Type: alc.ExtTime, Data: []byte{0, 0, 0x12, 0x34, 0x56, 0x78}}},
			SBN:  2, SBL: 3, ESI: 4, Payload: []byte("x")}},
	}
}

func TestGolden(t *testing.T) {
	for _, fx := range fixtures() {
		t.Run(fx.name, func(t *testing.T) {
			got, err := fx.p.AppendTo(nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != fx.p.Len() {
				t.Fatalf("Len %d, encoded %d", fx.p.Len(), len(got))
			}
			path := filepath.Join("testdata", fx.name+".hex")
			if *goldenhex.Update {
				if err := os.WriteFile(path, goldenhex.Format("ALC "+fx.name, got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			raw, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create)", err)
			}
			want, err := goldenhex.Parse(raw)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("encoding differs from %s:\ngot\n%swant\n%s", path, hex.Dump(got), hex.Dump(want))
			}
			p, err := alc.Decode(want)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(*p, fx.p) {
				t.Fatalf("decode golden = %+v, want %+v", *p, fx.p)
			}
		})
	}
}

// TestHandCheck decodes a vector written from RFC 5651 §5.1's diagram, not
// from the encoder, so encoder and goldens cannot drift together.
func TestHandCheck(t *testing.T) {
	b, _ := hex.DecodeString(strings.Join([]string{
		"10a0",                             // V=1, C=0, PSI=0, S=1, O=01, H=0, Res=0, A=0, B=0
		"04",                               // HDR_LEN: 4 words
		"81",                               // Codepoint 129
		"00000000", "00000007", "0000002a", // CCI, TSI 7, TOI 42
		"00000003", "00c4", "0005", // SBN 3, SBL 196, ESI 5
		"6869",
	}, ""))
	want := alc.Packet{Codepoint: 129, CCI: zeroCCI, TSI: 7, TOI: 42, SBN: 3, SBL: 196, ESI: 5, Payload: []byte("hi")}
	p, err := alc.Decode(b)
	if err != nil || !reflect.DeepEqual(*p, want) {
		t.Fatalf("Decode = %+v, %v", p, err)
	}
	enc, err := want.AppendTo(nil)
	if err != nil || !bytes.Equal(enc, b) {
		t.Fatalf("AppendTo = %x, %v; want %x", enc, err, b)
	}
	// EXT_FTI per RFC 5445 §5.2.2 in an ALC header (RFC 5775 §4.2).
	fti, _ := hex.DecodeString("10a0" + "08" + "81" + "00000000" + "00000001" + "00000002" +
		"4004" + "000000100000" + "00bc" + "0540" + "00c8" + "0100" + "0000000000000000")
	p, err = alc.Decode(fti)
	if err != nil {
		t.Fatal(err)
	}
	if *p.FTI != (alc.FTI{TransferLength: 1 << 20, InstanceID: 0xBC, SymbolLen: 1344, MaxBlockLen: 200, MaxSymbols: 256}) {
		t.Fatalf("FTI = %+v", *p.FTI)
	}
}

func TestSizes(t *testing.T) {
	if alc.MaxPacketSize != 1402 || alc.MaxSymbolSize != 1344 || alc.MaxDataHeader != 40 {
		t.Fatalf("MaxPacketSize %d, MaxSymbolSize %d, MaxDataHeader %d", alc.MaxPacketSize, alc.MaxSymbolSize, alc.MaxDataHeader)
	}
	// The largest data packet, AMT-encapsulated over IPv6 and IPv4, fits
	// 1500 bytes; the outer IP+UDP is 40+8 or 20+8.
	big := fixtures()[0].p
	b, err := big.AppendTo(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		src, grp string
		outer    int
	}{{"2001:db8::1", "ff3e::8000:1", 48}, {"192.0.2.1", "232.1.1.1", 28}} {
		inner, err := amt.AppendInnerUDP(nil, amt.Datagram{Src: netip.MustParseAddr(c.src), Dst: netip.MustParseAddr(c.grp), SrcPort: 1, DstPort: 2, Payload: b})
		if err != nil {
			t.Fatal(err)
		}
		if n := c.outer + len(amt.AppendData(nil, inner)); n > 1500 {
			t.Errorf("%s: AMT-encapsulated packet is %d bytes", c.src, n)
		}
	}
	big.Payload = make([]byte, alc.MaxPacketSize-40+1)
	if _, err := big.AppendTo(nil); !errors.Is(err, alc.ErrTooLarge) {
		t.Fatalf("oversized packet: %v", err)
	}
}

func TestEncodeRefuses(t *testing.T) {
	base := func() alc.Packet { return alc.Packet{TSI: 1, TOI: 2, Payload: []byte("x")} }
	for _, c := range []struct {
		name string
		mod  func(*alc.Packet)
		want error
	}{
		{"PSI 3 bits", func(p *alc.Packet) { p.PSI = 4 }, alc.ErrMalformed},
		{"codepoint", func(p *alc.Packet) { p.Codepoint = 5 }, alc.ErrUnsupported},
		{"CCI 5 bytes", func(p *alc.Packet) { p.CCI = make([]byte, 5) }, alc.ErrMalformed},
		{"CCI 20 bytes", func(p *alc.Packet) { p.CCI = make([]byte, 20) }, alc.ErrMalformed},
		{"TSI and TOI too wide", func(p *alc.Packet) { p.TSI, p.TOI = 1<<40, 1<<50 }, alc.ErrTooLarge},
		{"TSI above 48 bits", func(p *alc.Packet) { p.TSI = 1 << 48 }, alc.ErrTooLarge},
		{"transfer length", func(p *alc.Packet) { p.FTI = &alc.FTI{TransferLength: 1 << 48} }, alc.ErrTooLarge},
		{"EXT_FTI in Exts", func(p *alc.Packet) { p.Exts = []alc.Ext{{Type: alc.ExtFTI, Data: make([]byte, 14)}} }, alc.ErrMalformed},
		{"fixed ext length", func(p *alc.Packet) { p.Exts = []alc.Ext{{Type: 200, Data: make([]byte, 2)}} }, alc.ErrMalformed},
		{"variable ext length", func(p *alc.Packet) { p.Exts = []alc.Ext{{Type: 1, Data: make([]byte, 3)}} }, alc.ErrMalformed},
		{"header over 1020 bytes", func(p *alc.Packet) { p.Exts = []alc.Ext{{Type: 1, Data: make([]byte, 1018)}} }, alc.ErrTooLarge},
		{"payload", func(p *alc.Packet) { p.Payload = make([]byte, 1500) }, alc.ErrTooLarge},
	} {
		p := base()
		c.mod(&p)
		if _, err := p.AppendTo(nil); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
}

func TestDecodeRefuses(t *testing.T) {
	good, _ := fixtures()[0].p.AppendTo(nil)
	mod := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	for _, c := range []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, alc.ErrMalformed},
		{"3 bytes", good[:3], alc.ErrMalformed},
		{"version 2", mod(func(b []byte) []byte { b[0] = 0x20 | b[0]&0x0f; return b }), alc.ErrMalformed},
		{"version 0", mod(func(b []byte) []byte { b[0] &= 0x0f; return b }), alc.ErrMalformed},
		{"HDR_LEN below fields", mod(func(b []byte) []byte { b[2] = 3; return b }), alc.ErrMalformed},
		{"HDR_LEN past end", mod(func(b []byte) []byte { return b[:20] }), alc.ErrMalformed},
		{"codepoint 5", mod(func(b []byte) []byte { b[3] = 5; return b }), alc.ErrUnsupported},
		{"TOI 112 bits", mod(func(b []byte) []byte { b[1] |= 0x70; b[2] = 40; return b }), alc.ErrUnsupported},
		{"HEL 0", mod(func(b []byte) []byte { b[17] = 0; return b }), alc.ErrMalformed},
		{"extension overruns", mod(func(b []byte) []byte { b[17] = 5; return b }), alc.ErrMalformed},
		{"EXT_FTI wrong size", mod(func(b []byte) []byte { b[17] = 2; b[24] = 0; b[25] = 2; return b }), alc.ErrMalformed},
		{"two EXT_FTI", mod(func(b []byte) []byte {
			return append(append(append(b[:2:2], 12, 129), b[4:32]...), append(append([]byte(nil), b[16:32]...), b[32:]...)...)
		}), alc.ErrMalformed},
		{"no FEC Payload ID", good[:32+7], alc.ErrMalformed},
	} {
		p, err := alc.Decode(c.b)
		if !errors.Is(err, c.want) || p != nil {
			t.Errorf("%s: %v, %+v; want %v", c.name, err, p, c.want)
		}
	}
	// A reused Packet is zeroed on error.
	var p alc.Packet
	if err := p.Decode(good); err != nil {
		t.Fatal(err)
	}
	if err := p.Decode(good[:3]); err == nil || !reflect.DeepEqual(p, alc.Packet{}) {
		t.Fatalf("after a failed Decode: %+v, %v", p, err)
	}
}

func FuzzDecode(f *testing.F) {
	for _, fx := range fixtures() {
		b, err := fx.p.AppendTo(nil)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{0x10, 0xa0, 0x04, 0x81})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := alc.Decode(b)
		if err != nil {
			if p != nil || !(errors.Is(err, alc.ErrMalformed) || errors.Is(err, alc.ErrUnsupported)) {
				t.Fatalf("error %v with %+v", err, p)
			}
			return
		}
		enc, err := p.AppendTo(nil)
		if err != nil {
			// Liberal in what it accepts, strict in what it sends: a packet
			// above MaxPacketSize, or one whose header used a form more
			// compact than the one the encoder writes (a 16-bit TSI with a
			// 48-bit TOI), may decode and still be too large to send.
			if errors.Is(err, alc.ErrTooLarge) && (len(b) > alc.MaxPacketSize || p.Len() > alc.MaxPacketSize) {
				return
			}
			t.Fatalf("decoded %+v but cannot re-encode: %v", p, err)
		}
		p2, err := alc.Decode(enc)
		if err != nil {
			t.Fatalf("re-encoding %x does not decode: %v", enc, err)
		}
		if !reflect.DeepEqual(p, p2) {
			t.Fatalf("%+v re-decoded as %+v", p, p2)
		}
	})
}
