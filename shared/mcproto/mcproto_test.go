package mcproto

import (
	"bytes"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestMessagesRoundTrip(t *testing.T) {
	o := Object{TSI: 0x01020304, TOI: 7}
	nack := &Nack{Object: o, Ranges: []Range{
		{SBN: 3, Kind: Symbols, First: 10, Count: 5, Need: 5},
		{SBN: 4, Kind: HashChunk, First: 0, Count: 1, Need: 200},
	}}
	nb, err := nack.AppendTo(nil)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		enc  []byte
		want any
	}{
		{"join", (&Join{Object: o, EarlyBlocks: 2}).AppendTo(nil), &Join{Object: o, EarlyBlocks: 2}},
		{"nack", nb, nack},
		{"leave", (&Leave{Object: o, Reason: LeaveFallback}).AppendTo(nil), &Leave{Object: o, Reason: LeaveFallback}},
		{"status", (&Status{Object: o, Code: StatusLimited, RetryAfterMs: 250}).AppendTo(nil), &Status{Object: o, Code: StatusLimited, RetryAfterMs: 250}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if IsALC(tc.enc) {
				t.Fatal("a control message looks like an ALC packet")
			}
			got, err := Decode(tc.enc)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
			golden := filepath.Join("testdata", tc.name+".hex")
			if os.Getenv("UPDATE_GOLDEN") != "" {
				os.WriteFile(golden, []byte(hex.EncodeToString(tc.enc)+"\n"), 0o644)
			}
			g, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if strings.TrimSpace(string(g)) != hex.EncodeToString(tc.enc) {
				t.Fatalf("encoding %x differs from %s", tc.enc, golden)
			}
		})
	}
}

func TestDecodeRefuses(t *testing.T) {
	o := Object{TSI: 1, TOI: 2}
	nb, _ := (&Nack{Object: o, Ranges: []Range{{SBN: 1, Count: 1}}}).AppendTo(nil)
	tests := map[string][]byte{
		"empty":          nil,
		"short":          {0xC1, 0, 0},
		"alc":            append([]byte{0x10}, make([]byte, 20)...),
		"unknown type":   append([]byte{0xC9}, make([]byte, 10)...),
		"join trailing":  append((&Join{Object: o}).AppendTo(nil), 0),
		"nack count":     append(nb, 0),
		"nack kind":      func() []byte { b := bytes.Clone(nb); b[15] = 2; return b }(),
		"nack empty run": func() []byte { b := bytes.Clone(nb); b[18], b[19] = 0, 0; return b }(),
		"leave reason":   append(appendHeader(nil, TypeLeave, o), 9),
		"status code":    append(appendHeader(nil, TypeStatus, o), 0, 0, 0, 0, 0),
	}
	for name, b := range tests {
		if _, err := Decode(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err = %v, want ErrMalformed", name, err)
		}
	}
}

func TestMaxRanges(t *testing.T) {
	n := MaxRanges(1200)
	rs := make([]Range, n)
	for i := range rs {
		rs[i] = Range{SBN: uint32(i), Count: 1}
	}
	b, err := (&Nack{Ranges: rs}).AppendTo(nil)
	if err != nil || len(b) > 1200 {
		t.Fatalf("%d ranges: %d bytes, %v", n, len(b), err)
	}
	if MaxRanges(5) != 0 {
		t.Fatal("MaxRanges of a tiny payload")
	}
}

func TestOffer(t *testing.T) {
	o := &Offer{Version: OfferVersion, Manifest: []byte{0x10, 1, 2}, AMTRelay: "192.0.2.1:2268", Unicast: "[2001:db8::1]:4433"}
	b, err := EncodeOffer(o)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeOffer(bytes.NewReader(b))
	if err != nil || !reflect.DeepEqual(got, o) {
		t.Fatalf("got %+v, %v", got, err)
	}
	bad := map[string]string{
		"version":  `{"version":2,"manifest":"EAEC","unicast":"127.0.0.1:1"}`,
		"unknown":  `{"version":1,"manifest":"EAEC","unicast":"127.0.0.1:1","x":1}`,
		"trailing": `{"version":1,"manifest":"EAEC","unicast":"127.0.0.1:1"}{}`,
		"no man":   `{"version":1,"unicast":"127.0.0.1:1"}`,
		"relay":    `{"version":1,"manifest":"EAEC","amt_relay":"example.com:1","unicast":"127.0.0.1:1"}`,
		"unicast":  `{"version":1,"manifest":"EAEC","unicast":"127.0.0.1"}`,
		"huge":     `{"version":1,"manifest":"` + strings.Repeat("A", MaxOffer) + `","unicast":"127.0.0.1:1"}`,
	}
	for name, s := range bad {
		if _, err := DecodeOffer(strings.NewReader(s)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err = %v, want ErrMalformed", name, err)
		}
	}
}

func FuzzDecode(f *testing.F) {
	o := Object{TSI: 1, TOI: 2}
	nb, _ := (&Nack{Object: o, Ranges: []Range{{SBN: 1, Count: 3, Need: 2}}}).AppendTo(nil)
	f.Add(nb)
	f.Add((&Join{Object: o, EarlyBlocks: 1}).AppendTo(nil))
	f.Add((&Leave{Object: o}).AppendTo(nil))
	f.Add((&Status{Object: o, Code: StatusEnded}).AppendTo(nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Decode(b)
		if err != nil {
			return
		}
		var again []byte
		switch v := m.(type) {
		case *Join:
			again = v.AppendTo(nil)
		case *Nack:
			if again, err = v.AppendTo(nil); err != nil {
				t.Fatalf("decoded nack does not encode: %v", err)
			}
		case *Leave:
			again = v.AppendTo(nil)
		case *Status:
			again = v.AppendTo(nil)
		default:
			t.Fatalf("Decode returned %T", m)
		}
		if !bytes.Equal(again, b) {
			t.Fatalf("re-encoding %x gives %x", b, again)
		}
	})
}

func FuzzDecodeOffer(f *testing.F) {
	f.Add([]byte(`{"version":1,"manifest":"EAEC","amt_relay":"127.0.0.1:2268","unicast":"127.0.0.1:4433"}`))
	f.Add([]byte(`{"version":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		o, err := DecodeOffer(bytes.NewReader(b))
		if err != nil {
			return
		}
		if _, err := EncodeOffer(o); err != nil {
			t.Fatalf("decoded offer does not encode: %v", err)
		}
	})
}
