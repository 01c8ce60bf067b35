package castd

import (
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/blockcast/beacon/cloud/channels"
)

// TestMulticastOptions: the defaults, and every refused multicast field
// named in the error.
func TestMulticastOptions(t *testing.T) {
	var o Options
	o.ensureDefaults()
	if o.Multicast || o.MulticastThreshold != DefaultMulticastThreshold || o.MulticastWindow != DefaultMulticastWindow ||
		o.MulticastRanges != channels.DefaultRanges || o.MulticastRate != DefaultMulticastRate ||
		o.MulticastRateTotal != DefaultMulticastRateTotal || o.DTLSListen != DefaultDTLSListen || o.RepairRate != DefaultRepairRate {
		t.Errorf("defaults: %+v", o)
	}
	lo := []netip.Addr{netip.MustParseAddr("127.0.0.1")}
	ok := func(o *Options) { o.Multicast = true; o.MulticastSources = lo; o.DTLSListen = "127.0.0.1:0" }
	for _, tc := range []struct {
		name  string
		mod   func(*Options)
		field string
		msg   string
	}{
		{"threshold", func(o *Options) { ok(o); o.MulticastThreshold = 5000 }, "MulticastThreshold", "at most"},
		{"window", func(o *Options) { ok(o); o.MulticastWindow = -time.Second }, "MulticastWindow", "negative"},
		{"pattern", func(o *Options) { ok(o); o.MulticastPaths = []string{"/live/**"} }, "MulticastPaths", "pattern"},
		{"pattern off", func(o *Options) { o.MulticastPaths = []string{"live"} }, "MulticastPaths", "pattern"},
		{"range", func(o *Options) { ok(o); o.MulticastRanges = "224.0.0.0/4" }, "MulticastRanges", "SSM"},
		{"rate", func(o *Options) { ok(o); o.MulticastRate = 2e12 }, "MulticastRate", "bytes a second"},
		{"repair rate", func(o *Options) { ok(o); o.RepairRate = 1e13 }, "RepairRate", "bytes a second"},
		{"source multicast", func(o *Options) { ok(o); o.MulticastSources = []netip.Addr{netip.MustParseAddr("232.1.1.1")} }, "MulticastSources", "unicast"},
		{"two v4 sources", func(o *Options) { ok(o); o.MulticastSources = append(lo, netip.MustParseAddr("127.0.0.2")) }, "MulticastSources", "one IPv4"},
		{"no source", func(o *Options) { ok(o); o.MulticastSources = nil }, "MulticastSources", "required"},
		{"iface", func(o *Options) { ok(o); o.MulticastIface = "no-such-if0" }, "MulticastIface", "no-such-if0"},
		{"dtls listen", func(o *Options) { ok(o); o.DTLSListen = "4433" }, "DTLSListen", "port"},
		{"dtls listen name", func(o *Options) { ok(o); o.DTLSListen = "castd.example:4433" }, "DTLSListen", "IP address"},
		{"dtls public", func(o *Options) { ok(o); o.DTLSListen = ":4433" }, "DTLSPublic", "required"},
		{"dtls public port", func(o *Options) { ok(o); o.DTLSPublic = "castd.example:0" }, "DTLSPublic", "port"},
	} {
		o := Options{StateDir: "x", Origin: "http://o"}
		tc.mod(&o)
		o.ensureDefaults()
		err := o.check()
		var oe *OptionError
		if !errors.As(err, &oe) || oe.Field != tc.field || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: %v, want an error naming Options.%s (%q)", tc.name, err, tc.field, tc.msg)
		}
	}
	// Accepted: a wildcard listener with a public name; threshold off.
	o = Options{StateDir: "x", Origin: "http://o"}
	ok(&o)
	o.DTLSListen, o.DTLSPublic, o.MulticastThreshold = ":4433", "castd.example:4433", -1
	o.ensureDefaults()
	if err := o.check(); err != nil {
		t.Errorf("valid options refused: %v", err)
	}
}

// TestMulticastNeedsSink: multicast with neither a native interface nor the
// AMT relay has nowhere to send, and New says so.
func TestMulticastNeedsSink(t *testing.T) {
	_, err := New(Options{StateDir: t.TempDir(), Origin: "http://o", Multicast: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		MulticastSources: []netip.Addr{netip.MustParseAddr("127.0.0.1")}, DTLSListen: "127.0.0.1:0"})
	var oe *OptionError
	if !errors.As(err, &oe) || oe.Field != "MulticastIface" {
		t.Fatalf("New = %v", err)
	}
}
