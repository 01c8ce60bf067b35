// Package receipts is castd's side of signed delivery receipts: it
// verifies each receipt a node sends (signature, sequence, time), refuses
// forged, replayed, future-dated and duplicate ones with a reason, stores
// the rest in bbolt, and cross-checks what each claims against what castd
// knows: the objects the node fetched from castd or could have received by
// multicast, the end users the router sent to it, and whether the monitor
// heard it online. A receipt that claims more than that is kept, and the
// node flagged with the reason; a sample of its records is audited against
// the receipt's Merkle root.
//
// The notes castd takes (objects, redirects, states) are counted in memory
// and committed every FlushEvery, and always before a receipt is checked.
package receipts

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/blockcast/beacon/shared/ctrlmsg"
	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/ratelimit"
	"github.com/blockcast/beacon/shared/receipt"
)

// Defaults for Options.
const (
	DefaultMaxSkew             = 2 * time.Minute
	DefaultMaxAge              = 30 * 24 * time.Hour
	DefaultRequestsPerRedirect = 8
	DefaultRequestSlack        = 32
	DefaultRedirectLead        = 15 * time.Minute
	DefaultAuditSample         = 4
	DefaultFlushEvery          = time.Second
	DefaultObjectTTL           = 30 * 24 * time.Hour
	// A node's receipts may take DefaultByteRate bytes a second of castd's
	// disk, after a burst of DefaultByteBurst (a backlog after an outage):
	// an honest node sends tens of bytes a second on average; a lying one
	// cannot fill the disk with tiny intervals.
	DefaultByteRate  = 1 << 10
	DefaultByteBurst = 8 << 20
	maxFlagsShown    = 16
	maxTracked       = 1 << 20 // nodes whose last state is remembered
)

// Refusal reasons, the keys of Stats.Refused.
const (
	ReasonMalformed   = "malformed"    // not a valid receipt or envelope
	ReasonForged      = "forged"       // signature does not verify, or signed by another key
	ReasonReplayed    = "replayed"     // an envelope or receipt seen before, or older than castd keeps
	ReasonStale       = "stale"        // envelope time outside the window
	ReasonFuture      = "future"       // the receipt ends after castd's now (plus MaxSkew)
	ReasonDuplicate   = "duplicate"    // this sequence number was accepted before (acknowledged again)
	ReasonConflict    = "conflict"     // this sequence number was accepted with other content
	ReasonOverlap     = "overlap"      // the interval overlaps an accepted receipt's
	ReasonUnknownNode = "unknown_node" // not in the registry
	ReasonRateLimited = "rate_limited" // over the node's byte budget (not acknowledged: sent again later)
)

// RefusalReasons lists every refusal reason, for exporting zeros too.
var RefusalReasons = [...]string{ReasonMalformed, ReasonForged, ReasonReplayed, ReasonStale, ReasonFuture,
	ReasonDuplicate, ReasonConflict, ReasonOverlap, ReasonUnknownNode, ReasonRateLimited}

// Flag reasons: a receipt accepted (and acknowledged) whose claims castd
// cannot account for, or a node caught lying.
const (
	FlagUnknownObject   = "unknown_object"          // bytes for an object the node never fetched nor could receive by multicast
	FlagOverRedirects   = "requests_over_redirects" // more requests than the router sent end users
	FlagOffline         = "served_while_offline"    // requests in an interval the node was offline throughout
	FlagAuditFailed     = "audit_failed"            // records that do not prove against the root, or contradict the receipt
	FlagConflict        = "conflicting_receipt"     // two different receipts with one sequence number
	FlagOverlap         = "overlapping_receipt"     // two receipts claiming the same time
	FlagAuditUnanswered = "audit_unavailable"       // the node said it no longer has the records
)

// FlagReasons lists every flag reason.
var FlagReasons = [...]string{FlagUnknownObject, FlagOverRedirects, FlagOffline, FlagAuditFailed, FlagConflict, FlagOverlap, FlagAuditUnanswered}

// Refusal is Accept's error: why a receipt was not taken.
type Refusal struct {
	Reason string
	Err    error
}

func (r *Refusal) Error() string { return "receipt refused (" + r.Reason + "): " + r.Err.Error() }
func (r *Refusal) Unwrap() error { return r.Err }

