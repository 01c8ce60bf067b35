// Package mcrecv is the beacon's receiver of objects sent by multicast
// (design.md "Multicast object transport"). castclient asks castd for an
// object with the Blockcast-Multicast header; when castd answers with an
// offer (mcproto), Take verifies the signed manifest, joins the SSM channel
// natively on the WAN and/or through the beacon's AMT gateway, opens the
// unicast DTLS channel to castd for early media and repairs, feeds every ALC
// packet to one objrecv.Assembler and hands the cache a normal
// *http.Response whose body streams the decoded object in order, so end
// users waiting on the miss get bytes as blocks complete and the object is
// stored through the cache's normal fill. What multicast and repairs do not
// deliver in time comes by signed HTTP range requests, so an end user always
// gets the object, and nothing that fails the manifest's checks is served.
package mcrecv

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/blockcast/beacon/shared/alc"
	"github.com/blockcast/beacon/shared/amt"
	"github.com/blockcast/beacon/shared/fec"
	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/manifest"
	"github.com/blockcast/beacon/shared/mcproto"
	"github.com/blockcast/beacon/shared/objrecv"
	"github.com/blockcast/beacon/shared/protocol"
)

// Mode says how the beacon receives multicast (--multicast-receive).
type Mode uint8

// Modes.
const (
	Auto   Mode = iota // native first; AMT as well when nothing arrives natively within NativeWait
	Native             // the WAN carries multicast: native joins only
	AMT                // through the AMT gateway only
	Off                // never ask castd for multicast
)

var modeNames = [...]string{Auto: "auto", Native: "native", AMT: "amt", Off: "off"}

func (m Mode) String() string {
	if int(m) < len(modeNames) {
		return modeNames[m]
	}
	return "Mode(" + strconv.Itoa(int(m)) + ")"
}

// ParseMode parses auto, native, amt or off.
func ParseMode(s string) (Mode, error) {
	for i, n := range modeNames {
		if s == n {
			return Mode(i), nil
		}
	}
	return Off, fmt.Errorf("multicast mode %q: want auto, native, amt or off", s)
}

// Defaults of Options' zero fields.
const (
	DefaultNativeWait  = 2 * time.Second
	DefaultNackGap     = 300 * time.Millisecond
	DefaultStall       = 10 * time.Second
	DefaultEarlyBlocks = 2
	DefaultMaxObjects  = 4
	// DefaultMaxBuffered bounds the decoded bytes waiting for the cache's
	// fill to read them, per object.
	DefaultMaxBuffered = 1 << 20
)

// Errors Take returns; castclient then fetches the object by unicast.
var (
	ErrRefused = errors.New("mcrecv: offer refused")
	ErrOff     = errors.New("mcrecv: multicast reception is off")
)

// Gateway is what the receiver uses of the beacon's AMT gateway
// (*amtgw.Gateway).
type Gateway interface {
	Join(ch amt.Channel, relay netip.AddrPort, reemit bool) error
	Leave(ch amt.Channel) error
	Joined() []amt.Channel
	Subscribe(fn func(ch amt.Channel, d amt.Datagram)) (cancel func())
}

// Fetcher is a signed GET of a content key from castd without the
// multicast header (castclient's Fetch with a Range in h): the fallback.
type Fetcher func(ctx context.Context, key string, h http.Header) (*http.Response, error)

// Options configure a Receiver.
type Options struct {
	Mode      Mode
	Interface string // WAN interface for native joins; "": the one the kernel routes the group to (the default route's)
	Key       *identity.Keypair
	// CastKey returns the pinned CAST key, false while none is known
	// (before the first registration): no offer is asked for then.
	CastKey func() (identity.PublicKey, bool)
	Gateway Gateway // nil: no AMT
	Fetch   Fetcher // required: the HTTP range fallback
	Logger  *slog.Logger

	NativeWait  time.Duration // auto: native silence before AMT is tried too
	NackGap     time.Duration // how long a block may stay incomplete behind the front, or the channel quiet, before a NACK; also the least time between NACKs
	Stall       time.Duration // no progress for this long: HTTP fallback
	EarlyBlocks int           // blocks asked for over DTLS while the join takes effect
	MaxObjects  int           // objects received at once; more offers are refused (unicast)
	MaxBuffered int

	// ListenNative replaces the native SSM join (tests: a loopback
	// socket standing in for the channel).
	ListenNative func(ch manifest.Channel, iface string) (nativeConn, error)
	// DTLSDialer dials castd's unicast channel; zero value: dtlschan's defaults.
	DTLSTimeout time.Duration
	Now         func() time.Time
}

