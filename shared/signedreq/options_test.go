package signedreq

import "testing"

// TestOptionsDefaults: zero Options get the documented defaults.
func TestOptionsDefaults(t *testing.T) {
	var o Options
	o.ensureDefaults()
	if o.Window != DefaultWindow || o.MaxNonces != DefaultMaxNonces || o.Now == nil {
		t.Errorf("zero Options became %+v", o)
	}
}
