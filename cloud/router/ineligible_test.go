package router

import (
	"net/netip"
	"net/url"
	"testing"

	"github.com/blockcast/beacon/shared/protocol"
)

// TestNewIneligible: with NewIneligible a relay is not routed to between
// its Upsert and the health gate's SetEligible, and a known node keeps the
// verdict it was given.
func TestNewIneligible(t *testing.T) {
	origin, _ := url.Parse("http://origin.example")
	r, err := New(Options{Origin: origin, NewIneligible: true})
	if err != nil {
		t.Fatal(err)
	}
	client := netip.MustParseAddr("10.1.2.3")
	r.Upsert(relay("r", "http://r.example", "10.0.0.0/8"))
	r.SetRelayNodePrefixes("r", []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")})
	if d := r.Decide(client, "/x"); d.Decision != protocol.DecisionOrigin {
		t.Fatalf("new relay routed before its health was known: %+v", d)
	}
	r.SetEligible("r", true)
	r.Upsert(relay("r", "http://r2.example", "10.0.0.0/8"))
	if d := r.Decide(client, "/x"); d.Decision != protocol.DecisionRelay || d.Location != "http://r2.example/x" {
		t.Fatalf("eligible relay not routed after an update: %+v", d)
	}
}
