package main

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"
)

// TestAMTListener sends datagrams over a real loopback UDP socket to the
// listener: intact ones count once, a repeat is a duplicate, and one
// wrong byte anywhere (body, checksum, header) or a datagram of another
// channel is corrupt.
func TestAMTListener(t *testing.T) {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	a := &amtSoak{log: slog.New(slog.NewTextHandler(io.Discard, nil)), t0: time.Now(), sentAt: make([]uint32, 100)}
	ch := &amtChannel{idx: 1, conn: c, maxSeq: -1}
	a.chans = []*amtChannel{ch}
	done := make(chan struct{})
	go func() { a.listen(ch); close(done) }()
	out, err := net.DialUDP("udp4", nil, c.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	flip := func(i int) func([]byte) []byte {
		return func(b []byte) []byte {
			if i < 0 {
				i += len(b)
			}
			b[i] ^= 0x40
			return b
		}
	}
	sends := []struct {
		seq   uint64
		ch    int
		spoil func([]byte) []byte
	}{
		{seq: 0, ch: 1}, {seq: 1, ch: 1}, {seq: 1, ch: 1}, // a duplicate
		{seq: 2, ch: 1, spoil: flip(40)}, // body
		{seq: 3, ch: 1, spoil: flip(-1)}, // checksum
		{seq: 4, ch: 1, spoil: flip(0)},  // magic
		{seq: 5, ch: 0},                  // another channel's
		{seq: 500, ch: 1},                // never sent
		{seq: 6, ch: 1, spoil: func(b []byte) []byte { return b[:len(b)-1] }}, // short
		{seq: 7, ch: 1},
	}
	for _, s := range sends {
		b := amtPayload(nil, s.ch, s.seq)
		if s.spoil != nil {
			b = s.spoil(b)
		}
		if _, err := out.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		ch.mu.Lock()
		n := ch.received + int64(len(ch.dups)+len(ch.corrupt))
		ch.mu.Unlock()
		if n == int64(len(sends)) || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	c.Close()
	<-done
	if ch.received != 3 || len(ch.dups) != 1 || len(ch.corrupt) != 6 || ch.maxSeq != 7 {
		t.Fatalf("received %d, duplicates %v, corrupt %v, max seq %d; want 3, 1, 6, 7", ch.received, ch.dups, ch.corrupt, ch.maxSeq)
	}
}

// TestAMTAccount places lost datagrams: inside a window (a castd restart
// has the longer relay grace), in the warm-up, and outside, where a
// little loss is slack and more is an error.
func TestAMTAccount(t *testing.T) {
	start := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	ws := []window{{Name: faultCastd, Start: start.Add(100 * time.Second), End: start.Add(102 * time.Second)}}
	// one datagram every 100 ms for 300 s
	mk := func(lost func(sec float64) bool) *amtSoak {
		a := &amtSoak{t0: start}
		ch := &amtChannel{maxSeq: -1}
		for seq := 0; seq < 3000; seq++ {
			a.sentAt = append(a.sentAt, uint32(seq*100))
			if !lost(float64(seq) / 10) {
				w := seq / 64
				for len(ch.seen) <= w {
					ch.seen = append(ch.seen, 0)
				}
				ch.seen[w] |= 1 << (seq % 64)
				ch.received++
			}
		}
		a.chans = []*amtChannel{ch}
		return a
	}
	kinds := func(r amtResult) string {
		var ks []string
		for _, e := range r.Errors {
			ks = append(ks, e.Kind)
		}
		return strings.Join(ks, ",")
	}
	cases := []struct {
		name  string
		lost  func(float64) bool
		want  string
		fails bool
	}{
		{"none", func(float64) bool { return false }, "", false},
		{"in warm-up", func(s float64) bool { return s < 20 }, "", false},
		{"dark for 25 s after a castd restart", func(s float64) bool { return s >= 100 && s < 125 }, kindAMT, false},
		{"one datagram outside", func(s float64) bool { return s == 200 }, kindAMTSlack, false},
		{"dark for 3 s outside", func(s float64) bool { return s >= 200 && s < 203 }, kindAMT, true},
		{"dark 40 s after a castd restart", func(s float64) bool { return s >= 100 && s < 140 }, kindAMT + "," + kindAMT, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := mk(c.lost).account(start, 30*time.Second, 10*time.Second, 30*time.Second, ws)
			if got := kinds(r); got != c.want {
				t.Errorf("error kinds %q, want %q\n%s", got, c.want, fmt.Sprint(r.Errors))
			}
			v := judge(judgeInput{Start: start, Warmup: 30 * time.Second, Grace: 10 * time.Second, Errors: r.Errors, Windows: ws})
			failed := strings.Contains(strings.Join(v.Reasons, "\n"), "amt error outside")
			if failed != c.fails {
				t.Errorf("failed %v, want %v: %v", failed, c.fails, v.Reasons)
			}
		})
	}
}
