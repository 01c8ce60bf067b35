package manifest

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
	"time"
)

// FuzzDecode: Decode never panics, errors are ErrMalformed, and whatever
// it accepts re-encodes to the same bytes (the encoding is canonical).
func FuzzDecode(f *testing.F) {
	for i, size := range []int{0, 1, 70000} {
		p := testParams(f)
		if i == 1 {
			p.Channel, _ = ChannelOf("192.0.2.1", "232.1.2.3", 9)
			p.LastModified = time.Time{}
			p.ETag = ""
		}
		m, _ := build(f, object(size, 1), p, testKey(f, 1))
		b, err := m.MarshalBinary()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Decode(b)
		if err != nil {
			if m != nil || !errors.Is(err, ErrMalformed) {
				t.Fatalf("%v with %+v", err, m)
			}
			return
		}
		enc, err := m.MarshalBinary()
		if err != nil || !bytes.Equal(enc, b) {
			t.Fatalf("accepted %x, re-encodes to %x, %v", b, enc, err)
		}
		_ = m.Verify(testKey(t, 1).Public())
		_, _ = Overhead(m)
	})
}

// FuzzDecodeHashPart: DecodeHashPart never panics, and what it accepts
// re-encodes identically; Verify against a real manifest never panics
// and never accepts a part that is not one of the real ones.
func FuzzDecodeHashPart(f *testing.F) {
	m, lists := build(f, object(3*200*1344+7, 2), testParams(f), testKey(f, 1))
	real := map[string]bool{}
	for _, hl := range lists {
		for _, h := range hl.Parts() {
			b, err := h.MarshalBinary()
			if err != nil {
				f.Fatal(err)
			}
			real[string(b)] = true
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := DecodeHashPart(b)
		if err != nil {
			if h != nil || !errors.Is(err, ErrMalformed) {
				t.Fatalf("%v with %+v", err, h)
			}
			return
		}
		enc, err := h.MarshalBinary()
		if err != nil || !bytes.Equal(enc, b) {
			t.Fatalf("accepted %x, re-encodes to %x, %v", b, enc, err)
		}
		if err := h.Verify(m); err == nil && !real[string(b)] {
			t.Fatalf("forged hash part verified: %+v", h)
		}
		h2, _ := DecodeHashPart(enc)
		if !reflect.DeepEqual(h, h2) {
			t.Fatal("not stable")
		}
	})
}
