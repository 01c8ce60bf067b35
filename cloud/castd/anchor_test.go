package castd

import (
	"errors"
	"testing"
	"time"
)

// TestAnchorOptionsRefused: a daily anchor needs an endpoint to publish
// on; an unknown mode or a negative day is refused, naming the field.
func TestAnchorOptionsRefused(t *testing.T) {
	for _, c := range []struct {
		o     Options
		field string
	}{
		{Options{ReceiptAnchor: AnchorDaily}, "ReceiptAnchor"},
		{Options{ReceiptAnchor: "hourly", SolanaRPC: "http://127.0.0.1:1"}, "ReceiptAnchor"},
		{Options{ReceiptAnchor: AnchorDaily, SolanaRPC: "http://127.0.0.1:1", ReceiptDay: -time.Second}, "ReceiptDay"},
	} {
		var oe *OptionError
		if err := c.o.checkAnchor(); !errors.As(err, &oe) || oe.Field != c.field {
			t.Errorf("%+v: %v, want a refusal of %s", c.o, err, c.field)
		}
	}
	for _, o := range []Options{{}, {ReceiptAnchor: AnchorOff}, {ReceiptAnchor: AnchorDaily, SolanaRPC: "http://127.0.0.1:1", ReceiptDay: time.Second}} {
		if err := o.checkAnchor(); err != nil {
			t.Errorf("%+v: %v", o, err)
		}
	}
}
