package broker

import "testing"

// TestExternalOptionsDefaults: zero ExternalOptions get the documented
// defaults.
func TestExternalOptionsDefaults(t *testing.T) {
	var o ExternalOptions
	o.ensureDefaults()
	if o.ConnectTimeout != DefaultConnectTimeout || o.PublishTimeout != DefaultPublishTimeout || o.KeepAlive != DefaultKeepAlive || o.Logger == nil {
		t.Errorf("zero ExternalOptions became %+v", o)
	}
}
