package amtrelay

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// reason is why the relay refused a message or dropped a copy. Every drop
// path counts exactly one reason, so Stats.Drops and castd's
// castd_amt_refused_total{reason} account for everything not served.
type reason int

const (
	reasonMalformed reason = iota
	reasonUnexpected
	reasonBadMAC
	reasonRateLimited
	reasonGatewayLimit
	reasonChannelLimit
	reasonNotSSM
	reasonBadDatagram
	reasonTooBig
	reasonSendError
	reasonNoAddress
	numReasons
)

// reasonInfo names each reason (the metric label) and says, for the log,
// what it usually means.
var reasonInfo = [numReasons]struct{ name, why string }{
	reasonMalformed:    {"malformed", "undecodable AMT message, encapsulated report or source address"},
	reasonUnexpected:   {"unexpected", "relay-to-gateway message type sent to the relay"},
	reasonBadMAC:       {"bad_mac", "Update or Teardown whose MAC/nonce does not verify (spoofing, or a gateway replaying an old query)"},
	reasonRateLimited:  {"rate_limited", "Requests/Discoveries over the per-address rate"},
	reasonGatewayLimit: {"gateway_limit", "join from a new gateway refused at MaxGateways (--amt-max-gateways)"},
	reasonChannelLimit: {"channel_limit", "join refused at the per-gateway or total channel limit"},
	reasonNotSSM:       {"non_ssm", "record for a non-SSM group or in EXCLUDE (any-source) mode"},
	reasonBadDatagram:  {"bad_datagram", "native multicast datagram that does not parse"},
	reasonTooBig:       {"too_big", "Multicast Data copy larger than the path MTU"},
	reasonSendError:    {"send_error", "send to a gateway failed"},
	reasonNoAddress:    {"no_address", "Relay Discovery the relay had no address to advertise for (set --amt-advertise)"},
}

// RefusalReasons are the reason labels of Drops, in a fixed order.
var RefusalReasons = func() []string {
	out := make([]string, numReasons)
	for i, ri := range reasonInfo {
		out[i] = ri.name
	}
	return out
}()

// Refusal is the count of one reason.
type Refusal struct {
	Reason string // one of RefusalReasons
	Count  uint64
}

// ByReason lists d's counts in RefusalReasons order.
func (d Drops) ByReason() []Refusal {
	v := d.array()
	out := make([]Refusal, numReasons)
	for i := range out {
		out[i] = Refusal{Reason: reasonInfo[i].name, Count: v[i]}
	}
	return out
}

func (d Drops) array() [numReasons]uint64 {
	return [numReasons]uint64{
		reasonMalformed: d.Malformed, reasonUnexpected: d.Unexpected, reasonBadMAC: d.BadMAC,
		reasonRateLimited: d.RateLimited, reasonGatewayLimit: d.GatewayLimit, reasonChannelLimit: d.ChannelLimit,
		reasonNotSSM: d.NotSSM, reasonBadDatagram: d.BadDatagram, reasonTooBig: d.TooBig,
		reasonSendError: d.SendErrors, reasonNoAddress: d.NoAddress,
	}
}

func dropsFrom(v *[numReasons]atomic.Uint64) Drops {
	return Drops{
		Malformed: v[reasonMalformed].Load(), Unexpected: v[reasonUnexpected].Load(), BadMAC: v[reasonBadMAC].Load(),
		RateLimited: v[reasonRateLimited].Load(), GatewayLimit: v[reasonGatewayLimit].Load(), ChannelLimit: v[reasonChannelLimit].Load(),
		NotSSM: v[reasonNotSSM].Load(), BadDatagram: v[reasonBadDatagram].Load(), TooBig: v[reasonTooBig].Load(),
		SendErrors: v[reasonSendError].Load(), NoAddress: v[reasonNoAddress].Load(),
	}
}

// DefaultRefusalLogInterval is how often, at most, one warning per reason
// summarises the refusals since the last one.
const DefaultRefusalLogInterval = time.Minute

// refusals counts drops by reason and keeps, per reason, one sample of who
// caused them for the next summary. Counting is one atomic add; the sample
// is taken by the first drop after a summary only, so a flood costs no
// lock and no log line per packet.
type refusals struct {
	n       [numReasons]atomic.Uint64
	sampled [numReasons]atomic.Bool

	mu      sync.Mutex // guards the fields below
	sample  [numReasons]netip.AddrPort
	logged  [numReasons]uint64 // n at the last summary
	lastLog [numReasons]time.Time
}

// refuse counts one drop for why, caused by from (zero if unknown).
func (r *Relay) refuse(why reason, from netip.AddrPort) {
	f := &r.stats.refused
	f.n[why].Add(1)
	if from.IsValid() && !f.sampled[why].Load() && f.sampled[why].CompareAndSwap(false, true) {
		f.mu.Lock()
		f.sample[why] = from
		f.mu.Unlock()
	}
}

// logRefusals writes one warning per reason that has new drops, at most one
// per reason per interval (or for every reason with new drops if flush).
func (r *Relay) logRefusals(now time.Time, flush bool) {
	f := &r.stats.refused
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range numReasons {
		total := f.n[i].Load()
		if total == f.logged[i] || (!flush && now.Sub(f.lastLog[i]) < r.opts.refusalLog) {
			continue
		}
		args := []any{"reason", reasonInfo[i].name, "count", total - f.logged[i], "total", total}
		if !f.lastLog[i].IsZero() {
			args = append(args, "since", now.Sub(f.lastLog[i]).Round(time.Second))
		}
		if s := f.sample[i]; s.IsValid() {
			args = append(args, "sample_from", s)
		}
		args = append(args, "why", reasonInfo[i].why)
		r.log.Warn("AMT relay refused messages", args...)
		f.logged[i], f.lastLog[i], f.sample[i] = total, now, netip.AddrPort{}
		f.sampled[i].Store(false)
	}
}
