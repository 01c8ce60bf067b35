package castd

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// TestOptionsDefaults: zero Options get the documented defaults, and a
// negative value keeps its meaning (off) rather than being replaced.
func TestOptionsDefaults(t *testing.T) {
	var o Options
	o.ensureDefaults()
	for _, tc := range []struct {
		field     string
		got, want any
	}{
		{"Listen", o.Listen, DefaultListen},
		{"CacheSize", o.CacheSize, int64(DefaultCacheSize)},
		{"SignWindow", o.SignWindow, DefaultSignWindow},
		{"MQTTCoalesce", o.MQTTCoalesce, DefaultMQTTCoalesce},
		{"ProbeInterval", o.ProbeInterval, DefaultProbeInterval},
		{"ProbeConcurrency", o.ProbeConcurrency, DefaultProbeConcurrency},
		{"CoverageZoneInterval", o.CoverageZoneInterval, DefaultCoverageZoneInterval},
		{"AMTQueryInterval", o.AMTQueryInterval, DefaultAMTQueryInterval},
		{"AMTMaxGateways", o.AMTMaxGateways, DefaultAMTMaxGateways},
		{"WriteStall", o.WriteStall, DefaultWriteStall},
		{"BodyTimeout", o.BodyTimeout, DefaultBodyTimeout},
		{"RegistrationRate", o.RegistrationRate, float64(DefaultRegistrationRate)},
		{"RegistrationBurst", o.RegistrationBurst, DefaultRegistrationBurst},
		{"RegistrationTTL", o.RegistrationTTL, DefaultRegistrationTTL},
		{"Logger set", o.Logger != nil, true},
		// Off unless asked for: empty addresses and tokens.
		{"MQTTListen", o.MQTTListen, ""},
		{"AMTListen", o.AMTListen, ""},
		{"AdminToken", o.AdminToken, ""},
	} {
		if tc.got != tc.want {
			t.Errorf("zero %s became %v, want %v", tc.field, tc.got, tc.want)
		}
	}
	off := Options{MQTTCoalesce: -1, RegistrationTTL: -1, RegistrationRate: -1}
	off.ensureDefaults()
	if off.MQTTCoalesce != -1 || off.RegistrationTTL != -1 || off.RegistrationRate != -1 {
		t.Errorf("negative (off) values replaced: %+v", off)
	}
}

// TestOptionErrorsNameFields: the library's errors name the Go field; the
// castd command names the flag.
func TestOptionErrorsNameFields(t *testing.T) {
	for _, tc := range []struct {
		o     Options
		field string
	}{
		{Options{Origin: "http://o"}, "StateDir"},
		{Options{StateDir: "x"}, "Origin"},
		{Options{StateDir: "x", Origin: "ftp://o"}, "Origin"},
		{Options{StateDir: "x", Origin: "http://o", CacheSize: -1}, "CacheSize"},
		{Options{StateDir: "x", Origin: "http://o", SignWindow: -time.Second}, "SignWindow"},
		{Options{StateDir: "x", Origin: "http://o", RegistrationBurst: -1}, "RegistrationBurst"},
	} {
		tc.o.ensureDefaults()
		err := tc.o.check()
		var oe *OptionError
		if !errors.As(err, &oe) || oe.Field != tc.field || !strings.Contains(err.Error(), "Options."+tc.field) || strings.Contains(err.Error(), "--") {
			t.Errorf("%+v: %v, want an error naming Options.%s", tc.o, err, tc.field)
		}
	}
}
