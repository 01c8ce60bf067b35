package main

import (
	"bytes"
	"flag"
	"io"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/blockcast/beacon/cloud/castd"
)

// TestMulticastFlags: rates in the operator's units become bytes a second,
// "0" (no cap, only paths) becomes Options' negative, and the repeatable
// flags gather every use.
func TestMulticastFlags(t *testing.T) {
	fs := flag.NewFlagSet("castd", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var o castd.Options
	finish := multicastFlags(fs, &o)
	err := fs.Parse([]string{"--multicast", "--multicast-threshold", "0", "--multicast-path", "/live/*", "--multicast-path", "/sw/*.bin,/a/*",
		"--multicast-rate", "40Mbit", "--multicast-rate-total", "0", "--repair-rate", "1MB", "--multicast-source", "192.0.2.1,2001:db8::1"})
	if err == nil {
		err = finish()
	}
	if err != nil {
		t.Fatal(err)
	}
	if !o.Multicast || o.MulticastThreshold != -1 || !slices.Equal(o.MulticastPaths, []string{"/live/*", "/sw/*.bin", "/a/*"}) ||
		o.MulticastRate != 5e6 || o.MulticastRateTotal != -1 || o.RepairRate != 1e6 ||
		!slices.Equal(o.MulticastSources, []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")}) {
		t.Fatalf("%+v", o)
	}
}

// TestMulticastFlagErrors: each bad multicast flag is named in the error.
func TestMulticastFlagErrors(t *testing.T) {
	base := []string{"--state-dir", t.TempDir(), "--origin", "http://o", "--mqtt-listen", "", "--listen", "127.0.0.1:0"}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--multicast-rate", "fast"}, "castd: --multicast-rate: "},
		{[]string{"--multicast-source", "nowhere"}, "castd: --multicast-source: "},
		{[]string{"--multicast", "--amt-listen", "127.0.0.1:0"}, "castd: --multicast-source: required"},
		{[]string{"--multicast-path", "/live/**"}, "castd: --multicast-path: "},
		{[]string{"--multicast-range", "10.0.0.0/8"}, "castd: --multicast-range: "},
		{[]string{"--multicast", "--multicast-source", "127.0.0.1", "--amt-listen", "127.0.0.1:0"}, "castd: --dtls-public: required"},
	} {
		var out, errb bytes.Buffer
		args := append(append([]string{}, base...), tc.args...)
		if !slices.Contains(tc.args, "--amt-listen") {
			args = append(args, "--amt-listen", "")
		}
		if code := run(args, &out, &errb); code != 2 || !strings.Contains(errb.String(), tc.want) || strings.Contains(errb.String(), "Options.") {
			t.Errorf("%q: exit %d, stderr %q; want 2 and %q", tc.args, code, errb.String(), tc.want)
		}
	}
}
