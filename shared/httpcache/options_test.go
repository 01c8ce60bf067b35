package httpcache

import (
	"strings"
	"testing"
	"time"

	"github.com/blockcast/beacon/shared/objstore"
)

// TestOptionsDefaults: zero Options get the documented defaults, and
// refusals name the field.
func TestOptionsDefaults(t *testing.T) {
	var o Options
	o.ensureDefaults()
	if o.FillTimeout != DefaultFillTimeout || o.CloseTimeout != DefaultCloseTimeout || o.Logger == nil || o.Now == nil {
		t.Errorf("zero Options became %+v", o)
	}
	type up struct{ Upstream } // check only looks at it
	st := &objstore.Store{}
	for field, bad := range map[string]Options{
		"Options.Store":        {Upstream: up{}},
		"Options.Upstream":     {Store: st},
		"Options.FillTimeout":  {Store: st, Upstream: up{}, FillTimeout: -time.Second},
		"Options.CloseTimeout": {Store: st, Upstream: up{}, CloseTimeout: -time.Second},
	} {
		bad.ensureDefaults()
		if err := bad.check(); err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("%s: %v", field, err)
		}
	}
}
