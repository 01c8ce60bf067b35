package amtrelay

import (
	"errors"
	"strings"
	"testing"
)

// TestOptionsDefaults: zero Options get the documented defaults, and
// refusals name the field.
func TestOptionsDefaults(t *testing.T) {
	o := Options{}.withDefaults()
	for _, tc := range []struct {
		field     string
		got, want any
	}{
		{"Listen", o.Listen, DefaultListen},
		{"QueryInterval", o.QueryInterval, DefaultQueryInterval},
		{"Robustness", o.Robustness, DefaultRobustness},
		{"QueryResponseInterval", o.QueryResponseInterval, DefaultQueryResponseInterval},
		{"SecretRotation", o.SecretRotation, DefaultSecretRotation},
		{"MaxGateways", o.MaxGateways, DefaultMaxGateways},
		{"MaxChannelsPerGateway", o.MaxChannelsPerGateway, DefaultMaxChannelsPerGateway},
		{"MaxChannels", o.MaxChannels, DefaultMaxChannels},
		{"RequestRate", o.RequestRate, float64(DefaultRequestRate)},
		{"RequestBurst", o.RequestBurst, DefaultRequestBurst},
		{"NativeInterface", o.NativeInterface, ""}, // off
		{"Logger set", o.Logger != nil, true},
	} {
		if tc.got != tc.want {
			t.Errorf("zero %s became %v, want %v", tc.field, tc.got, tc.want)
		}
	}
	if err := o.check(); err != nil {
		t.Errorf("defaults refused: %v", err)
	}
	for field, bad := range map[string]Options{
		"Robustness":  {Robustness: 9},
		"MaxChannels": {MaxChannels: -1},
		"RequestRate": {RequestRate: -1},
	} {
		err := bad.withDefaults().check()
		if !errors.Is(err, ErrOptions) || !strings.Contains(err.Error(), field) {
			t.Errorf("%s: %v", field, err)
		}
	}
}
