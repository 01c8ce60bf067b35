package objrecv

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

// FuzzFeed: arbitrary bytes as packets, interleaved with an honest
// transfer, never panic, are each kept, rejected or counted as duplicates,
// and never change the object written.
func FuzzFeed(f *testing.F) {
	obj := object(2*small.k*small.e+70, 12)
	s := newSender(f, obj, small, 9, 5, testKey(f, 1))
	honest := s.pass(0, 2, 0, 1)
	frame := func(pkts ...[]byte) []byte {
		var b []byte
		for _, p := range pkts {
			b = binary.BigEndian.AppendUint16(b, uint16(len(p)))
			b = append(b, p...)
		}
		return b
	}
	f.Add([]byte{})
	f.Add(frame(honest[:6]...))
	f.Add(frame(s.hashPart(1, 0), s.data(1, 3), s.data(0, 0)))
	flipped := bytes.Clone(s.data(0, 5))
	flipped[len(flipped)-1] ^= 1
	f.Add(frame(flipped, s.data(0, 5)))
	hp := bytes.Clone(s.hashPart(0, 0))
	hp[len(hp)-20] ^= 4
	f.Add(frame(hp))
	f.Fuzz(func(t *testing.T, in []byte) {
		var fuzzed [][]byte
		for len(in) >= 2 {
			n := int(binary.BigEndian.Uint16(in))
			in = in[2:]
			n = min(n, len(in))
			fuzzed = append(fuzzed, in[:n])
			in = in[n:]
		}
		var out bytes.Buffer
		a, err := newAssembler(s.m, &out, Config{MaxBlocks: 2, MaxHeld: 8})
		if err != nil {
			t.Fatal(err)
		}
		feed := func(p []byte) {
			err := a.Feed(p, "fuzz")
			if err != nil && !errors.Is(err, ErrRejected) && !errors.Is(err, ErrDuplicate) {
				t.Fatalf("feed: %v", err)
			}
		}
		for i, p := range fuzzed {
			feed(p)
			if i < len(honest) {
				feed(honest[i])
			}
		}
		for i := len(fuzzed); i < len(honest); i++ {
			feed(honest[i])
		}
		// Whatever the fuzzed packets did, a second honest pass (a
		// carousel) finishes the object, and the bytes are the object's.
		for _, p := range honest {
			feed(p)
		}
		if !bytes.Equal(out.Bytes(), obj[:out.Len()]) {
			t.Fatal("wrong bytes written")
		}
		if !a.Done() {
			t.Fatalf("not done after two honest passes: %v", a.Missing(10))
		}
		a.Missing(100)
		a.Fallback()
	})
}
