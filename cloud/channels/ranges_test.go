package channels

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestParseRange(t *testing.T) {
	for _, tc := range []struct {
		in          string
		n           uint64
		first, last string
	}{
		{"232.0.0.0/8", 1<<24 - 256, "232.0.1.0", "232.255.255.255"},
		{"232.1.2.0/24", 256, "232.1.2.0", "232.1.2.255"},
		{"232.0.0.0/23", 256, "232.0.1.0", "232.0.1.255"},
		{"232.9.9.9/32", 1, "232.9.9.9", "232.9.9.9"},
		{"ff3e::/96", 1 << 31, "ff3e::8000:0", "ff3e::ffff:ffff"},
		{"ff35::8000:0/112", 1 << 16, "ff35::8000:0", "ff35::8000:ffff"},
		{"ff38::/96", 1 << 31, "ff38::8000:0", "ff38::ffff:ffff"},
		{"ff3e::ffff:ffff/128", 1, "ff3e::ffff:ffff", "ff3e::ffff:ffff"},
	} {
		r, err := ParseRange(tc.in)
		if err != nil {
			t.Fatalf("ParseRange(%q): %v", tc.in, err)
		}
		if r.Len() != tc.n {
			t.Errorf("%s: Len %d, want %d", tc.in, r.Len(), tc.n)
		}
		if g := r.group(0).String(); g != tc.first {
			t.Errorf("%s: first %s, want %s", tc.in, g, tc.first)
		}
		if g := r.group(r.Len() - 1).String(); g != tc.last {
			t.Errorf("%s: last %s, want %s", tc.in, g, tc.last)
		}
		if r.String() != tc.in {
			t.Errorf("String %q, want %q", r.String(), tc.in)
		}
	}
}

func TestParseRangeErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", "no range"},
		{" , ", "no range"},
		{"232.0.0.0", "no '/'"},
		{"239.1.0.0/16", "not inside the IPv4 SSM range"},
		{"224.0.0.0/4", "not inside the IPv4 SSM range"},
		{"10.0.0.0/8", "not inside the IPv4 SSM range"},
		{"232.0.0.0/7", "not inside the IPv4 SSM range"},
		{"232.1.2.3/24", "did you mean 232.1.2.0/24"},
		{"232.0.0.0/24", "reserved"},
		{"232.0.0.128/25", "reserved"},
		{"::ffff:232.1.0.0/112", "IPv4 form"},
		{"ff0e::/96", "not an IPv6 SSM range"},
		{"ff1e::/96", "not an IPv6 SSM range"},
		{"fe80::/96", "not an IPv6 SSM range"},
		{"ff32::/96", "scope 2"},
		{"ff3f::/96", "scope f"},
		{"ff3e::/95", "wider than"},
		{"ff3e:0:0:1::/96", "not inside ff3e::/96"},
		{"ff3e::1:0/112", "not for servers"},
		{"ff3e::/97", "not for servers"},
		{"232.1.0.0/16,232.1.5.0/24", "overlaps"},
		{"ff3e::/96 ff3e::8000:0/112", "overlaps"},
		{"232.1.0.0/16%eth0", ""},
		{strings.Repeat("232.1.0.0/16,", 65), "at most 64"},
	} {
		_, err := ParseRanges(tc.in)
		if err == nil || !errors.Is(err, ErrBadRange) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseRanges(%q) = %v, want ErrBadRange with %q", tc.in, err, tc.want)
		}
	}
}

func TestParseRangesDefault(t *testing.T) {
	rs, err := ParseRanges(DefaultRanges)
	if err != nil || len(rs) != 2 || !rs[0].Is4() || rs[1].Is4() {
		t.Fatalf("ParseRanges(DefaultRanges) = %v, %v", rs, err)
	}
}

// FuzzParse: whatever the input, ParseRanges returns an error or ranges
// whose every group is an SSM group inside the range, that do not overlap
// and that read back as themselves.
func FuzzParse(f *testing.F) {
	for _, s := range []string{DefaultRanges, "232.1.2.0/24", "ff35::8000:0/112 232.9.0.0/16", "232.0.0.0/23", "ff3e::7fff:ffff/127", "::ffff:232.0.0.0/104", "239.0.0.0/8", "ff3e::/96,ff3e::/96"} {
		f.Add(s)
	}
	ssm6 := netip.MustParsePrefix("ff30::/12")
	f.Fuzz(func(t *testing.T, s string) {
		rs, err := ParseRanges(s)
		if err != nil {
			if !errors.Is(err, ErrBadRange) {
				t.Fatalf("error %v is not ErrBadRange", err)
			}
			return
		}
		for i, r := range rs {
			if r.Len() == 0 {
				t.Fatalf("%v: empty range accepted", r)
			}
			for _, k := range []uint64{0, r.Len() / 2, r.Len() - 1} {
				g := r.group(k)
				if !r.Prefix().Contains(g) {
					t.Fatalf("%v: group %d = %v outside", r, k, g)
				}
				if g.Is4() && (!ssm4.Contains(g) || g.As4()[1] == 0 && g.As4()[2] == 0) {
					t.Fatalf("%v: group %v not allocatable IPv4 SSM", r, g)
				}
				if g.Is6() && (!ssm6.Contains(g) || g.As16()[12] < 0x80) {
					t.Fatalf("%v: group %v not server-allocatable IPv6 SSM", r, g)
				}
			}
			back, err := ParseRange(r.String())
			if err != nil || back != r {
				t.Fatalf("%v does not read back: %v %v", r, back, err)
			}
			for _, o := range rs[:i] {
				if o.Prefix().Overlaps(r.Prefix()) {
					t.Fatalf("%v overlaps %v", r, o)
				}
			}
		}
	})
}