func refuse(reason string, format string, a ...any) error {
	return &Refusal{Reason: reason, Err: fmt.Errorf(format, a...)}
}

// ReasonOf returns the refusal reason of an error from Accept or Audit.
func ReasonOf(err error) string {
	if r := (*Refusal)(nil); errors.As(err, &r) {
		return r.Reason
	}
	switch {
	case errors.Is(err, ctrlmsg.ErrBadSig), errors.Is(err, ctrlmsg.ErrWrongSigner),
		errors.Is(err, receipt.ErrBadSig), errors.Is(err, receipt.ErrWrongNode):
		return ReasonForged
	case errors.Is(err, ctrlmsg.ErrReplay):
		return ReasonReplayed
	case errors.Is(err, ctrlmsg.ErrStale):
		return ReasonStale
	}
	return ReasonMalformed
}

// Options configure a Book.
type Options struct {
	Path   string // the bbolt file
	Logger *slog.Logger
	Now    func() time.Time
	// MaxSkew is how far past castd's clock a receipt may end
	// (DefaultMaxSkew); MaxAge how long ago (DefaultMaxAge): older ones are
	// refused as replays, since castd no longer keeps what they replay.
	MaxSkew, MaxAge time.Duration
	// A receipt may claim up to RequestsPerRedirect requests per end user
	// the router sent the node (players fetch ranges and segments from the
	// URL they were sent to), counted from RedirectLead before its start,
	// plus RequestSlack (defaults DefaultRequestsPerRedirect,
	// DefaultRedirectLead, DefaultRequestSlack).
	RequestsPerRedirect float64
	RequestSlack        uint64
	RedirectLead        time.Duration
	// AuditSample is how many records of each receipt castd asks for
	// (DefaultAuditSample); negative: none.
	AuditSample int
	// FlushEvery is how often notes are committed (DefaultFlushEvery).
	FlushEvery time.Duration
	// ObjectTTL is how long a fetched object counts as one the node has
	// (DefaultObjectTTL): a revalidation fetches it again.
	ObjectTTL time.Duration
	// ByteRate and ByteBurst bound each node's receipts (DefaultByteRate,
	// DefaultByteBurst); a negative rate: no bound.
	ByteRate  float64
	ByteBurst int
}

func (o *Options) ensureDefaults() {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.MaxSkew == 0 {
		o.MaxSkew = DefaultMaxSkew
	}
	if o.MaxAge == 0 {
		o.MaxAge = DefaultMaxAge
	}
	if o.RequestsPerRedirect == 0 {
		o.RequestsPerRedirect = DefaultRequestsPerRedirect
	}
	if o.RequestSlack == 0 {
		o.RequestSlack = DefaultRequestSlack
	}
	if o.RedirectLead == 0 {
		o.RedirectLead = DefaultRedirectLead
	}
	if o.AuditSample == 0 {
		o.AuditSample = DefaultAuditSample
	}
	if o.FlushEvery == 0 {
		o.FlushEvery = DefaultFlushEvery
	}
	if o.ObjectTTL == 0 {
		o.ObjectTTL = DefaultObjectTTL
	}
	if o.ByteRate == 0 {
		o.ByteRate = DefaultByteRate
	}
	if o.ByteBurst == 0 {
		o.ByteBurst = DefaultByteBurst
	}
}

// Flag is one reason a node's receipt is not taken at its word.
type Flag struct {
	At     time.Time `json:"at"`
	Seq    uint64    `json:"seq"`
	Reason string    `json:"reason"`
	Detail string    `json:"detail"`
}

// View is what the node's API view shows.
type View struct {
	Accepted uint64            `json:"accepted"`
	Refused  map[string]uint64 `json:"refused,omitempty"`
	LastSeq  uint64            `json:"last_seq"`
	LastEnd  time.Time         `json:"last_end"`
	Requests uint64            `json:"requests"` // accepted receipts' totals
	Bytes    uint64            `json:"bytes"`
	Flagged  uint64            `json:"flagged"`         // flags raised, all time
	Flags    []Flag            `json:"flags,omitempty"` // the latest
}

// Stats are castd-wide counters, for /metrics.
type Stats struct {
	Accepted     uint64
	Refused      map[string]uint64 // every RefusalReasons key
	Flagged      map[string]uint64 // every FlagReasons key
	AuditsOK     uint64
	AuditsFailed uint64
}

