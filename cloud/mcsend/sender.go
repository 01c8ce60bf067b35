package mcsend

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"sync"
	"time"

	"github.com/blockcast/beacon/cloud/channels"
	"github.com/blockcast/beacon/shared/fec"
	"github.com/blockcast/beacon/shared/manifest"
	"github.com/blockcast/beacon/shared/mcproto"
	"github.com/blockcast/beacon/shared/ratelimit"
)

// Sender runs object sessions and the repair service of one castd.
type Sender struct {
	o   Options
	log *slog.Logger
	st  counters

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	closed   bool
	byKey    map[string]*Session
	byObj    map[mcproto.Object]*Session
	starting map[string]chan struct{} // keys whose session is being built
	nodes    map[string]*node
	outboxes map[string]*outbox
	nextTOI  uint32
	lastSeq  uint64
	started  uint64
}

// node is what the service keeps per node: its message budget.
type node struct {
	bucket *ratelimit.Bucket
}

// New returns a Sender; Close stops it.
func New(o Options) (*Sender, error) {
	if o.Key == nil {
		return nil, fmt.Errorf("%w: no signing key", ErrBadOptions)
	}
	if o.Alloc == nil {
		return nil, fmt.Errorf("%w: no channel allocator", ErrBadOptions)
	}
	if o.Native == nil && o.AMT == nil {
		return nil, fmt.Errorf("%w: no sink (native or AMT)", ErrBadOptions)
	}
	if o.Codec == nil {
		o.Codec = fec.NewCodec()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	switch {
	case o.Parity == 0:
		o.Parity = DefaultParity
	case o.Parity < 0:
		o.Parity = 0
	case o.Parity > 1 || math.IsNaN(o.Parity):
		return nil, fmt.Errorf("%w: proactive parity %v, want 0..1", ErrBadOptions, o.Parity)
	}
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&o.MinPasses, DefaultMinPasses)
	def(&o.ManifestEvery, DefaultManifestEvery)
	def(&o.MaxEarly, DefaultMaxEarly)
	def(&o.NackBurst, DefaultNackBurst)
	def(&o.MaxRanges, DefaultMaxRanges)
	def(&o.MaxPending, DefaultMaxPending)
	def(&o.MaxNodes, DefaultMaxNodes)
	if o.Idle <= 0 {
		o.Idle = DefaultIdle
	}
	switch {
	case o.JoinGrace == 0:
		o.JoinGrace = DefaultJoinGrace
	case o.JoinGrace < 0:
		o.JoinGrace = 0
	}
	if o.NackWindow <= 0 {
		o.NackWindow = DefaultNackWindow
	}
	if o.NackRate <= 0 {
		o.NackRate = DefaultNackRate
	}
	if o.RepairRate <= 0 {
		o.RepairRate = DefaultRepairRate
	}
	if o.ManifestTTL <= 0 {
		o.ManifestTTL = DefaultManifestTTL
	}
	s := &Sender{o: o, log: o.Log, byKey: map[string]*Session{}, byObj: map[mcproto.Object]*Session{},
		starting: map[string]chan struct{}{}, nodes: map[string]*node{}, outboxes: map[string]*outbox{}}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

// Close stops every session (releasing their leases) and waits for them.
func (s *Sender) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	s.wg.Wait()
	return nil
}

// Stats returns the Sender's counters, all sessions included.
func (s *Sender) Stats() Stats {
	st := s.st.snapshot()
	s.mu.Lock()
	defer s.mu.Unlock()
	st.Sessions, st.Active, st.Nodes = s.started, len(s.byKey), len(s.nodes)
	return st
}

// Lookup returns the running session of key, if any.
func (s *Sender) Lookup(key string) (*Session, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ss, ok := s.byKey[key]
	return ss, ok
}

// Offer returns key's running session, or starts one for obj: it acquires
// a channel lease, builds and signs the manifest (reading the whole object
// once) and starts the carousel. A session lives at least Idle after the
// last Offer that returned it, so the beacons offered it find it when
// they join. ctx bounds only the wait for a session of
// the same key that another caller is starting; the session itself lives
// until it is idle or the Sender closes.
func (s *Sender) Offer(ctx context.Context, obj Object) (*Session, error) {
	if err := checkObject(obj); err != nil {
		return nil, err
	}
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return nil, ErrClosed
		}
		if ss := s.byKey[obj.Key]; ss != nil {
			s.mu.Unlock()
			ss.touch(s.o.Now())
			return ss, nil
		}
		wait, busy := s.starting[obj.Key]
		if !busy {
			done := make(chan struct{})
			s.starting[obj.Key] = done
			s.mu.Unlock()
			ss, err := s.start(obj)
			s.mu.Lock()
			delete(s.starting, obj.Key)
			close(done)
			s.mu.Unlock()
			return ss, err
		}
		s.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func checkObject(obj Object) error {
	switch {
	case obj.R == nil:
		return fmt.Errorf("%w: no reader", ErrBadObject)
	case obj.Size < 0 || uint64(obj.Size) > fec.MaxTransferLength:
		return fmt.Errorf("%w: size %d", ErrBadObject, obj.Size)
	case obj.Key == "" || len(obj.Key) > channels.MaxKeyLen:
		return fmt.Errorf("%w: key of %d bytes", ErrBadObject, len(obj.Key))
	}
	return nil
}

