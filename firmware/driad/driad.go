// Package driad finds the AMT relays that a multicast source's operator
// publishes in DNS: DNS Reverse IP AMT Discovery (DRIAD, RFC 8777).
//
// Lookup asks for the AMTRELAY records (type 260) at the reverse-mapping
// name of the source address (in-addr.arpa or ip6.arpa), follows CNAMEs and
// DNAMEs, resolves relay names with A and AAAA queries, and returns the
// relays in the order a gateway should try them: by precedence, random among
// equals.
//
// It carries its own small DNS client rather than a DNS library because it
// runs on routers with little flash; it talks to the nameservers in
// /etc/resolv.conf (on OpenWrt, the local dnsmasq) over UDP, retries with a
// randomized exponential timeout (RFC 8777 §2.7), falls back to TCP when an
// answer is truncated, and rate-limits its queries (RFC 8777 §2.4.2).
package driad

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Errors that Lookup wraps; use errors.Is.
var (
	// ErrNotFound: the source has no AMTRELAY records (NXDOMAIN or no
	// data), or none that a gateway can use.
	ErrNotFound = errors.New("no AMTRELAY records")
	// ErrNoRelay: the source's most preferred record is of type 0, which
	// says that no AMT relay should be used for its traffic.
	ErrNoRelay = errors.New("source publishes no AMT relay")
	// ErrMalformed: a DNS message or record that cannot be decoded.
	ErrMalformed = errors.New("malformed DNS data")
	// ErrUnknownType: an AMTRELAY record of an unassigned relay type.
	ErrUnknownType = errors.New("unknown AMTRELAY relay type")
	// ErrServer: every nameserver answered with an error (SERVFAIL,
	// REFUSED, ...).
	ErrServer = errors.New("DNS server error")
	// ErrTimeout: no nameserver answered in time.
	ErrTimeout = errors.New("DNS timeout")
	// ErrCNAMEChain: more than maxChain CNAME/DNAME steps, or a loop.
	ErrCNAMEChain = errors.New("CNAME chain too long")
)

// maxChain bounds the CNAME and DNAME steps of one lookup.
const maxChain = 8

// Config configures a Resolver. The zero value reads /etc/resolv.conf.
type Config struct {
	// Nameservers to ask, in order. Empty: the nameservers of ResolvConf,
	// or 127.0.0.1:53 and [::1]:53 if it names none.
	Nameservers []netip.AddrPort
	// ResolvConf is the resolver configuration file read when Nameservers
	// is empty (default /etc/resolv.conf, which OpenWrt also has).
	ResolvConf string
	// Timeout is the initial wait for an answer. Attempt n waits a random
	// time in [Timeout, min(Timeout·2ⁿ, MaxTimeout)] (RFC 8777 §2.7).
	// Default 1 s, or resolv.conf's "options timeout:".
	Timeout time.Duration
	// MaxTimeout caps the wait (default 120 s, RFC 8777 §2.7).
	MaxTimeout time.Duration
	// Attempts is how many rounds over all nameservers (default 3, or
	// resolv.conf's "options attempts:").
	Attempts int
	// RateLimit is the most queries sent in any 100 ms (default 10, the
	// bound RFC 8777 §2.4.2 sets for gateways).
	RateLimit int
	// LookupHost resolves the name of a type 3 relay. The default sends A
	// and AAAA queries to the same nameservers. net.DefaultResolver's
	// LookupNetIP also fits.
	LookupHost func(ctx context.Context, host string) ([]netip.Addr, error)
	Logger     *slog.Logger
}

// Resolver looks up AMTRELAY records. It is safe for concurrent use.
type Resolver struct {
	servers    []netip.AddrPort
	timeout    time.Duration
	maxTimeout time.Duration
	attempts   int
	lookupHost func(ctx context.Context, host string) ([]netip.Addr, error)
	limit      *limiter
	log        *slog.Logger
}

