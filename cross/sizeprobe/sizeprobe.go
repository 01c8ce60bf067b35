// Package sizeprobe makes the beacon's flash measurement link the multicast
// receive path (issue 12: ALC packets, signed manifests, per-packet checks,
// Reed–Solomon decoding, the DTLS unicast channel) before the beacon itself
// calls it. A blank import would not do: the linker drops every function
// nothing reaches, so only code that is called counts. `cross size` adds a
// file to ./firmware/cmd/beacon through `go build -overlay` (never to the
// tree) whose init calls Link; Link's body runs only when an environment
// variable no one sets is set, so the compiler cannot drop it and the probe
// binary behaves like the beacon.
//
// When the beacon links these packages itself (firmware/mcrecv), the probe
// costs next to nothing more: the code is already there.
package sizeprobe

import (
	"context"
	"io"
	"os"
	"time"

	"github.com/blockcast/beacon/shared/alc"
	"github.com/blockcast/beacon/shared/dtlschan"
	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/manifest"
	"github.com/blockcast/beacon/shared/objrecv"
)

// Env is the variable that would make Link run the receive path on stdin.
// It is for the linker's sake: nothing sets it.
const Env = "BEACON_SIZEPROBE_RUN"

// Link keeps the multicast receive path reachable from the caller.
func Link() {
	if os.Getenv(Env) != "yes, run the size probe" {
		return
	}
	_ = receive(context.Background(), os.Args[len(os.Args)-1], os.Stdin, io.Discard)
}

// receive is what a beacon does with an offer: check the manifest, dial
// castd's DTLS channel, feed packets to an assembler, NACK what is missing,
// fill the rest by range.
func receive(ctx context.Context, addr string, in io.Reader, out io.Writer) error {
	key, err := identity.Generate()
	if err != nil {
		return err
	}
	b, err := io.ReadAll(io.LimitReader(in, 1<<20))
	if err != nil {
		return err
	}
	p, err := alc.Decode(b)
	if err != nil {
		return err
	}
	m, err := manifest.FromPacket(p)
	if err != nil {
		return err
	}
	if err := m.Verify(key.Public()); err != nil {
		return err
	}
	var replay manifest.Replay
	if err := replay.Check(m, time.Now()); err != nil {
		return err
	}
	a, err := objrecv.New(m, key.Public(), out, objrecv.Config{})
	if err != nil {
		return err
	}
	s, err := dtlschan.Dialer{}.Dial(ctx, addr, key, key.Public())
	if err != nil {
		return err
	}
	defer s.Close()
	buf := make([]byte, s.MaxPayload())
	for !a.Done() && !a.Stalled() {
		n, err := s.Read(buf)
		if err != nil {
			break
		}
		_ = a.Feed(buf[:n], "repair")
		for _, r := range a.Missing(16) {
			if _, err := s.WriteLimited([]byte{byte(r.Kind)}); err != nil {
				return err
			}
		}
	}
	for _, r := range a.Fallback() {
		if err := a.Fill(r.Off, make([]byte, r.Len), "unicast"); err != nil {
			return err
		}
	}
	_ = a.Stats()
	return a.Err()
}
