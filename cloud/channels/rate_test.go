package channels

import (
	"errors"
	"math"
	"testing"
)

func TestParseRate(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want float64
	}{
		{"0", 0},
		{"1250000", 1.25e6},
		{"1250000B/s", 1.25e6},
		{"10Mbit", 1.25e6},
		{"10 Mbit/s", 1.25e6},
		{"10Mbps", 1.25e6},
		{"1.5Gbit", 187.5e6},
		{"100kbps", 12.5e3},
		{"8bit", 1},
		{"2MB", 2e6},
		{"2 MB/s", 2e6},
		{" 1GB ", 1e9},
		{"1000GB", 1e12},
	} {
		got, err := ParseRate(tc.in)
		if err != nil || math.Abs(got-tc.want) > 1e-9*tc.want {
			t.Errorf("ParseRate(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	for _, in := range []string{"", " ", "Mbit", "-5", "1e9", "10Mb", "10mbit", "10 Mbit/h", "1..2", "NaN", "Inf", "1001GB", "10MiB",
		"1" + string(make([]byte, 70))} {
		if r, err := ParseRate(in); !errors.Is(err, ErrBadRate) {
			t.Errorf("ParseRate(%q) = %v, %v; want ErrBadRate", in, r, err)
		}
	}
}

func FuzzParseRate(f *testing.F) {
	for _, s := range []string{"10Mbit", "1.5 Gbit/s", "0", "12500000", "3kB/s", "99999999999999999999GB", ".5Mbps"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRate(s)
		if err != nil {
			if !errors.Is(err, ErrBadRate) {
				t.Fatalf("error %v is not ErrBadRate", err)
			}
			return
		}
		if math.IsNaN(r) || r < 0 || r > MaxRate {
			t.Fatalf("ParseRate(%q) = %v", s, r)
		}
	})
}