// New returns a Resolver for cfg.
func New(cfg Config) (*Resolver, error) {
	r := &Resolver{
		servers:    slices.Clone(cfg.Nameservers),
		timeout:    cfg.Timeout,
		maxTimeout: cfg.MaxTimeout,
		attempts:   cfg.Attempts,
		lookupHost: cfg.LookupHost,
		log:        cfg.Logger,
	}
	if r.log == nil {
		r.log = slog.Default()
	}
	if len(r.servers) == 0 {
		path := cfg.ResolvConf
		if path == "" {
			path = "/etc/resolv.conf"
		}
		rc, err := readResolvConf(path)
		if err != nil {
			return nil, fmt.Errorf("driad: %w", err)
		}
		r.servers = rc.servers
		if r.timeout == 0 {
			r.timeout = rc.timeout
		}
		if r.attempts == 0 {
			r.attempts = rc.attempts
		}
	}
	if len(r.servers) == 0 {
		r.servers = []netip.AddrPort{
			netip.MustParseAddrPort("127.0.0.1:53"),
			netip.MustParseAddrPort("[::1]:53"),
		}
	}
	for _, s := range r.servers {
		if !s.IsValid() || s.Port() == 0 {
			return nil, fmt.Errorf("driad: nameserver %v: want address and port", s)
		}
	}
	if r.timeout <= 0 {
		r.timeout = time.Second
	}
	if r.maxTimeout <= 0 {
		r.maxTimeout = 120 * time.Second
	}
	r.maxTimeout = max(r.maxTimeout, r.timeout)
	if r.attempts <= 0 {
		r.attempts = 3
	}
	rate := cfg.RateLimit
	if rate <= 0 {
		rate = 10
	}
	r.limit = newLimiter(rate, 100*time.Millisecond)
	if r.lookupHost == nil {
		r.lookupHost = r.lookupAddrs
	}
	return r, nil
}

// Nameservers returns the nameservers the resolver asks.
func (r *Resolver) Nameservers() []netip.AddrPort { return slices.Clone(r.servers) }

// ReverseName returns the reverse-mapping domain name of addr:
// "4.3.2.1.in-addr.arpa." for 1.2.3.4 (RFC 1035 §3.5; IPv4-mapped
// addresses count as IPv4) and the 32-nibble ip6.arpa name for IPv6
// (RFC 3596 §2.5). The zone is ignored. It returns "" for an invalid addr.
func ReverseName(addr netip.Addr) string {
	addr = addr.Unmap()
	var sb strings.Builder
	switch {
	case addr.Is4():
		a := addr.As4()
		for i := 3; i >= 0; i-- {
			sb.WriteString(strconv.Itoa(int(a[i])))
			sb.WriteByte('.')
		}
		sb.WriteString("in-addr.arpa.")
	case addr.Is6():
		const hexDigits = "0123456789abcdef"
		a := addr.As16()
		for i := 15; i >= 0; i-- {
			sb.WriteByte(hexDigits[a[i]&0xf])
			sb.WriteByte('.')
			sb.WriteByte(hexDigits[a[i]>>4])
			sb.WriteByte('.')
		}
		sb.WriteString("ip6.arpa.")
	default:
		return ""
	}
	return sb.String()
}

