package amtgw

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/blockcast/beacon/shared/goldenhex"

	"github.com/blockcast/beacon/shared/amt"
)

var (
	goldenMAC   = [6]byte{0x6d, 0x61, 0x63, 0x6d, 0x61, 0x63}
	goldenNonce = uint32(0x6e6f6e63)
)

// TestGoldenUpdates pins the Membership Updates the gateway sends: the
// answer to a query (current state) and a state change, for each family.
func TestGoldenUpdates(t *testing.T) {
	a := netip.MustParseAddr
	g4 := a("232.1.2.3")
	g6 := a("ff3e::8000:1")
	tests := []struct {
		name string
		v6   bool
		recs []amt.GroupRecord
	}{
		{"update_current_v4", false, amt.CurrentStateRecords([]Channel{
			{Source: a("192.0.2.10"), Group: g4}, {Source: a("192.0.2.11"), Group: g4}, {Source: a("192.0.2.10"), Group: a("232.9.9.9")},
		})},
		{"update_change_v4", false, amt.ChangeRecords(
			[]Channel{{Source: a("192.0.2.12"), Group: g4}},
			[]Channel{{Source: a("192.0.2.10"), Group: a("232.9.9.9")}})},
		{"update_current_v6", true, amt.CurrentStateRecords([]Channel{{Source: a("2001:db8::10"), Group: g6}})},
		{"update_change_v6", true, amt.ChangeRecords(nil, []Channel{{Source: a("2001:db8::10"), Group: g6}})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msgs, err := appendUpdates(tt.v6, goldenMAC, goldenNonce, tt.recs)
			if err != nil || len(msgs) != 1 {
				t.Fatalf("appendUpdates = %d messages, %v", len(msgs), err)
			}
			got, err := msgs[0].AppendTo(nil)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", tt.name+".hex")
			if *goldenhex.Update {
				if err := os.WriteFile(path, goldenhex.Format("Membership Update, "+tt.name, got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			raw, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create)", err)
			}
			want, err := goldenhex.Parse(raw)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("differs from %s:\ngot\n%swant\n%s", path, hex.Dump(got), hex.Dump(want))
			}
			// What a strict relay reads back.
			m, err := amt.Options{Strict: true}.Parse(want)
			if err != nil {
				t.Fatal(err)
			}
			u := m.(*amt.MembershipUpdate)
			rp, err := amt.Options{Strict: true}.ParseReportPacket(u.Report)
			if err != nil {
				t.Fatal(err)
			}
			if u.MAC != goldenMAC || u.Nonce != goldenNonce || !reflect.DeepEqual(rp.Records, tt.recs) || !rp.Src.IsUnspecified() {
				t.Errorf("parsed %+v / %+v, want records %+v", u, rp, tt.recs)
			}
		})
	}
}

// TestUpdateSplitting: many channels go out in several reports, each
// within a 1500-byte path, together holding every record.
func TestUpdateSplitting(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		t.Run(fmt.Sprintf("v6=%v", v6), func(t *testing.T) {
			var chans []Channel
			for i := 0; i < 300; i++ {
				if v6 {
					chans = append(chans, Channel{Source: netip.MustParseAddr(fmt.Sprintf("2001:db8::%x", i+1)), Group: netip.MustParseAddr(fmt.Sprintf("ff3e::%x", i+1))})
				} else {
					chans = append(chans, Channel{Source: netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), Group: netip.AddrFrom4([4]byte{232, 1, byte(i >> 8), byte(i)})})
				}
			}
			// And one group with more sources than a report holds.
			for i := 0; i < 120; i++ {
				if v6 {
					chans = append(chans, Channel{Source: netip.MustParseAddr(fmt.Sprintf("2001:db8:1::%x", i+1)), Group: netip.MustParseAddr("ff3e::ffff")})
				} else {
					chans = append(chans, Channel{Source: netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}), Group: netip.MustParseAddr("232.255.0.1")})
				}
			}
			msgs, err := appendUpdates(v6, goldenMAC, goldenNonce, amt.CurrentStateRecords(chans))
			if err != nil {
				t.Fatal(err)
			}
			if len(msgs) < 2 {
				t.Fatalf("%d updates", len(msgs))
			}
			seen := map[Channel]bool{}
			for _, m := range msgs {
				b, err := m.AppendTo(nil)
				if err != nil {
					t.Fatal(err)
				}
				if outer := 40 + 8 + len(b); outer > 1500 { // outer IPv6 and UDP headers
					t.Errorf("update of %d bytes: %d on the wire", len(b), outer)
				}
				rp, err := amt.Options{Strict: true}.ParseReportPacket(m.Report)
				if err != nil {
					t.Fatal(err)
				}
				for _, r := range rp.Records {
					for _, s := range r.Sources {
						ch := Channel{Source: s, Group: r.Group}
						if seen[ch] {
							t.Errorf("%v reported twice", ch)
						}
						seen[ch] = true
					}
				}
			}
			if len(seen) != len(chans) {
				t.Errorf("%d channels reported, want %d", len(seen), len(chans))
			}
		})
	}
}
