package beacon

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestOptionsDefaults: zero Options get the documented defaults.
func TestOptionsDefaults(t *testing.T) {
	o := Options{StateDir: "/st"}
	o.ensureDefaults()
	for _, tc := range []struct {
		field     string
		got, want any
	}{
		{"Listen", o.Listen, DefaultListen},
		{"CacheSize", o.CacheSize, int64(DefaultCacheSize)},
		{"CheckInterval", o.CheckInterval, DefaultCheckInterval},
		{"HealthInterval", o.HealthInterval, DefaultHealthInterval},
		{"MaxConns", o.MaxConns, DefaultMaxConns},
		{"WriteStall", o.WriteStall, DefaultWriteStall},
		{"BodyTimeout", o.BodyTimeout, DefaultBodyTimeout},
		{"KeyFile", o.KeyFile, filepath.Join("/st", "wallet.json")},
		{"AdminListen", o.AdminListen, ""}, // off unless asked for
		{"Logger set", o.Logger != nil, true},
	} {
		if tc.got != tc.want {
			t.Errorf("zero %s became %v, want %v", tc.field, tc.got, tc.want)
		}
	}
}

// TestOptionErrorsNameFields: the library's errors name the Go field; the
// beacon command names the flag.
func TestOptionErrorsNameFields(t *testing.T) {
	for _, tc := range []struct {
		o     Options
		field string
	}{
		{Options{StateDir: "x"}, "CastURL"},
		{Options{CastURL: "http://c"}, "StateDir"},
		{Options{CastURL: "http://c", StateDir: "x", CacheSize: -1}, "CacheSize"},
		{Options{CastURL: "http://c", StateDir: "x", HealthInterval: -time.Second}, "HealthInterval"},
		{Options{CastURL: "http://c", StateDir: "x", LANURL: "ftp://x"}, "LANURL"},
		{Options{CastURL: "http://c", StateDir: "x", AMTRelay: "a b"}, "AMTRelay"},
		{Options{CastURL: "http://c", StateDir: "x", AMTJoins: []string{"1.2.3.4@239.1.1.1"}}, "AMTJoins"},
		{Options{CastURL: "http://c", StateDir: "x", AMTJoins: []string{"1.2.3.4@232.1.1.1 reemit"}}, "AMTJoins"},
		{Options{CastURL: "http://c", StateDir: "x", AllowHosts: []string{"*"}}, "AllowHosts"},
		{Options{CastURL: "http://c", StateDir: "x", MulticastReceive: "yes"}, "MulticastReceive"},
	} {
		tc.o.ensureDefaults()
		err := tc.o.check()
		var oe *OptionError
		if !errors.As(err, &oe) || oe.Field != tc.field || !strings.Contains(err.Error(), "Options."+tc.field) || strings.Contains(err.Error(), "--") {
			t.Errorf("%+v: %v, want an error naming Options.%s", tc.o, err, tc.field)
		}
	}
}