// Outcome is what castd does after a receipt: acknowledge it, and audit
// these record indices.
type Outcome struct {
	Seq   uint64
	Ack   bool
	Audit []uint64
	Flags []Flag
}

// Book is castd's store of receipts.
type Book struct {
	opts Options
	log  *slog.Logger
	db   *bolt.DB

	notesMu sync.Mutex
	objs    map[string]map[receipt.Hash]int64 // node → key hash → ms
	mcast   map[receipt.Hash]int64
	redirs  map[string]map[int64]uint64 // node → minute → count
	states  map[string][]stateNote
	// lastState is each node's last noted state (online), to note changes only.
	lastState map[string]bool

	mu     sync.Mutex // the views, budgets, and one receipt at a time per castd
	views  map[string]*View
	budget map[string]*ratelimit.Bucket

	accepted, auditsOK, auditsFailed atomic.Uint64
	refused                          [len(RefusalReasons)]atomic.Uint64
	flagged                          [len(FlagReasons)]atomic.Uint64
}

type stateNote struct {
	at     int64
	online bool
}

// Buckets: one per node (its ID), holding sub-buckets; and the objects
// sent by multicast.
var (
	bucketNodes = []byte("nodes")
	bucketMcast = []byte("mcast")
	subReceipts = []byte("r")     // seq → stored
	subObjects  = []byte("obj")   // key hash → ms
	subRedirs   = []byte("redir") // minute → count
	subStates   = []byte("state") // ms → 1 online / 0 not
	keyView     = []byte("view")  // JSON View
)

// stored is a receipt as kept.
type stored struct {
	Signed   json.RawMessage `json:"signed"` // receipt.Signed.Marshal()
	Hash     string          `json:"hash"`
	Received time.Time       `json:"received"`
	Audit    []uint64        `json:"audit,omitempty"`   // indices asked for, until answered
	Audited  string          `json:"audited,omitempty"` // ok, failed, unavailable
}

// Open opens (or creates) the book.
func Open(opts Options) (*Book, error) {
	opts.ensureDefaults()
	if opts.Path == "" {
		return nil, errors.New("receipts: Options.Path is required")
	}
	db, err := bolt.Open(opts.Path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("receipts: open %s: %w", opts.Path, err)
	}
	b := &Book{opts: opts, log: opts.Logger.With("component", "receipts"), db: db,
		objs: map[string]map[receipt.Hash]int64{}, mcast: map[receipt.Hash]int64{},
		redirs: map[string]map[int64]uint64{}, states: map[string][]stateNote{}, views: map[string]*View{},
		budget: map[string]*ratelimit.Bucket{}, lastState: map[string]bool{}}
	err = db.Update(func(tx *bolt.Tx) error {
		nodes, err := tx.CreateBucketIfNotExists(bucketNodes)
		if err != nil {
			return err
		}
		if _, err := tx.CreateBucketIfNotExists(bucketMcast); err != nil {
			return err
		}
		return nodes.ForEachBucket(func(id []byte) error {
			v := &View{}
			if raw := nodes.Bucket(id).Get(keyView); raw != nil {
				if err := json.Unmarshal(raw, v); err != nil {
					b.log.Error("receipts: damaged node summary; starting it again", "node", string(id), "err", err)
					v = &View{}
				}
			}
			b.views[string(id)] = v
			return nil
		})
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("receipts: %s: %w", opts.Path, err)
	}
	return b, nil
}

// Close commits the notes and closes the file.
func (b *Book) Close() error {
	return errors.Join(b.Flush(), b.db.Close())
}

// Run commits notes every FlushEvery, and drops notes too old to matter
// every hour, until ctx ends.
func (b *Book) Run(ctx context.Context) {
	t := time.NewTicker(b.opts.FlushEvery)
	defer t.Stop()
	prune := time.NewTicker(time.Hour)
	defer prune.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := b.Flush(); err != nil {
				b.log.Error("receipts: committing notes", "err", err)
			}
		case <-prune.C:
			if err := b.Prune(); err != nil {
				b.log.Error("receipts: pruning notes", "err", err)
			}
		}
	}
}