// Lookup returns the relays published for source, most preferred first:
// ordered by precedence, shuffled among equal precedence (RFC 8777 §2.3.2),
// type 3 names replaced by one entry per resolved address (A before AAAA),
// with the precedence and D bit of their record. Records of unassigned
// types are ignored; a type 0 record ends the list (relays after it are
// not to be used), and ErrNoRelay says it came first.
func (r *Resolver) Lookup(ctx context.Context, source netip.Addr) ([]Relay, error) {
	name := ReverseName(source)
	if name == "" || source.Unmap().IsUnspecified() || source.IsMulticast() {
		return nil, fmt.Errorf("driad: source %v is not a unicast address", source)
	}
	resp, recs, err := r.resolve(ctx, name, TypeAMTRELAY)
	if err != nil {
		return nil, fmt.Errorf("driad: AMTRELAY %s: %w", name, err)
	}
	var relays []Relay
	var bad error
	for _, rec := range recs {
		rel, err := parseRDATA(resp.msg, rec.rdOff, rec.rdEnd, true)
		if err != nil {
			// One broken or unknown record must not hide the others.
			r.log.Debug("driad: ignoring AMTRELAY record", "name", name, "err", err)
			if !errors.Is(err, ErrUnknownType) {
				bad = err
			}
			continue
		}
		if (rel.Type == RelayIPv4 || rel.Type == RelayIPv6) && !usable(rel.Addr) {
			r.log.Debug("driad: ignoring AMTRELAY record with unusable address", "name", name, "relay", rel)
			continue
		}
		relays = append(relays, rel)
	}
	if len(relays) == 0 {
		if bad != nil {
			return nil, fmt.Errorf("driad: AMTRELAY %s: %w", name, bad)
		}
		return nil, fmt.Errorf("driad: AMTRELAY %s: no usable record: %w", name, ErrNotFound)
	}
	Order(relays)
	for i, rel := range relays {
		if rel.Type == RelayNone {
			relays = relays[:i]
			break
		}
	}
	if len(relays) == 0 {
		return nil, fmt.Errorf("driad: AMTRELAY %s: %w", name, ErrNoRelay)
	}
	out := make([]Relay, 0, len(relays))
	var lastErr error
	for _, rel := range relays {
		if rel.Type != RelayName {
			out = append(out, rel)
			continue
		}
		addrs, err := r.LookupHost(ctx, rel.Name)
		if err != nil {
			r.log.Debug("driad: cannot resolve relay name", "relay", rel.Name, "err", err)
			lastErr = err
			continue
		}
		for _, a := range addrs {
			rel.Addr = a
			out = append(out, rel)
		}
	}
	if len(out) == 0 {
		if lastErr != nil {
			return nil, fmt.Errorf("driad: AMTRELAY %s: relay names do not resolve: %w", name, lastErr)
		}
		return nil, fmt.Errorf("driad: AMTRELAY %s: relay names have no addresses: %w", name, ErrNotFound)
	}
	return out, nil
}

