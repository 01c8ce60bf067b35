package amt

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"reflect"
	"testing"
)

// Each fuzz target checks that its decoder never panics and that whatever it
// accepts re-encodes to bytes that decode to the same value. Inputs are also
// tried with their checksums repaired, so the fuzzer gets past them.

func FuzzParse(f *testing.F) {
	for _, fx := range fixtures(f) {
		b, err := fx.msg.AppendTo(nil)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{0x03, 0x01, 0, 0, 1, 2, 3, 4, 0}) // VLC's 9-byte Request
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, o := range []Options{{}, {Strict: true}} {
			m, err := o.Parse(b)
			if err != nil {
				if m != nil {
					t.Fatalf("%+v: value %+v with error %v", o, m, err)
				}
				continue
			}
			if typ, err := TypeOf(b); err != nil || typ != m.Type() {
				t.Fatalf("TypeOf = %v, %v; Parse gave %v", typ, err, m.Type())
			}
			enc, err := m.AppendTo(nil)
			if err != nil {
				t.Fatalf("%+v: parsed %+v but cannot re-encode: %v", o, m, err)
			}
			m2, err := Options{Strict: true}.Parse(enc)
			if err != nil {
				t.Fatalf("%+v: re-encoding %x of %+v does not parse: %v", o, enc, m, err)
			}
			if !reflect.DeepEqual(m, m2) {
				t.Fatalf("%+v: %+v re-parsed as %+v", o, m, m2)
			}
			if d, ok := m.(*MulticastData); ok {
				inner, err := o.ParseDataHeader(b)
				if err != nil || !bytes.Equal(inner, d.Packet) {
					t.Fatalf("ParseDataHeader = %x, %v; Parse gave %x", inner, err, d.Packet)
				}
			}
		}
	})
}

func FuzzParseIGMP(f *testing.F) {
	for _, fx := range fixtures(f) {
		switch m := fx.msg.(type) {
		case *MembershipQuery:
			if m.Query[0]>>4 == 4 {
				f.Add(m.Query[24:])
			}
		case *MembershipUpdate:
			if m.Report[0]>>4 == 4 {
				f.Add(m.Report[24:])
			}
		}
	}
	f.Add([]byte{0x11, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		checkIGMP(t, b)
		if len(b) >= 4 {
			fixed := append([]byte(nil), b...)
			fixed[2], fixed[3] = 0, 0
			binary.BigEndian.PutUint16(fixed[2:], checksum(fixed))
			checkIGMP(t, fixed)
		}
	})
}

func checkIGMP(t *testing.T, b []byte) {
	if q, err := ParseIGMPQuery(b); err == nil {
		enc, err := AppendIGMPQuery(nil, q)
		if err != nil {
			t.Fatalf("query %+v: %v", q, err)
		}
		q2, err := ParseIGMPQuery(enc)
		if err != nil || !reflect.DeepEqual(q, q2) {
			t.Fatalf("query %+v re-parsed as %+v, %v", q, q2, err)
		}
	}
	if recs, err := ParseIGMPReport(b); err == nil {
		enc, err := AppendIGMPReport(nil, recs)
		if err != nil {
			t.Fatalf("report %+v: %v", recs, err)
		}
		recs2, err := ParseIGMPReport(enc)
		if err != nil || !reflect.DeepEqual(recs, recs2) {
			t.Fatalf("report %+v re-parsed as %+v, %v", recs, recs2, err)
		}
	}
	// The same body in an IPv4 envelope, and the input taken as a packet.
	pkt, err := AppendIPv4(nil, IPv4Header{TTL: 1, Protocol: ProtoIGMP, Src: fxRelay4, Dst: allSystems4, RouterAlert: true}, len(b))
	if err != nil {
		return
	}
	pkt = append(pkt, b...)
	for _, in := range [][]byte{pkt, b} {
		for _, o := range []Options{{}, {Strict: true}} {
			if p, err := o.ParseQueryPacket(in); err == nil {
				enc, err := AppendQueryPacket(nil, p.Src, p.Query)
				if err != nil {
					t.Fatalf("query packet %+v: %v", p, err)
				}
				p2, err := ParseQueryPacket(enc)
				if err != nil || !reflect.DeepEqual(p.Query, p2.Query) {
					t.Fatalf("query packet %+v re-parsed as %+v, %v", p, p2, err)
				}
			}
			if p, err := o.ParseReportPacket(in); err == nil {
				enc, err := AppendReportPacket(nil, p.Src, p.Records)
				if err != nil {
					t.Fatalf("report packet %+v: %v", p, err)
				}
				p2, err := Options{Strict: true}.ParseReportPacket(enc)
				if err != nil || !reflect.DeepEqual(p.Records, p2.Records) {
					t.Fatalf("report packet %+v re-parsed as %+v, %v", p, p2, err)
				}
			}
		}
	}
}