// Prune drops notes no receipt castd would still accept can be checked
// against: redirects and states older than MaxAge (the last state before
// the cut is kept: it is the state at the cut), objects older than
// ObjectTTL. Receipts themselves are the books and are kept.
func (b *Book) Prune() error {
	now := b.opts.Now()
	age := uint64(now.Add(-b.opts.MaxAge - b.opts.RedirectLead).UnixMilli())
	objAge := uint64(now.Add(-b.opts.ObjectTTL - b.opts.MaxAge).UnixMilli())
	return b.db.Update(func(tx *bolt.Tx) error {
		del := func(bk *bolt.Bucket, old func(k, v []byte) bool, keepLast bool) error {
			if bk == nil {
				return nil
			}
			var dead [][]byte
			bk.ForEach(func(k, v []byte) error {
				if v != nil && old(k, v) {
					dead = append(dead, k)
				}
				return nil
			})
			if keepLast && len(dead) > 0 {
				dead = dead[:len(dead)-1]
			}
			for _, k := range dead {
				if err := bk.Delete(k); err != nil {
					return err
				}
			}
			return nil
		}
		byValue := func(cut uint64) func(k, v []byte) bool { return func(_, v []byte) bool { return getU64(v) < cut } }
		if err := del(tx.Bucket(bucketMcast), byValue(objAge), false); err != nil {
			return err
		}
		nodes := tx.Bucket(bucketNodes)
		return nodes.ForEachBucket(func(id []byte) error {
			nb := nodes.Bucket(id)
			if err := del(nb.Bucket(subObjects), byValue(objAge), false); err != nil {
				return err
			}
			if err := del(nb.Bucket(subRedirs), func(k, _ []byte) bool { return getU64(k)*60000 < age }, false); err != nil {
				return err
			}
			return del(nb.Bucket(subStates), func(k, _ []byte) bool { return getU64(k) < age }, true)
		})
	})
}

// NoteObject records that node fetched the object key from castd.
func (b *Book) NoteObject(node, key string) {
	h := receipt.KeyHash(key)
	now := b.opts.Now().UnixMilli()
	b.notesMu.Lock()
	m := b.objs[node]
	if m == nil {
		m = map[receipt.Hash]int64{}
		b.objs[node] = m
	}
	m[h] = now
	b.notesMu.Unlock()
}

// NoteMulticast records that the object key went out on a multicast
// channel: any node may have it. The multicast sender calls it.
func (b *Book) NoteMulticast(key string) {
	h := receipt.KeyHash(key)
	b.notesMu.Lock()
	b.mcast[h] = b.opts.Now().UnixMilli()
	b.notesMu.Unlock()
}

// NoteRedirect records that the router sent one end user to node.
func (b *Book) NoteRedirect(node string) {
	min := b.opts.Now().Unix() / 60
	b.notesMu.Lock()
	m := b.redirs[node]
	if m == nil {
		m = map[int64]uint64{}
		b.redirs[node] = m
	}
	m[min]++
	b.notesMu.Unlock()
}

// NoteState records node's control-plane state; only changes are kept
// (the monitor also calls back on load changes).
func (b *Book) NoteState(node string, online bool) {
	b.notesMu.Lock()
	defer b.notesMu.Unlock()
	if last, ok := b.lastState[node]; ok && last == online {
		return
	}
	if len(b.lastState) >= maxTracked {
		clear(b.lastState) // bounded; at worst a repeated note
	}
	b.lastState[node] = online
	b.states[node] = append(b.states[node], stateNote{at: b.opts.Now().UnixMilli(), online: online})
}

