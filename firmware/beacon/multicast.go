package beacon

import (
	"os"
	"path/filepath"
	"strings"

	"github.com/blockcast/beacon/firmware/mcrecv"
	"github.com/blockcast/beacon/shared/ctrlmsg"
	"github.com/blockcast/beacon/shared/identity"
)

// DefaultMulticastReceive is --multicast-receive's default.
const DefaultMulticastReceive = "auto"

// newMulticast builds the multicast receiver and has castclient ask castd
// for offers; nil when reception is off.
func (b *Beacon) newMulticast() (*mcrecv.Receiver, error) {
	mode, err := mcrecv.ParseMode(b.opts.multicastMode())
	if err != nil {
		return nil, fieldError("MulticastReceive", err)
	}
	if mode == mcrecv.Off {
		return nil, nil
	}
	r, err := mcrecv.New(mcrecv.Options{
		Mode: mode, Interface: b.opts.MulticastIface, Key: b.key, CastKey: b.pinnedCastKey,
		Gateway: b.gw, Fetch: b.cast.Fetch, Logger: b.log.With("component", "multicast"),
	})
	if err != nil {
		return nil, err
	}
	b.cast.SetMulticast(r)
	return r, nil
}

func (o *Options) multicastMode() string {
	if o.MulticastReceive == "" {
		return DefaultMulticastReceive
	}
	return o.MulticastReceive
}

// pinnedCastKey returns the configured or pinned CAST key, false before
// the first registration pinned one.
func (b *Beacon) pinnedCastKey() (identity.PublicKey, bool) {
	if k := b.castKey.Load(); k != nil {
		return *k, true
	}
	s := b.opts.CastKey
	if s == "" {
		raw, err := os.ReadFile(filepath.Join(b.opts.StateDir, castKeyFile))
		if err != nil {
			return identity.PublicKey{}, false
		}
		s = strings.TrimSpace(string(raw))
	}
	k, err := identity.ParsePublicKey(s)
	if err != nil {
		return identity.PublicKey{}, false
	}
	b.castKey.Store(&k)
	return k, true
}

// multicastHealth is the multicast part of a health report.
func (b *Beacon) multicastHealth() *ctrlmsg.MulticastState {
	if b.mc == nil {
		return nil
	}
	st := b.mc.Stats()
	h := &ctrlmsg.MulticastState{
		BytesMulticast: st.Bytes["multicast"], BytesEarly: st.Bytes["early"], BytesRepair: st.Bytes["repair"],
		BytesFallback: st.Bytes["fallback"], BytesParityUsed: st.ParityUsedByte,
		OffersTaken: st.Offers["taken"], Channels: uint64(st.ChannelsNative + st.ChannelsAMT),
	}
	for k, v := range st.Offers {
		if k != "taken" {
			h.OffersRefused += v
		}
	}
	for _, v := range st.Rejected {
		h.PacketsRejected += v
	}
	return h
}
