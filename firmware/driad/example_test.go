package driad_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/netip"

	"github.com/blockcast/beacon/firmware/driad"
)

// Looking up the relays of a multicast source with the system's
// nameservers.
func Example() {
	r, err := driad.New(driad.Config{})
	if err != nil {
		log.Fatal(err)
	}
	relays, err := r.Lookup(context.Background(), netip.MustParseAddr("198.51.100.12"))
	switch {
	case errors.Is(err, driad.ErrNotFound), errors.Is(err, driad.ErrNoRelay):
		// Fall back to a configured relay or the anycast address.
	case err != nil:
		log.Print(err)
	}
	for _, rel := range relays {
		// Try in order; with !rel.DiscoveryOptional send a Relay
		// Discovery to rel.Addr first.
		fmt.Println(rel.Addr, rel.DiscoveryOptional)
	}
}
