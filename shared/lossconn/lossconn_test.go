package lossconn

import (
	"errors"
	"math"
	"net"
	"net/netip"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Config
		err  bool
	}{
		{"", Config{}, false},
		{"rx=0.05,seed=7", Config{Rx: 0.05, Seed: 7}, false},
		{" tx=1 , rx=0 ", Config{Tx: 1}, false},
		{"rx=1.5", Config{}, true},
		{"rx=-0.1", Config{}, true},
		{"rx=NaN", Config{}, true},
		{"rx", Config{}, true},
		{"rx=0.1,rx=0.2", Config{}, true},
		{"loss=0.1", Config{}, true},
		{"seed=-1", Config{}, true},
	} {
		got, err := Parse(tc.in)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("Parse(%q) = %+v, %v; want %+v, err %v", tc.in, got, err, tc.want, tc.err)
		}
		if err != nil && !errors.Is(err, ErrBadSpec) {
			t.Errorf("Parse(%q): %v is not ErrBadSpec", tc.in, err)
		}
	}
}

// The drop rate is near p, and a seed repeats its pattern.
func TestDropper(t *testing.T) {
	const n = 20000
	for _, p := range []float64{0.01, 0.05, 0.2, 1} {
		a, b := NewDropper(p, 7), NewDropper(p, 7)
		same := true
		for i := 0; i < n; i++ {
			if a.Drop() != b.Drop() {
				same = false
			}
		}
		seen, dropped := a.Counts()
		got := float64(dropped) / float64(seen)
		if seen != n || math.Abs(got-p) > 4*math.Sqrt(p*(1-p)/n)+1e-9 {
			t.Errorf("p=%g: dropped %d of %d (%.4f)", p, dropped, seen, got)
		}
		if !same {
			t.Errorf("p=%g: one seed gave two patterns", p)
		}
	}
	var d *Dropper
	if d.Drop() || NewDropper(0, 1) != nil {
		t.Error("a nil Dropper dropped")
	}
}

// A wrapped socket pair on loopback loses about the configured share of
// real datagrams, reads and writes alike.
func TestConnLoopback(t *testing.T) {
	for _, cfg := range []Config{{Rx: 0.2, Seed: 1}, {Tx: 0.2, Seed: 2}} {
		rc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		sc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		r, s := WrapConfig(rc, Config{Rx: cfg.Rx, Seed: cfg.Seed}), WrapConfig(sc, Config{Tx: cfg.Tx, Seed: cfg.Seed})
		dst := rc.LocalAddr().(*net.UDPAddr).AddrPort()
		const n = 2000
		go func() {
			for i := 0; i < n; i++ {
				s.WriteToUDPAddrPort([]byte{byte(i)}, dst)
				if i%100 == 0 {
					time.Sleep(time.Millisecond) // let the reader keep up
				}
			}
			s.WriteToUDPAddrPort([]byte("end"), netip.AddrPort{}) // unspecified: an error, not a drop
		}()
		got := 0
		r.SetReadDeadline(time.Now().Add(time.Second))
		buf := make([]byte, 16)
		for {
			if _, _, err := r.ReadFromUDPAddrPort(buf); err != nil {
				break
			}
			got++
		}
		lost := 1 - float64(got)/n
		if lost < 0.15 || lost > 0.25 {
			t.Errorf("%+v: lost %.3f of %d datagrams, want ~0.2", cfg, lost, n)
		}
		rc.Close()
		sc.Close()
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"rx=0.05,seed=7", "tx=1", "rx=0.2,tx=0.1,seed=18446744073709551615", "x", "rx=1e-3", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := Parse(s)
		if err != nil {
			return
		}
		if !(c.Rx >= 0 && c.Rx <= 1 && c.Tx >= 0 && c.Tx <= 1) {
			t.Fatalf("Parse(%q) = %+v: out of range", s, c)
		}
		c2, err := Parse(c.String())
		if err != nil || c2 != c {
			t.Fatalf("round trip of %+v: %+v, %v", c, c2, err)
		}
	})
}
