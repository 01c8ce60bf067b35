package broker

import (
	"strings"
	"testing"
)

// TestOptionsDefaults: zero Options get the documented defaults; negative
// rates and ReadCoalesce keep meaning "off".
func TestOptionsDefaults(t *testing.T) {
	var o Options
	o.ensureDefaults()
	for _, tc := range []struct {
		field     string
		got, want any
	}{
		{"Addr", o.Addr, DefaultAddr},
		{"TokenWindow", o.TokenWindow, DefaultTokenWindow},
		{"MaxClients", o.MaxClients, DefaultMaxClients},
		{"MaxHandshakes", o.MaxHandshakes, DefaultMaxHandshakes},
		{"HandshakeTimeout", o.HandshakeTimeout, DefaultHandshakeTimeout},
		{"MaxHandshakesPerAddr", o.MaxHandshakesPerAddr, DefaultMaxHandshakesPerAddr},
		{"ConnectRate", o.ConnectRate, float64(DefaultConnectRate)},
		{"ConnectBurst", o.ConnectBurst, DefaultConnectBurst},
		{"MaxPacketSize", o.MaxPacketSize, uint32(DefaultMaxPacketSize)},
		{"ReadCoalesce", o.ReadCoalesce, DefaultReadCoalesce},
		{"PublishRate", o.PublishRate, float64(DefaultPublishRate)},
		{"PublishBurst", o.PublishBurst, DefaultPublishBurst},
		{"Logger set", o.Logger != nil, true},
		{"Now set", o.Now != nil, true},
	} {
		if tc.got != tc.want {
			t.Errorf("zero %s became %v, want %v", tc.field, tc.got, tc.want)
		}
	}
	off := Options{ReadCoalesce: -1, ConnectRate: -1, PublishRate: -1}
	off.ensureDefaults()
	if off.ReadCoalesce != -1 || off.ConnectRate != -1 || off.PublishRate != -1 {
		t.Errorf("negative (off) values replaced: %+v", off)
	}
	if err := off.check(); err != nil {
		t.Errorf("off values refused: %v", err)
	}
	bad := Options{MaxClients: -1}
	bad.ensureDefaults()
	if err := bad.check(); err == nil || !strings.Contains(err.Error(), "Options.MaxClients") {
		t.Errorf("negative MaxClients: %v", err)
	}
}
