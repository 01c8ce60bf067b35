package amtgw_test

import (
	"context"
	"log"
	"net/netip"

	"github.com/blockcast/beacon/firmware/amtgw"
	"github.com/blockcast/beacon/firmware/driad"
	"github.com/blockcast/beacon/shared/amt"
)

// A beacon finds relays with DRIAD, falling back to a configured relay and
// then the anycast discovery address, receives one channel for itself and
// re-emits another on the LAN.
func Example() {
	resolver, err := driad.New(driad.Config{}) // nameservers of /etc/resolv.conf
	if err != nil {
		log.Fatal(err)
	}
	gw, err := amtgw.New(amtgw.Options{
		Relays: amtgw.Chain{
			amtgw.DRIAD{Resolver: resolver},
			amtgw.Static{{Addr: netip.MustParseAddrPort("203.0.113.7:2268")}},
			amtgw.Anycast,
		},
		ReemitInterface: "br-lan",
	})
	if err != nil {
		log.Fatal(err)
	}
	cancel := gw.Subscribe(func(ch amtgw.Channel, d amt.Datagram) {
		if d.DstPort == 5000 {
			log.Printf("%v: %d bytes", ch, len(d.Payload)) // d.Payload is only valid here
		}
	})
	defer cancel()
	src := netip.MustParseAddr("198.51.100.12")
	// Objects: no re-emission. A castd offer may name the relay.
	gw.Join(amtgw.Channel{Source: src, Group: netip.MustParseAddr("232.0.1.1")}, netip.AddrPort{}, false)
	// A TV channel for the set-top box on the LAN.
	gw.Join(amtgw.Channel{Source: src, Group: netip.MustParseAddr("232.0.2.1")}, netip.AddrPort{}, true)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	go gw.Run(ctx)
	_ = gw.State() // for the health report
}
