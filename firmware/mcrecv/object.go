package mcrecv

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/blockcast/beacon/shared/alc"
	"github.com/blockcast/beacon/shared/fec"
	"github.com/blockcast/beacon/shared/manifest"
	"github.com/blockcast/beacon/shared/mcproto"
	"github.com/blockcast/beacon/shared/objrecv"
)

// Path labels: the Assembler counts verified bytes under them.
const (
	labelMulticast = "multicast"
	labelEarly     = "early"
	labelRepair    = "repair"
	labelFallback  = "fallback"
)

// object is one object in reception.
type object struct {
	r     *Receiver
	key   string
	offer *mcproto.Offer
	m     *manifest.Manifest
	id    mcproto.Object
	a     *objrecv.Assembler
	pw    *pipe
	part  fec.Blocks
	clock *coarseClock // the Assembler's; nil: it reads the real clock

	done   chan struct{} // closed by the first feed that completes the object
	once   sync.Once
	status chan mcproto.Status

	nacked   atomic.Bool   // a NACK went out: unicast packets are repairs from then on
	native   atomic.Uint64 // verified-or-held packets that came natively or by AMT
	pkts     atomic.Uint64 // packets from any path (no clock read per packet: the loop notices quiet)
	joinSent atomic.Bool   // a Join went out: restart the quiet clock
	front    atomic.Int64  // highest SBN seen + 1
	closeObj atomic.Bool   // the sender's end of pass (B flag) was seen
}

func newObject(r *Receiver, key string, offer *mcproto.Offer, m *manifest.Manifest, a *objrecv.Assembler, pw *pipe) *object {
	part, _ := fec.Partition(m.ContentLength, int(m.FEC.SymbolLen), int(m.FEC.MaxBlockLen)) // objrecv.New checked it
	o := &object{r: r, key: key, offer: offer, m: m, id: mcproto.Object{TSI: m.TSI, TOI: m.TOI}, a: a, pw: pw, part: part,
		done: make(chan struct{}), status: make(chan mcproto.Status, 4)}
	return o
}

// feed hands one ALC packet of this object to the Assembler; p is b
// decoded (the caller's, to find the object), which the NACK timing reads.
func (o *object) feed(b []byte, p *alc.Packet, label string) {
	o.note(p)
	err := o.a.Feed(b, label)
	if err == nil && label == labelMulticast {
		o.native.Add(1)
	}
	if errors.Is(err, objrecv.ErrWriter) || o.a.Done() {
		o.finishFeeds()
	}
}

func (o *object) finishFeeds() { o.once.Do(func() { close(o.done) }) }

// note keeps what the NACK timing needs from a packet's header: the
// furthest block the sender has reached and its end of pass.
func (o *object) note(p *alc.Packet) {
	o.pkts.Add(1)
	if p.TOI != uint64(o.m.TOI) {
		return
	}
	if p.SBN < o.part.N {
		for f := o.front.Load(); int64(p.SBN)+1 > f && !o.front.CompareAndSwap(f, int64(p.SBN)+1); f = o.front.Load() {
		}
	}
	if p.CloseObject {
		o.closeObj.Store(true)
	}
}

func (o *object) label() string {
	if o.nacked.Load() {
		return labelRepair
	}
	return labelEarly
}

// run receives the object until it is whole, given up on, or no one wants
// it any more.
func (o *object) run(ctx context.Context) {
	r := o.r
	log := r.log.With("key", o.key, "tsi", o.m.TSI, "toi", o.m.TOI)
	// A write blocked on a reader that stopped reading must not outlive ctx.
	stop := context.AfterFunc(ctx, func() { o.pw.CloseWrite(ctx.Err()) })
	defer stop()
	outcome, err := o.receive(ctx)
	if err == nil && !o.a.Done() {
		err = errors.New("incomplete")
	}
	if err != nil {
		outcome = "failed"
		log.Warn("multicast reception failed", "err", err)
	} else {
		st := o.a.Stats()
		log.Info("multicast object received", "outcome", outcome, "bytes", st.Written,
			"multicast", st.Bytes[labelMulticast], "early", st.Bytes[labelEarly], "repair", st.Bytes[labelRepair],
			"fallback", st.Bytes[labelFallback], "parity_used", st.ParityByte, "rejected", sum(st.Rejected))
	}
	o.pw.CloseWrite(err)
	r.finish(o, outcome)
}

