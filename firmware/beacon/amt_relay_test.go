package beacon

import (
	"io"
	"log/slog"
	"strings"
	"testing"
)

// TestGatewayRelayName: the relay of the shipped UCI example, a host name,
// starts the gateway (it used to stop the beacon with "want ADDR or
// ADDR:PORT"); nothing is resolved until a channel is joined. Junk is
// refused with an error naming the flag.
func TestGatewayRelayName(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, relay := range []string{"amt-relay.example.net", "amt-relay.example.net:2269", "192.0.2.1"} {
		b := &Beacon{opts: Options{AMTRelay: relay, AMTDRIAD: true}, log: log}
		if _, err := b.newGateway(); err != nil {
			t.Errorf("--amt-relay %s: %v", relay, err)
		}
	}
	b := &Beacon{opts: Options{AMTRelay: "amt relay!"}, log: log}
	if _, err := b.newGateway(); err == nil || !strings.Contains(err.Error(), "Options.AMTRelay: ") {
		t.Errorf("--amt-relay junk: %v", err)
	}
}