// Flush commits the notes taken since the last.
func (b *Book) Flush() error {
	b.notesMu.Lock()
	objs, mcast, redirs, states := b.objs, b.mcast, b.redirs, b.states
	b.objs, b.mcast, b.redirs, b.states = map[string]map[receipt.Hash]int64{}, map[receipt.Hash]int64{}, map[string]map[int64]uint64{}, map[string][]stateNote{}
	b.notesMu.Unlock()
	if len(objs)+len(mcast)+len(redirs)+len(states) == 0 {
		return nil
	}
	return b.db.Update(func(tx *bolt.Tx) error {
		nodes := tx.Bucket(bucketNodes)
		for id, m := range objs {
			sb, err := sub(nodes, id, subObjects)
			if err != nil {
				return err
			}
			for h, at := range m {
				if err := sb.Put(h[:], u64(uint64(at))); err != nil {
					return err
				}
			}
		}
		mb := tx.Bucket(bucketMcast)
		for h, at := range mcast {
			if err := mb.Put(h[:], u64(uint64(at))); err != nil {
				return err
			}
		}
		for id, m := range redirs {
			sb, err := sub(nodes, id, subRedirs)
			if err != nil {
				return err
			}
			for min, n := range m {
				k := u64(uint64(min))
				if err := sb.Put(k, u64(getU64(sb.Get(k))+n)); err != nil {
					return err
				}
			}
		}
		for id, list := range states {
			sb, err := sub(nodes, id, subStates)
			if err != nil {
				return err
			}
			for _, s := range list {
				v := []byte{0}
				if s.online {
					v[0] = 1
				}
				if err := sb.Put(u64(uint64(s.at)), v); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

func sub(nodes *bolt.Bucket, id string, name []byte) (*bolt.Bucket, error) {
	nb, err := nodes.CreateBucketIfNotExists([]byte(id))
	if err != nil {
		return nil, err
	}
	return nb.CreateBucketIfNotExists(name)
}

func (b *Book) countRefusal(reason string) {
	for i, r := range RefusalReasons {
		if r == reason {
			b.refused[i].Add(1)
		}
	}
}

// Refused counts a refusal that happened before Accept (at the envelope)
// and adds it to the node's view.
func (b *Book) Refused(node string, err error) {
	reason := ReasonOf(err)
	b.countRefusal(reason)
	if node == "" {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if v, ok := b.views[node]; ok {
		if v.Refused == nil {
			v.Refused = map[string]uint64{}
		}
		v.Refused[reason]++
	}
}

// Accept verifies body (a receipt.Signed) from node, checks it against
// what castd knows, and stores it. A refusal is a *Refusal; with
// ReasonDuplicate the Outcome still says to acknowledge (the node missed
// the first ack).
func (b *Book) Accept(node identity.PublicKey, body []byte) (Outcome, error) {
	out, err := b.accept(node, body)
	if err != nil {
		b.Refused(node.String(), err)
		// Refused counts it; a duplicate is still acknowledged.
	}
	return out, err
}

func (b *Book) accept(node identity.PublicKey, body []byte) (Outcome, error) {
	if !b.allow(node.String(), len(body)) {
		return Outcome{}, refuse(ReasonRateLimited, "node over its receipts budget of %.0f bytes a second", b.opts.ByteRate)
	}
	s, err := receipt.Open(body, node)
	if err != nil {
		return Outcome{}, &Refusal{Reason: ReasonOf(err), Err: err}
	}
	r := &s.Receipt
	now := b.opts.Now()
	if end := r.EndTime(); end.After(now.Add(b.opts.MaxSkew)) {
		return Outcome{}, refuse(ReasonFuture, "receipt %d ends at %s, %s ahead of castd's clock", r.Seq, end.UTC().Format(time.RFC3339), end.Sub(now).Round(time.Second))
	}
	if end := r.EndTime(); now.Sub(end) > b.opts.MaxAge {
		return Outcome{}, refuse(ReasonReplayed, "receipt %d ended %s ago, older than castd keeps (%s)", r.Seq, now.Sub(end).Round(time.Second), b.opts.MaxAge)
	}
	if err := b.Flush(); err != nil {
		return Outcome{}, fmt.Errorf("receipts: %w", err)
	}
	id := node.String()
	hash := s.Hash()
	out := Outcome{Seq: r.Seq}
	var refusal error
	b.mu.Lock()
	defer b.mu.Unlock()
	err = b.db.Update(func(tx *bolt.Tx) error {
		nb, err := tx.Bucket(bucketNodes).CreateBucketIfNotExists([]byte(id))
		if err != nil {
			return err
		}
		rb, err := nb.CreateBucketIfNotExists(subReceipts)
		if err != nil {
			return err
		}
		key := u64(r.Seq)
		if raw := rb.Get(key); raw != nil {
			var st stored
			if json.Unmarshal(raw, &st) == nil && st.Hash == fmt.Sprintf("%x", hash) {
				out.Ack = true
				refusal = refuse(ReasonDuplicate, "receipt %d was accepted before", r.Seq)
				return nil
			}
			out.Flags = append(out.Flags, Flag{At: now, Seq: r.Seq, Reason: FlagConflict, Detail: "another receipt with this sequence number was accepted"})
			b.recordFlags(nb, id, out.Flags)
			refusal = refuse(ReasonConflict, "receipt %d differs from the one accepted with that number", r.Seq)
			return nil
		}
		// Neighbours in sequence must not claim the same time.
		c := rb.Cursor()
		k, v := c.Seek(key)
		var next, prev *receipt.Signed
		if k != nil {
			next = decodeStored(v)
			k, v = c.Prev()
		} else {
			k, v = c.Last()
		}
		if k != nil {
			prev = decodeStored(v)
		}
		if prev != nil && prev.Receipt.End > r.Start || next != nil && next.Receipt.Start < r.End {
			out.Flags = append(out.Flags, Flag{At: now, Seq: r.Seq, Reason: FlagOverlap, Detail: fmt.Sprintf("interval [%d, %d) overlaps an accepted receipt", r.Start, r.End)})
			b.recordFlags(nb, id, out.Flags)
			refusal = refuse(ReasonOverlap, "receipt %d's interval overlaps an accepted receipt's", r.Seq)
			return nil
		}
		out.Flags = b.crossCheck(tx, nb, r, now)
		if b.opts.AuditSample > 0 && r.Records > 0 {
			out.Audit = sample(r.Records, min(uint64(b.opts.AuditSample), r.Records, receipt.MaxAuditItems))
		}
		raw, _ := json.Marshal(stored{Signed: s.Marshal(), Hash: fmt.Sprintf("%x", hash), Received: now, Audit: out.Audit})
		if err := rb.Put(key, raw); err != nil {
			return err
		}
		v2 := b.viewLocked(id)
		v2.Accepted++
		v2.Requests += r.Requests
		v2.Bytes += r.Bytes
		if r.Seq > v2.LastSeq {
			v2.LastSeq, v2.LastEnd = r.Seq, r.EndTime().UTC()
		}
		b.recordFlags(nb, id, out.Flags)
		out.Ack = true
		return nil
	})
	if err != nil {
		return Outcome{}, fmt.Errorf("receipts: store: %w", err)
	}
	if refusal != nil {
		return out, refusal
	}
	b.accepted.Add(1)
	return out, nil
}

// allow charges n bytes to node's budget.
func (b *Book) allow(node string, n int) bool {
	if b.opts.ByteRate < 0 {
		return true
	}
	now := b.opts.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	bk := b.budget[node]
	if bk == nil {
		if len(b.budget) >= maxTracked {
			clear(b.budget) // bounded: at worst a fresh burst
		}
		bk = ratelimit.NewBucket(b.opts.ByteRate, b.opts.ByteBurst, now)
		b.budget[node] = bk
	}
	return bk.AllowN(now, n)
}

func decodeStored(raw []byte) *receipt.Signed {
	var st stored
	if json.Unmarshal(raw, &st) != nil {
		return nil
	}
	s, err := receipt.Decode(st.Signed)
	if err != nil {
		return nil
	}
	return s
}

func (b *Book) viewLocked(id string) *View {
	v := b.views[id]
	if v == nil {
		v = &View{}
		b.views[id] = v
	}
	return v
}

// recordFlags adds flags to the node's view and saves the view (in tx).
func (b *Book) recordFlags(nb *bolt.Bucket, id string, flags []Flag) {
	v := b.viewLocked(id)
	for _, f := range flags {
		for i, r := range FlagReasons {
			if r == f.Reason {
				b.flagged[i].Add(1)
			}
		}
		v.Flagged++
		v.Flags = append(v.Flags, f)
		b.log.Warn("receipt flagged", "node", id, "seq", f.Seq, "reason", f.Reason, "detail", f.Detail)
	}
	if len(v.Flags) > maxFlagsShown {
		v.Flags = v.Flags[len(v.Flags)-maxFlagsShown:]
	}
	if raw, err := json.Marshal(v); err == nil {
		nb.Put(keyView, raw)
	}
}

// crossCheck compares r's claims with what castd knows of the node.
func (b *Book) crossCheck(tx *bolt.Tx, nb *bolt.Bucket, r *receipt.Receipt, now time.Time) []Flag {
	var flags []Flag
	flag := func(reason, format string, a ...any) {
		flags = append(flags, Flag{At: now, Seq: r.Seq, Reason: reason, Detail: fmt.Sprintf(format, a...)})
	}
	// Objects: each listed object must be one the node fetched, or one
	// that went out by multicast, recently enough.
	objs, mcast := nb.Bucket(subObjects), tx.Bucket(bucketMcast)
	since := r.Start - b.opts.ObjectTTL.Milliseconds()
	var unknown []string
	var unknownBytes uint64
	for _, o := range r.Top {
		if o.Bytes == 0 {
			continue
		}
		if at := getU64(get(objs, o.Key[:])); at != 0 && int64(at) >= since && int64(at) <= r.End+b.opts.MaxSkew.Milliseconds() {
			continue
		}
		if at := getU64(mcast.Get(o.Key[:])); at != 0 && int64(at) >= since {
			continue
		}
		unknownBytes += o.Bytes
		if len(unknown) < 4 {
			unknown = append(unknown, o.Key.String()[:16])
		}
	}
	if unknownBytes > 0 {
		flag(FlagUnknownObject, "%d bytes claimed for objects castd never gave this node (key hashes %v…)", unknownBytes, unknown)
	}
	// Requests against redirects: every redirect in the interval (and a
	// lead before it, for players still fetching) allows a few requests.
	if rb := nb.Bucket(subRedirs); true {
		var redirects uint64
		if rb != nil {
			from := (r.Start - b.opts.RedirectLead.Milliseconds()) / 60000
			c := rb.Cursor()
			for k, v := c.Seek(u64(uint64(max(from, 0)))); k != nil && int64(getU64(k)) <= r.End/60000; k, v = c.Next() {
				redirects += getU64(v)
			}
		}
		allowed := uint64(float64(redirects)*b.opts.RequestsPerRedirect) + b.opts.RequestSlack
		if r.Requests > allowed {
			flag(FlagOverRedirects, "%d requests claimed; the router sent %d end users here (up to %d requests allowed)", r.Requests, redirects, allowed)
		}
	}
	// Health history: the node must have been online at some point of
	// the interval.
	if sb := nb.Bucket(subStates); sb != nil && r.Requests > 0 {
		c := sb.Cursor()
		k, v := c.Seek(u64(uint64(r.Start)))
		online := false
		// The state at the start: the last change before it.
		pk, pv := c.Prev()
		if pk == nil {
			online = true // nothing known before: no claim against it
		} else if len(pv) == 1 && pv[0] == 1 {
			online = true
		}
		// Any change to online inside the interval.
		for k, v = c.Seek(u64(uint64(r.Start))); k != nil && int64(getU64(k)) < r.End && !online; k, v = c.Next() {
			online = len(v) == 1 && v[0] == 1
		}
		if !online {
			flag(FlagOffline, "%d requests claimed while the node was offline from before %s to %s",
				r.Requests, r.StartTime().UTC().Format(time.RFC3339), r.EndTime().UTC().Format(time.RFC3339))
		}
	}
	return flags
}

func get(bk *bolt.Bucket, k []byte) []byte {
	if bk == nil {
		return nil
	}
	return bk.Get(k)
}

// sample picks k distinct indices below n.
func sample(n, k uint64) []uint64 {
	out := make([]uint64, 0, k)
	for uint64(len(out)) < k {
		i := rand.Uint64N(n)
		if !slices.Contains(out, i) {
			out = append(out, i)
		}
	}
	slices.Sort(out)
	return out
}

// Audit checks a node's records reply against the receipt it answers.
func (b *Book) Audit(node identity.PublicKey, body []byte) error {
	rs, err := receipt.DecodeRecords(body)
	if err != nil {
		b.Refused(node.String(), err)
		return err
	}
	id := node.String()
	now := b.opts.Now()
	if err := b.Flush(); err != nil {
		return fmt.Errorf("receipts: %w", err)
	}
	b.mu.Lock()
	var result error
	err = b.db.Update(func(tx *bolt.Tx) error {
		nb := tx.Bucket(bucketNodes).Bucket([]byte(id))
		rb := get2(nb, subReceipts)
		var raw []byte
		if rb != nil {
			raw = rb.Get(u64(rs.Seq))
		}
		var st stored
		if raw == nil || json.Unmarshal(raw, &st) != nil || len(st.Audit) == 0 {
			result = refuse(ReasonReplayed, "records of receipt %d that castd did not ask for", rs.Seq)
			return nil
		}
		s, err := receipt.Decode(st.Signed)
		if err != nil {
			return err
		}
		var flags []Flag
		switch {
		case rs.Error != "" && len(rs.Items) == 0:
			st.Audited = "unavailable"
			flags = append(flags, Flag{At: now, Seq: rs.Seq, Reason: FlagAuditUnanswered, Detail: rs.Error})
		default:
			if err := b.checkRecords(nb, s, rs, st.Audit); err != nil {
				st.Audited = "failed"
				b.auditsFailed.Add(1)
				flags = append(flags, Flag{At: now, Seq: rs.Seq, Reason: FlagAuditFailed, Detail: err.Error()})
			} else {
				st.Audited = "ok"
				b.auditsOK.Add(1)
			}
		}
		st.Audit = nil
		raw, _ = json.Marshal(st)
		if err := rb.Put(u64(rs.Seq), raw); err != nil {
			return err
		}
		b.recordFlags(nb, id, flags)
		return nil
	})
	b.mu.Unlock()
	if err != nil {
		return fmt.Errorf("receipts: audit: %w", err)
	}
	if result != nil {
		b.Refused(id, result)
	}
	return result
}

func get2(nb *bolt.Bucket, name []byte) *bolt.Bucket {
	if nb == nil {
		return nil
	}
	return nb.Bucket(name)
}

// checkRecords verifies an audit reply: the records asked for, proved
// against the receipt's root, inside its interval, of objects it listed
// (or that castd knows the node had).
func (b *Book) checkRecords(nb *bolt.Bucket, s *receipt.Signed, rs *receipt.Records, asked []uint64) error {
	r := &s.Receipt
	if err := rs.Verify(receipt.Hash(r.Root), r.Records); err != nil {
		return err
	}
	got := make([]uint64, 0, len(rs.Items))
	for _, it := range rs.Items {
		got = append(got, it.I)
		rec := it.Record
		if rec.TS < r.Start || rec.TS > r.End {
			return fmt.Errorf("record %d at %d is outside the receipt's interval [%d, %d]", it.I, rec.TS, r.Start, r.End)
		}
		if rec.Bytes > r.Bytes {
			return fmt.Errorf("record %d has %d bytes, the receipt %d", it.I, rec.Bytes, r.Bytes)
		}
		if getU64(get(nb.Bucket(subObjects), rec.Key[:])) == 0 && !slices.ContainsFunc(r.Top, func(o receipt.Object) bool { return o.Key == rec.Key }) && r.Other.Requests == 0 {
			return fmt.Errorf("record %d is of an object the receipt does not list", it.I)
		}
	}
	slices.Sort(got)
	if !slices.Equal(got, asked) {
		return fmt.Errorf("answered records %v, asked for %v", got, asked)
	}
	return nil
}

// View returns node's receipts summary, or nil if it sent none.
func (b *Book) View(node string) *View {
	b.mu.Lock()
	defer b.mu.Unlock()
	v, ok := b.views[node]
	if !ok {
		return nil
	}
	c := *v
	c.Flags = slices.Clone(v.Flags)
	if v.Refused != nil {
		c.Refused = make(map[string]uint64, len(v.Refused))
		for k, n := range v.Refused {
			c.Refused[k] = n
		}
	}
	return &c
}

// Receipt returns node's stored receipt seq (its wire form), for audits by hand.
func (b *Book) Receipt(node string, seq uint64) ([]byte, bool) {
	var out []byte
	b.db.View(func(tx *bolt.Tx) error {
		rb := get2(tx.Bucket(bucketNodes).Bucket([]byte(node)), subReceipts)
		if rb == nil {
			return nil
		}
		var st stored
		if raw := rb.Get(u64(seq)); raw != nil && json.Unmarshal(raw, &st) == nil {
			out = st.Signed
		}
		return nil
	})
	return out, out != nil
}

// Stats returns the counters.
func (b *Book) Stats() Stats {
	st := Stats{Accepted: b.accepted.Load(), AuditsOK: b.auditsOK.Load(), AuditsFailed: b.auditsFailed.Load(),
		Refused: make(map[string]uint64, len(RefusalReasons)), Flagged: make(map[string]uint64, len(FlagReasons))}
	for i, r := range RefusalReasons {
		st.Refused[r] = b.refused[i].Load()
	}
	for i, r := range FlagReasons {
		st.Flagged[r] = b.flagged[i].Load()
	}
	return st
}

func u64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

func getU64(b []byte) uint64 {
	if len(b) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}