func sum[K comparable](m map[K]uint64) uint64 {
	var n uint64
	for _, v := range m {
		n += v
	}
	return n
}

// receive runs the paths until the object is done. It returns how the
// object came ("multicast": without HTTP, "fallback").
func (o *object) receive(ctx context.Context) (string, error) {
	r := o.r
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := r.opts.Now()

	// The unicast channel first: early media covers the join's delay.
	uni := r.uni.attach(ctx, o)
	defer uni.detach(o)

	var native, viaAMT *subscription
	defer func() {
		if native != nil {
			native.release(o)
		}
		if viaAMT != nil {
			viaAMT.release(o)
		}
	}()
	var err error
	if r.opts.Mode == Auto || r.opts.Mode == Native {
		if native, err = r.chans.subscribe(o, false); err != nil {
			r.log.Warn("multicast: native join failed", "channel", chanString(o.m.Channel), "err", err)
		}
	}
	joinAMT := func() {
		if viaAMT != nil || r.opts.Gateway == nil {
			return
		}
		if viaAMT, err = r.chans.subscribe(o, true); err != nil {
			r.log.Warn("multicast: AMT join failed", "channel", chanString(o.m.Channel), "relay", o.offer.AMTRelay, "err", err)
		}
	}
	if r.opts.Mode == AMT || (r.opts.Mode == Auto && native == nil) {
		joinAMT()
	}

	tick := time.NewTicker(max(o.r.opts.NackGap/2, time.Millisecond))
	defer tick.Stop()
	var lastNack, backoffUntil time.Time
	lastPkt, seen := start, uint64(0)
	fallbackNow := false
	for {
		select {
		case <-ctx.Done():
			uni.leave(o, mcproto.LeaveAborted)
			return "", ctx.Err()
		case <-o.done:
		case st := <-o.status:
			switch st.Code {
			case mcproto.StatusLimited:
				wait := min(max(time.Duration(st.RetryAfterMs)*time.Millisecond, r.opts.NackGap), r.opts.Stall/2)
				backoffUntil = r.opts.Now().Add(wait)
			default: // Unknown or Ended: castd will send no more
				fallbackNow = true
			}
		case <-tick.C:
		}
		if err := o.a.Err(); err != nil {
			uni.leave(o, mcproto.LeaveAborted)
			return "", err
		}
		if o.pw.readerGone() {
			uni.leave(o, mcproto.LeaveAborted)
			return "", errReaderGone
		}
		if o.a.Done() {
			uni.leave(o, mcproto.LeaveDone)
			return "multicast", nil
		}
		now := r.opts.Now()
		if o.clock != nil {
			o.clock.set(now)
		}
		if n := o.pkts.Load(); n != seen || o.joinSent.Swap(false) {
			seen, lastPkt = n, now
		}
		if r.opts.Mode == Auto && viaAMT == nil && o.native.Load() == 0 && now.Sub(start) >= r.opts.NativeWait {
			r.log.Info("multicast: nothing arrived natively; joining through AMT", "channel", chanString(o.m.Channel), "waited", now.Sub(start))
			joinAMT()
		}
		if fallbackNow || o.a.Stalled() {
			uni.leave(o, mcproto.LeaveFallback)
			if err := o.fallback(ctx); err != nil {
				return "", err
			}
			return "fallback", nil
		}
		if now.Before(backoffUntil) || now.Sub(lastNack) < r.opts.NackGap {
			continue
		}
		if ranges := o.nackRanges(now, lastPkt, uni.maxRanges()); len(ranges) > 0 {
			if uni.nack(o, ranges) {
				r.c.nacks.Add(1)
				lastNack = now
			}
		}
	}
}