// Receiver takes castd's offers. Safe for concurrent use.
type Receiver struct {
	opts   Options
	log    *slog.Logger
	codec  *fec.Codec
	replay manifest.Replay // in memory: a restart forgets, expiry bounds what that lets back in
	slots  chan struct{}

	chans *channels
	uni   *unicastPool

	mu     sync.Mutex
	active map[*object]struct{}
	done   objrecv.Stats // summed over finished objects
	c      counters
}

type counters struct {
	offers   sync.Map // result -> *atomic.Uint64
	source   atomic.Uint64
	unwanted atomic.Uint64
	nacks    atomic.Uint64
	outcomes sync.Map // outcome -> *atomic.Uint64
	joins    sync.Map // via -> *atomic.Uint64
}

func inc(m *sync.Map, k string) {
	v, _ := m.LoadOrStore(k, new(atomic.Uint64))
	v.(*atomic.Uint64).Add(1)
}

// New returns a Receiver.
func New(opts Options) (*Receiver, error) {
	if opts.Mode > Off {
		return nil, fmt.Errorf("mcrecv: mode %d", opts.Mode)
	}
	if opts.Mode != Off {
		if opts.Key == nil || opts.CastKey == nil || opts.Fetch == nil {
			return nil, errors.New("mcrecv: Key, CastKey and Fetch are required")
		}
		if opts.Mode == AMT && opts.Gateway == nil {
			return nil, errors.New("mcrecv: mode amt needs the AMT gateway")
		}
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&opts.NativeWait, DefaultNativeWait)
	def(&opts.NackGap, DefaultNackGap)
	def(&opts.Stall, DefaultStall)
	if opts.EarlyBlocks <= 0 {
		opts.EarlyBlocks = DefaultEarlyBlocks
	}
	if opts.MaxObjects <= 0 {
		opts.MaxObjects = DefaultMaxObjects
	}
	if opts.MaxBuffered <= 0 {
		opts.MaxBuffered = DefaultMaxBuffered
	}
	if opts.ListenNative == nil {
		opts.ListenNative = listenSSM
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	r := &Receiver{opts: opts, log: opts.Logger, codec: fec.NewCodec(), slots: make(chan struct{}, opts.MaxObjects),
		active: map[*object]struct{}{}}
	r.done.Bytes, r.done.Packets, r.done.Rejected = map[string]uint64{}, map[string]uint64{}, map[objrecv.Reason]uint64{}
	r.chans = newChannels(r)
	r.uni = newUnicastPool(r)
	return r, nil
}

// Ready reports whether to ask castd for an offer: reception is on and
// the CAST key that signs manifests is known.
func (r *Receiver) Ready() bool {
	if r == nil || r.opts.Mode == Off {
		return false
	}
	_, ok := r.opts.CastKey()
	return ok
}

// Mode is the configured mode.
func (r *Receiver) Mode() Mode { return r.opts.Mode }

// refuse counts and logs a refused offer and returns the error castclient
// falls back on.
func (r *Receiver) refuse(key, result string, err error) error {
	inc(&r.c.offers, result)
	r.log.Warn("multicast offer refused; fetching by unicast", "key", key, "reason", result, "err", err)
	return fmt.Errorf("%w (%s): %w", ErrRefused, result, err)
}

// Take turns castd's offer for key (a 200 of mcproto.OfferType; Take
// closes its body) into the object's response, whose body streams the
// object as it is received. ctx bounds the whole reception. An error means
// the offer was refused (bad signature, replay, malformed, too busy): fetch
// by unicast.
func (r *Receiver) Take(ctx context.Context, key string, resp *http.Response) (*http.Response, error) {
	defer resp.Body.Close()
	if r.opts.Mode == Off {
		return nil, ErrOff
	}
	offer, err := mcproto.DecodeOffer(resp.Body)
	if err != nil {
		return nil, r.refuse(key, "malformed", err)
	}
	cast, ok := r.opts.CastKey()
	if !ok {
		return nil, r.refuse(key, "no_cast_key", errors.New("no CAST key pinned yet"))
	}
	var p alc.Packet
	if err := p.Decode(offer.Manifest); err != nil {
		return nil, r.refuse(key, "malformed", err)
	}
	if p.TOI != manifest.ManifestTOI {
		return nil, r.refuse(key, "malformed", fmt.Errorf("manifest packet on TOI %d", p.TOI))
	}
	m, err := manifest.FromPacket(&p)
	if err != nil {
		return nil, r.refuse(key, "malformed", err)
	}
	// objrecv.New checks the signature (one ed25519 verify) before
	// anything else looks at the manifest; the replay guard remembers
	// what it accepts, so it sees only signed manifests.
	pw := newPipe(r.opts.MaxBuffered)
	clock := newCoarseClock(r.opts.Now())
	a, err := objrecv.New(m, cast, pw, objrecv.Config{Codec: r.codec, Stall: r.opts.Stall, Now: clock.Now})
	if errors.Is(err, manifest.ErrSignature) {
		r.log.Error("multicast manifest is not signed by the pinned CAST key: refusing the offer, fetching by unicast",
			"key", key, "manifest", m.String(), "cast_key", cast.String(), "err", err)
		return nil, r.refuse(key, "bad_signature", err)
	}
	if err != nil {
		return nil, r.refuse(key, "malformed", err)
	}
	if m.URL != key {
		// A genuine manifest of another object must not fill this key.
		return nil, r.refuse(key, "wrong_object", fmt.Errorf("manifest is for %q", m.URL))
	}
	if err := checkChannel(m.Channel); err != nil {
		return nil, r.refuse(key, "malformed", err)
	}
	if err := r.replay.Check(m, r.opts.Now()); err != nil {
		result := "replay"
		if errors.Is(err, manifest.ErrExpired) {
			result = "expired"
		}
		return nil, r.refuse(key, result, err)
	}
	select {
	case r.slots <- struct{}{}:
	default:
		return nil, r.refuse(key, "busy", fmt.Errorf("%d objects in reception", cap(r.slots)))
	}
	inc(&r.c.offers, "taken")
	o := newObject(r, key, offer, m, a, pw)
	o.clock = clock
	r.mu.Lock()
	r.active[o] = struct{}{}
	r.mu.Unlock()
	r.log.Info("multicast offer taken", "key", key, "manifest", m.String(), "unicast", offer.Unicast, "amt_relay", offer.AMTRelay)
	go o.run(ctx)
	return &http.Response{
		Status: "200 OK", StatusCode: http.StatusOK, Proto: resp.Proto, ProtoMajor: resp.ProtoMajor, ProtoMinor: resp.ProtoMinor,
		Header: responseHeader(m, r.opts.Now()), ContentLength: int64(m.ContentLength), Body: pw, Request: resp.Request,
	}, nil
}

// responseHeader is what the cache stores for the object: what the manifest
// says of it, with its expiry as the freshness lifetime.
func responseHeader(m *manifest.Manifest, now time.Time) http.Header {
	h := http.Header{}
	h.Set("Content-Length", strconv.FormatUint(m.ContentLength, 10))
	if m.ContentType != "" {
		h.Set("Content-Type", m.ContentType)
	}
	if m.ETag != "" {
		h.Set("Etag", m.ETag)
	}
	if !m.LastModified.IsZero() {
		h.Set("Last-Modified", m.LastModified.UTC().Format(http.TimeFormat))
	}
	h.Set("Date", now.UTC().Format(http.TimeFormat))
	h.Set("Expires", m.Expires.UTC().Format(http.TimeFormat))
	age := max(int64(m.Expires.Sub(now)/time.Second), 0)
	h.Set("Cache-Control", "max-age="+strconv.FormatInt(age, 10))
	h.Set(protocol.HeaderDelivery, protocol.DeliveryMulticast) // for delivery receipts
	return h
}

func checkChannel(c manifest.Channel) error {
	s, g := c.Source, c.Group
	switch {
	case !s.IsValid() || !g.IsValid() || s.Is4() != g.Is4():
		return fmt.Errorf("channel %v@%v: addresses of different families", s, g)
	case !g.IsMulticast():
		return fmt.Errorf("channel group %v is not multicast", g)
	case s.IsMulticast() || s.IsUnspecified():
		return fmt.Errorf("channel source %v is not unicast", s)
	case c.Port == 0:
		return errors.New("channel port 0")
	}
	return nil
}

// finish moves a finished object's counters into the totals.
func (r *Receiver) finish(o *object, outcome string) {
	st := o.a.Stats()
	r.mu.Lock()
	delete(r.active, o)
	addStats(&r.done, st)
	r.mu.Unlock()
	inc(&r.c.outcomes, outcome)
	<-r.slots
}

func addStats(dst *objrecv.Stats, s objrecv.Stats) {
	for k, v := range s.Bytes {
		dst.Bytes[k] += v
	}
	for k, v := range s.Packets {
		dst.Packets[k] += v
	}
	for k, v := range s.Rejected {
		dst.Rejected[k] += v
	}
	dst.Duplicates += s.Duplicates
	dst.ParityUsed += s.ParityUsed
	dst.ParityByte += s.ParityByte
	dst.HashParts += s.HashParts
	dst.Blocks += s.Blocks
	dst.Written += s.Written
}