// start acquires the lease, builds the manifest and starts the carousel.
func (s *Sender) start(obj Object) (*Session, error) {
	now := s.o.Now()
	lease, err := s.o.Alloc.Acquire(obj.Key, now)
	if errors.Is(err, channels.ErrHeld) {
		return nil, fmt.Errorf("%w: %s: %w", ErrHeldElsewhere, obj.Key, err)
	}
	if err != nil {
		return nil, fmt.Errorf("mcsend: %s: %w", obj.Key, err)
	}
	release := func() {
		if err := s.o.Alloc.Release(lease.ID, s.o.Now()); err != nil {
			s.log.Warn("multicast lease release failed", "key", obj.Key, "err", err)
		}
	}
	expires := obj.Expires
	if expires.IsZero() {
		expires = now.Add(s.o.ManifestTTL)
	}
	if !expires.After(now.Add(time.Second)) {
		release()
		return nil, fmt.Errorf("%w: %s expires at %v, not after now", ErrBadObject, obj.Key, expires)
	}
	s.mu.Lock()
	s.nextTOI = s.nextTOI%(manifest.HashListBit-1) + 1 // 1..2^31-1
	toi := s.nextTOI
	// Sequence: increasing for the URL, also across restarts (Replay
	// refuses a lower one).
	seq := max(s.lastSeq+1, uint64(now.UnixMicro()))
	s.lastSeq = seq
	s.mu.Unlock()
	m, lists, err := manifest.Build(obj.R, obj.Size, manifest.Params{
		URL: obj.URL, ContentType: obj.ContentType, ETag: obj.ETag, LastModified: obj.LastModified,
		Sequence: seq, Issued: now, Expires: expires, TSI: lease.TSI, TOI: toi, Channel: lease.Channel,
		SymbolLen: s.o.SymbolLen, MaxBlockLen: s.o.MaxBlockLen,
	}, s.o.Key, s.o.Codec)
	if err != nil {
		release()
		return nil, fmt.Errorf("%w: %s: %w", ErrBadObject, obj.Key, err)
	}
	ss, err := newSession(s, obj, lease, m, lists, now)
	if err != nil {
		release()
		return nil, err
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		release()
		return nil, ErrClosed
	}
	s.byKey[obj.Key] = ss
	s.byObj[ss.object()] = ss
	s.started++
	s.wg.Add(1)
	s.mu.Unlock()
	s.log.Info("multicast session started", "key", obj.Key, "manifest", m.String(), "channel", lease.Channel, "tsi", lease.TSI)
	go func() {
		defer s.wg.Done()
		err := ss.run(s.ctx)
		s.mu.Lock()
		delete(s.byKey, obj.Key)
		delete(s.byObj, ss.object())
		s.mu.Unlock()
		release()
		ss.finish(err)
	}()
	return ss, nil
}

// session returns the running session of o.
func (s *Sender) session(o mcproto.Object) *Session {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.byObj[o]
}

// allow takes one message token of node id.
func (s *Sender) allow(id string, now time.Time) (bool, Refusal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.nodes[id]
	if n == nil {
		if len(s.nodes) >= s.o.MaxNodes {
			// Forget a node whose bucket is full: it loses nothing.
			for k, v := range s.nodes {
				if v.bucket.Full(now) {
					delete(s.nodes, k)
					break
				}
			}
			if len(s.nodes) >= s.o.MaxNodes {
				return false, RefuseNodes
			}
		}
		n = &node{bucket: ratelimit.NewBucket(s.o.NackRate, s.o.NackBurst, now)}
		s.nodes[id] = n
	}
	if !n.bucket.Allow(now) {
		return false, RefuseRate
	}
	return true, 0
}

// Forget drops what the service holds for node id (its DTLS session
// ended): its budget and its membership and pending repairs in every
// session.
func (s *Sender) Forget(id string) {
	s.mu.Lock()
	delete(s.nodes, id)
	sessions := make([]*Session, 0, len(s.byKey))
	for _, ss := range s.byKey {
		sessions = append(sessions, ss)
	}
	s.mu.Unlock()
	for _, ss := range sessions {
		ss.leave(id)
	}
}

func (s *Sender) refuse(ss *Session, r Refusal, n uint64) {
	s.st.refused[r].Add(n)
	if ss != nil {
		ss.st.refused[r].Add(n)
	}
}