// nackRanges is what to ask for now: everything missing at the end of a
// pass or when the channel has been quiet for NackGap; otherwise only the
// blocks the sender has moved past.
func (o *object) nackRanges(now, lastPkt time.Time, maxRanges int) []mcproto.Range {
	if maxRanges <= 0 {
		return nil
	}
	quiet := now.Sub(lastPkt) >= o.r.opts.NackGap
	all := quiet || o.closeObj.Load()
	front := uint32(o.front.Load())
	var out []mcproto.Range
	for _, m := range o.a.Missing(maxRanges) {
		if !all && m.SBN+1 >= front {
			break // the sender may still be sending this block
		}
		out = append(out, mcproto.Range{SBN: m.SBN, Kind: mcproto.Kind(m.Kind), First: m.First, Count: m.Count, Need: m.Need})
	}
	return out
}

// fallback fetches the blocks not yet decoded by signed HTTP range GETs
// and fills them in, in order.
func (o *object) fallback(ctx context.Context) error {
	ranges := o.a.Fallback()
	o.r.log.Info("multicast: fetching the rest by HTTP", "key", o.key, "ranges", len(ranges))
	for _, br := range ranges {
		if err := o.fetchRange(ctx, br); err != nil {
			return fmt.Errorf("fallback range %d+%d: %w", br.Off, br.Len, err)
		}
	}
	if !o.a.Done() {
		return errors.New("fallback left the object incomplete")
	}
	return nil
}

func (o *object) fetchRange(ctx context.Context, br objrecv.ByteRange) error {
	h := http.Header{"Range": {"bytes=" + strconv.FormatUint(br.Off, 10) + "-" + strconv.FormatUint(br.Off+br.Len-1, 10)}}
	if et := o.m.ETag; et != "" && !strings.HasPrefix(et, "W/") {
		h["If-Range"] = []string{et} // the rest must be the same representation
	}
	resp, err := o.r.opts.Fetch(ctx, o.key, h)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusPartialContent {
		return fmt.Errorf("castd answered %s to a range request", resp.Status)
	}
	start, end, total, ok := parseContentRange(resp.Header.Get("Content-Range"))
	if !ok || start != br.Off || end != br.Off+br.Len-1 || total != o.m.ContentLength {
		return fmt.Errorf("castd answered range %q for bytes %d+%d of %d", resp.Header.Get("Content-Range"), br.Off, br.Len, o.m.ContentLength)
	}
	sbn, ok := o.blockAt(br.Off)
	if !ok {
		return fmt.Errorf("offset %d is not a block's start", br.Off)
	}
	buf := make([]byte, 0, o.part.Bytes(sbn))
	for off := br.Off; off < br.Off+br.Len; sbn++ {
		n := o.part.Bytes(sbn)
		buf = buf[:n]
		if _, err := io.ReadFull(resp.Body, buf); err != nil {
			return fmt.Errorf("block %d: %w", sbn, err)
		}
		if err := o.a.Fill(off, buf, labelFallback); err != nil {
			return err
		}
		off += uint64(n)
	}
	return nil
}

// blockAt returns the block starting at byte off.
func (o *object) blockAt(off uint64) (uint32, bool) {
	lo, hi := uint32(0), o.part.N
	for lo < hi {
		mid := lo + (hi-lo)/2
		switch s := o.part.Offset(mid); {
		case s == off:
			return mid, true
		case s < off:
			lo = mid + 1
		default:
			hi = mid
		}
	}
	return 0, false
}

// parseContentRange parses "bytes START-END/TOTAL", canonical decimals
// with START <= END < TOTAL.
func parseContentRange(v string) (start, end, total uint64, ok bool) {
	rest, found := strings.CutPrefix(v, "bytes ")
	rng, tot, found2 := strings.Cut(rest, "/")
	s, e, found3 := strings.Cut(rng, "-")
	if !found || !found2 || !found3 {
		return 0, 0, 0, false
	}
	num := func(x string) (uint64, bool) {
		if x == "" || (len(x) > 1 && x[0] == '0') || x[0] == '+' {
			return 0, false
		}
		n, err := strconv.ParseUint(x, 10, 64)
		return n, err == nil
	}
	var ok1, ok2, ok3 bool
	start, ok1 = num(s)
	end, ok2 = num(e)
	total, ok3 = num(tot)
	if !ok1 || !ok2 || !ok3 || start > end || end >= total {
		return 0, 0, 0, false
	}
	return start, end, total, true
}

func chanString(c manifest.Channel) string {
	return c.Source.String() + "@" + netip.AddrPortFrom(c.Group, c.Port).String()
}