func FuzzParseMLD(f *testing.F) {
	for _, fx := range fixtures(f) {
		switch m := fx.msg.(type) {
		case *MembershipQuery:
			if m.Query[0]>>4 == 6 {
				f.Add(m.Query[48:])
			}
		case *MembershipUpdate:
			if m.Report[0]>>4 == 6 {
				f.Add(m.Report[48:])
			}
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		src, dst := fxLL6, allNodes6
		checkMLD(t, b, src, dst)
		if len(b) >= 4 {
			fixed := append([]byte(nil), b...)
			fixed[2], fixed[3] = 0, 0
			binary.BigEndian.PutUint16(fixed[2:], upperChecksum(src, dst, ProtoICMPv6, fixed))
			checkMLD(t, fixed, src, dst)
		}
	})
}

func checkMLD(t *testing.T, b []byte, src, dst netip.Addr) {
	if q, err := ParseMLDQuery(b, src, dst); err == nil {
		enc, err := AppendMLDQuery(nil, src, dst, q)
		if err != nil {
			t.Fatalf("query %+v: %v", q, err)
		}
		q2, err := ParseMLDQuery(enc, src, dst)
		if err != nil || !reflect.DeepEqual(q, q2) {
			t.Fatalf("query %+v re-parsed as %+v, %v", q, q2, err)
		}
	}
	if recs, err := ParseMLDReport(b, src, dst); err == nil {
		enc, err := AppendMLDReport(nil, src, dst, recs)
		if err != nil {
			t.Fatalf("report %+v: %v", recs, err)
		}
		recs2, err := ParseMLDReport(enc, src, dst)
		if err != nil || !reflect.DeepEqual(recs, recs2) {
			t.Fatalf("report %+v re-parsed as %+v, %v", recs, recs2, err)
		}
	}
	// The input taken as a whole IPv6 packet.
	for _, o := range []Options{{}, {Strict: true}} {
		if p, err := o.ParseQueryPacket(b); err == nil {
			if _, err := AppendQueryPacket(nil, p.Src, p.Query); err != nil {
				t.Fatalf("query packet %+v: %v", p, err)
			}
		}
		if p, err := o.ParseReportPacket(b); err == nil {
			if _, err := AppendReportPacket(nil, p.Src, p.Records); err != nil {
				t.Fatalf("report packet %+v: %v", p, err)
			}
		}
	}
}

func FuzzParseInner(f *testing.F) {
	for _, fx := range fixtures(f) {
		if m, ok := fx.msg.(*MulticastData); ok {
			f.Add(m.Packet)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		checkInner(t, b)
		checkInner(t, fixInner(append([]byte(nil), b...)))
	})
}

func checkInner(t *testing.T, b []byte) {
	d, err := ParseInnerUDP(b)
	if err != nil {
		return
	}
	enc, err := AppendInnerUDP(nil, d)
	if err != nil {
		t.Fatalf("datagram %+v: %v", d, err)
	}
	d2, err := ParseInnerUDP(enc)
	if d.TTL == 0 {
		d.TTL = DefaultTTL
	}
	if err != nil || !reflect.DeepEqual(d, d2) {
		t.Fatalf("datagram %+v re-parsed as %+v, %v", d, d2, err)
	}
	if data, err := (MulticastData{Packet: b}).AppendTo(nil); err != nil {
		t.Fatalf("a datagram ParseInnerUDP accepts is refused by MulticastData: %v", err)
	} else if inner, err := ParseDataHeader(data); err != nil || !bytes.Equal(inner, b) {
		t.Fatalf("ParseDataHeader = %x, %v", inner, err)
	}
}

// fixInner repairs the IPv4 header checksum and the UDP checksum of b where
// it can find them, so the fuzzer explores what lies past them.
func fixInner(b []byte) []byte {
	if len(b) == 0 {
		return b
	}
	var src, dst netip.Addr
	var udp []byte
	switch b[0] >> 4 {
	case 4:
		hlen := int(b[0]&0x0f) * 4
		if hlen < 20 || len(b) < hlen {
			return b
		}
		b[10], b[11] = 0, 0
		binary.BigEndian.PutUint16(b[10:], checksum(b[:hlen]))
		src, dst = netip.AddrFrom4([4]byte(b[12:16])), netip.AddrFrom4([4]byte(b[16:20]))
		udp = b[hlen:]
	case 6:
		if len(b) < 40 || b[6] != ProtoUDP {
			return b
		}
		src, dst = netip.AddrFrom16([16]byte(b[8:24])), netip.AddrFrom16([16]byte(b[24:40]))
		udp = b[40:]
	default:
		return b
	}
	if len(udp) >= 8 {
		udp[6], udp[7] = 0, 0
		binary.BigEndian.PutUint16(udp[6:], upperChecksum(src, dst, ProtoUDP, udp))
	}
	return b
}
