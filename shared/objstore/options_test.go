package objstore

import (
	"strings"
	"testing"
	"time"
)

// TestOptionsDefaults: zero Options get the documented defaults, and
// refusals name the field.
func TestOptionsDefaults(t *testing.T) {
	var o Options
	o.ensureDefaults()
	if o.AtimeFlush != DefaultAtimeFlush || o.LockTimeout != DefaultLockTimeout || o.Logger == nil {
		t.Errorf("zero Options became %+v", o)
	}
	for field, bad := range map[string]Options{
		"Options.MaxBytes":   {},
		"Options.AtimeFlush": {MaxBytes: 1, AtimeFlush: -time.Second},
	} {
		bad.ensureDefaults()
		if err := bad.check(); err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("%s: %v", field, err)
		}
	}
}
