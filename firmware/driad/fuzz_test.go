package driad

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"
)

// FuzzParseRDATA: the RDATA decoder never panics, refuses with one of its
// errors, and what it accepts re-encodes to the same bytes.
func FuzzParseRDATA(f *testing.F) {
	for _, fx := range rdataFixtures {
		b, err := fx.r.AppendRDATA(nil)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{0x80, 0x03, 0xc0, 0x00})
	f.Add([]byte{0x0a, 0x7f})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseRDATA(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrUnknownType) {
				t.Fatalf("error %v wraps neither ErrMalformed nor ErrUnknownType", err)
			}
			if r != (Relay{}) {
				t.Fatalf("value %+v with error %v", r, err)
			}
			return
		}
		enc, err := r.AppendRDATA(nil)
		if err != nil {
			t.Fatalf("parsed %+v from %x but cannot encode it: %v", r, b, err)
		}
		if !bytes.Equal(enc, b) {
			t.Fatalf("%x parsed as %+v re-encodes as %x", b, r, enc)
		}
	})
}

// FuzzParseResponse: the message decoder never panics, and every name and
// AMTRELAY RDATA in an accepted message decodes or is refused cleanly, as
// Lookup and resolve would read them.
func FuzzParseResponse(f *testing.F) {
	q, _ := appendQuery(nil, 1, ReverseName(netip.MustParseAddr("198.51.100.12")), TypeAMTRELAY)
	q[2] |= 0x80
	f.Add(q)
	for _, fx := range rdataFixtures {
		m := append([]byte(nil), q[:len(q)-11]...)
		m[7], m[11] = 1, 0
		rd, _ := fx.r.AppendRDATA(nil)
		m = append(m, 0xc0, 12, 1, 4, 0, 1, 0, 0, 0, 9, 0, byte(len(rd)))
		f.Add(append(m, rd...))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		resp, err := parseResponse(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if _, err := appendName(nil, resp.qname); err != nil {
			t.Fatalf("question name %q does not re-encode: %v", resp.qname, err)
		}
		for _, a := range resp.answers {
			if a.rdOff < 0 || a.rdEnd > len(b) || a.rdOff > a.rdEnd {
				t.Fatalf("RDATA bounds [%d:%d] outside %d bytes", a.rdOff, a.rdEnd, len(b))
			}
			if _, err := appendName(nil, a.name); err != nil {
				t.Fatalf("owner %q does not re-encode: %v", a.name, err)
			}
			switch a.typ {
			case TypeAMTRELAY:
				r, err := parseRDATA(b, a.rdOff, a.rdEnd, true)
				if err == nil {
					if _, err := r.AppendRDATA(nil); err != nil {
						t.Fatalf("relay %+v does not re-encode: %v", r, err)
					}
				}
			case typeCNAM, typeDNAM:
				if name, _, err := readName(b[:a.rdEnd], a.rdOff, true); err == nil {
					dnameTarget(resp.qname, a.name, name)
				}
			}
		}
	})
}

// FuzzName: appendName and readName are inverses on everything appendName
// accepts, and readName's output always re-encodes.
func FuzzName(f *testing.F) {
	f.Add("amtrelays.example.com.")
	f.Add(`we\.ird\\name\000.example`)
	f.Add(ReverseName(netip.MustParseAddr("2001:db8::a")))
	f.Fuzz(func(t *testing.T, s string) {
		w, err := appendName(nil, s)
		if err != nil {
			return
		}
		name, off, err := readName(w, 0, false)
		if err != nil || off != len(w) {
			t.Fatalf("appendName(%q) = %x, which reads as %q, %d, %v", s, w, name, off, err)
		}
		w2, err := appendName(nil, name)
		if err != nil || !bytes.Equal(w, w2) {
			t.Fatalf("%q -> %x -> %q -> %x, %v", s, w, name, w2, err)
		}
		if !equalName(s, name) {
			t.Fatalf("equalName(%q, %q) = false", s, name)
		}
	})
}