// LookupHost resolves a relay's host name (Config.LookupHost; by default
// A and AAAA queries to the resolver's nameservers) and returns the
// addresses a gateway can send to, IPv4 first: most gateways (and ours on
// OpenWrt) reach relays over IPv4, and RFC 8777 leaves the order within a
// precedence open. It is how type 3 AMTRELAY names are resolved, and it
// serves relays configured by name the same way.
func (r *Resolver) LookupHost(ctx context.Context, host string) ([]netip.Addr, error) {
	addrs, err := r.lookupHost(ctx, host)
	if err != nil {
		return nil, err
	}
	// sort.SliceStable, not slices.SortStableFunc: each element type
	// slices sorts instantiates its own sorting code on flash.
	sort.SliceStable(addrs, func(i, j int) bool { return family(addrs[i]) < family(addrs[j]) })
	out := addrs[:0]
	for _, a := range addrs {
		if usable(a) {
			out = append(out, a.Unmap())
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no usable address: %w", host, ErrNotFound)
	}
	return out, nil
}

// Order sorts relays in place by precedence, in a random order among equal
// precedence (RFC 8777 §2.3.2: a non-deterministic choice spreads the load
// over the relays an operator lists with the same precedence).
func Order(relays []Relay) {
	rand.Shuffle(len(relays), func(i, j int) { relays[i], relays[j] = relays[j], relays[i] })
	sort.SliceStable(relays, func(i, j int) bool { return relays[i].Precedence < relays[j].Precedence })
}

func family(a netip.Addr) int {
	if a.Unmap().Is4() {
		return 4
	}
	return 6
}

func usable(a netip.Addr) bool {
	a = a.Unmap()
	return a.IsValid() && !a.IsUnspecified() && !a.IsMulticast()
}

// resolve asks for name/qtype and follows CNAMEs and DNAMEs (RFC 8777
// §2.6 requires both), within the answer and by asking again for the
// target when the server did not include it.
func (r *Resolver) resolve(ctx context.Context, name string, qtype uint16) (*response, []record, error) {
	steps := 0
	seen := map[string]bool{}
	for {
		resp, err := r.exchange(ctx, name, qtype)
		if err != nil {
			return nil, nil, err
		}
		if resp.rcode == rcodeNXDomain {
			return nil, nil, fmt.Errorf("%s: NXDOMAIN: %w", name, ErrNotFound)
		}
		cur := name
	chain:
		for {
			key := strings.ToLower(canonical(cur))
			if seen[key] {
				return nil, nil, fmt.Errorf("%s: loop: %w", cur, ErrCNAMEChain)
			}
			seen[key] = true
			for _, rr := range resp.answers {
				if rr.class != classIN {
					continue
				}
				var next string
				switch rr.typ {
				case typeCNAM:
					if !equalName(rr.name, cur) {
						continue
					}
					t, end, err := readName(resp.msg[:rr.rdEnd], rr.rdOff, true)
					if err != nil || end != rr.rdEnd {
						return nil, nil, fmt.Errorf("CNAME of %s: %w", cur, ErrMalformed)
					}
					next = t
				case typeDNAM:
					t, end, err := readName(resp.msg[:rr.rdEnd], rr.rdOff, true)
					if err != nil || end != rr.rdEnd {
						return nil, nil, fmt.Errorf("DNAME of %s: %w", rr.name, ErrMalformed)
					}
					s, ok := dnameTarget(cur, rr.name, t)
					if !ok {
						continue
					}
					next = s
				default:
					continue
				}
				if steps++; steps > maxChain {
					return nil, nil, fmt.Errorf("%s: %w", name, ErrCNAMEChain)
				}
				cur = next
				continue chain
			}
			break
		}
		var recs []record
		for _, rr := range resp.answers {
			if rr.typ == qtype && rr.class == classIN && equalName(rr.name, cur) {
				recs = append(recs, rr)
			}
		}
		if len(recs) > 0 {
			return resp, recs, nil
		}
		if cur == name {
			return nil, nil, fmt.Errorf("%s: no records of type %d: %w", name, qtype, ErrNotFound)
		}
		// The server gave the alias but not what it points to: ask again.
		name = cur
		delete(seen, strings.ToLower(canonical(cur)))
	}
}

// lookupAddrs is the default LookupHost: A then AAAA queries.
func (r *Resolver) lookupAddrs(ctx context.Context, host string) ([]netip.Addr, error) {
	var out []netip.Addr
	var errs []error
	for _, qt := range []uint16{typeA, typeAAAA} {
		resp, recs, err := r.resolve(ctx, canonical(host), qt)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, rr := range recs {
			b := resp.msg[rr.rdOff:rr.rdEnd]
			switch {
			case qt == typeA && len(b) == 4:
				out = append(out, netip.AddrFrom4([4]byte(b)))
			case qt == typeAAAA && len(b) == 16:
				out = append(out, netip.AddrFrom16([16]byte(b)))
			default:
				errs = append(errs, fmt.Errorf("%s: address record of %d bytes: %w", host, len(b), ErrMalformed))
			}
		}
	}
	if len(out) == 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

// attemptTimeout is the wait for attempt n (from 0): random in
// [Timeout, min(Timeout·2ⁿ, MaxTimeout)].
func (r *Resolver) attemptTimeout(n int) time.Duration {
	hi := r.timeout
	for i := 0; i < n && hi < r.maxTimeout; i++ {
		hi *= 2
	}
	hi = min(hi, r.maxTimeout)
	if hi <= r.timeout {
		return r.timeout
	}
	return r.timeout + rand.N(hi-r.timeout+1)
}
