package agent

import (
	"strings"
	"testing"
	"time"
)

// TestOptionsDefaults: zero Options get the documented defaults, and
// refusals name the Options field.
func TestOptionsDefaults(t *testing.T) {
	var o Options
	o.ensureDefaults()
	for _, tc := range []struct {
		field     string
		got, want any
	}{
		{"Interval", o.Interval, DefaultInterval},
		{"QueueLimit", o.QueueLimit, DefaultQueueLimit},
		{"KeepAlive", o.KeepAlive, DefaultKeepAlive},
		{"Window", o.Window, DefaultWindow},
		{"MinBackoff", o.MinBackoff, DefaultMinBackoff},
		{"MaxBackoff", o.MaxBackoff, DefaultMaxBackoff},
		{"Logger set", o.Logger != nil, true},
		{"Now set", o.Now != nil, true},
		{"Dial set", o.Dial != nil, true},
	} {
		if tc.got != tc.want {
			t.Errorf("zero %s became %v, want %v", tc.field, tc.got, tc.want)
		}
	}
	// A MinBackoff past the default maximum raises the maximum with it.
	slow := Options{MinBackoff: 5 * time.Minute}
	slow.ensureDefaults()
	if slow.MaxBackoff != 5*time.Minute {
		t.Errorf("MaxBackoff %v under MinBackoff %v", slow.MaxBackoff, slow.MinBackoff)
	}
	for _, tc := range []struct {
		o     Options
		field string
	}{
		{Options{BrokerURL: "tcp://h:1"}, "Options.Key"},
		{Options{Key: newKey(t), BrokerURL: "http://h:1"}, "Options.BrokerURL"},
		{Options{Key: newKey(t), BrokerURL: "tcp://h:1", Interval: -time.Second}, "Options.Interval"},
		{Options{Key: newKey(t), BrokerURL: "tcp://h:1", MinBackoff: time.Second, MaxBackoff: time.Millisecond}, "Options.MaxBackoff"},
	} {
		if _, err := New(tc.o); err == nil || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%s: %v", tc.field, err)
		}
	}
}
