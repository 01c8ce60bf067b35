package clientip

import (
	"net/http"
	"net/netip"
	"testing"
)

func TestAddr(t *testing.T) {
	trusted, err := ParsePrefixes("10.0.0.0/8, 192.0.2.1")
	if err != nil {
		t.Fatal(err)
	}
	r := New(trusted)
	tests := []struct {
		name, remote string
		xff          []string
		want         string
		wantErr      bool
	}{
		{"direct", "203.0.113.9:5000", nil, "203.0.113.9", false},
		{"untrusted peer ignores xff", "203.0.113.9:5000", []string{"1.2.3.4"}, "203.0.113.9", false},
		{"trusted proxy", "10.1.2.3:80", []string{"198.51.100.7"}, "198.51.100.7", false},
		{"forged left part ignored", "10.1.2.3:80", []string{"6.6.6.6, 198.51.100.7"}, "198.51.100.7", false},
		{"chain of proxies", "10.1.2.3:80", []string{"198.51.100.7", "192.0.2.1"}, "198.51.100.7", false},
		{"trusted without xff", "192.0.2.1:80", nil, "192.0.2.1", false},
		{"mapped v4", "[::ffff:203.0.113.9]:1", nil, "203.0.113.9", false},
		{"v6", "[2001:db8::1]:1", nil, "2001:db8::1", false},
		{"bad xff from proxy", "10.1.2.3:80", []string{"junk"}, "", true},
		{"bad remote", "nonsense", nil, "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := &http.Request{RemoteAddr: tc.remote, Header: http.Header{}}
			for _, v := range tc.xff {
				req.Header.Add("X-Forwarded-For", v)
			}
			got, err := r.Addr(req)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("want error, got %v", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != netip.MustParseAddr(tc.want) {
				t.Fatalf("got %v want %v", got, tc.want)
			}
		})
	}
}

func TestParsePrefixesRejects(t *testing.T) {
	for _, s := range []string{"10.0.0.0/33", "nope", "1.2.3.4/x"} {
		if _, err := ParsePrefixes(s); err == nil {
			t.Errorf("%q: want error", s)
		}
	}
}
