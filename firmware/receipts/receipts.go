// Package receipts is the beacon's side of signed delivery receipts: it
// records every response the cache gives (time, object key hash, bytes,
// status, delivery path; never the client), seals an interval's records
// into a receipt signed by the node key with a Merkle root over them,
// keeps each receipt on disk until castd acknowledges it, and answers
// castd's audits with records and their inclusion proofs.
//
// Everything lives in one bbolt file (fsync'd commits): records are
// written every FlushEvery (at most that much is lost to a kill -9), and a
// receipt, the removal of its records from the open interval and the
// sequence number are committed in one transaction, so a crash leaves the
// interval either open or sealed, never half of each. Unacknowledged
// receipts are sent again after every reconnect and every ResendEvery.
//
// Firmware budget: this package imports bbolt (already in the beacon, for
// the cache) and the shared packages only.
package receipts

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/blockcast/beacon/shared/ctrlmsg"
	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/receipt"
)

// Defaults for Options.
const (
	DefaultInterval    = 10 * time.Minute
	DefaultFlushEvery  = time.Second
	DefaultResendEvery = time.Minute
	DefaultKeep        = 7 * 24 * time.Hour
	DefaultMaxRecords  = 50000    // per interval: ~3 MB of records
	DefaultMaxStored   = 16 << 20 // sealed records kept for audits, bytes
	DefaultMaxPending  = 4096     // unacknowledged receipts (28 days at 10 min)
	resendBatch        = 32       // receipts sent per round (the broker limits a node's rate)
)

// Options configure a Book.
type Options struct {
	Path string            // the bbolt file
	Key  *identity.Keypair // the node key: signs receipts
	// Interval between receipts (DefaultInterval). An interval in which
	// nothing was served gives no receipt.
	Interval time.Duration
	// FlushEvery is how often recorded requests are committed to disk
	// (DefaultFlushEvery).
	FlushEvery time.Duration
	// ResendEvery is how often unacknowledged receipts are sent again
	// (DefaultResendEvery); they are also sent after each reconnect (Kick).
	ResendEvery time.Duration
	// Keep and MaxStored bound the sealed records kept for audits, by age
	// and by size (DefaultKeep, DefaultMaxStored): oldest go first.
	Keep      time.Duration
	MaxStored int64
	// MaxRecords bounds the records of one interval (DefaultMaxRecords);
	// requests past it are counted in the receipt, not recorded.
	MaxRecords int
	// MaxPending bounds unacknowledged receipts (DefaultMaxPending); past
	// it the oldest is dropped, with an error logged.
	MaxPending int
	// Publish sends a message on the node's receipt topic (the agent's
	// Publish). Nil or failing: receipts wait on disk.
	Publish func(kind ctrlmsg.Kind, body any) error
	Logger  *slog.Logger
	Now     func() time.Time
}

func (o *Options) ensureDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&o.Interval, DefaultInterval)
	def(&o.FlushEvery, DefaultFlushEvery)
	def(&o.ResendEvery, DefaultResendEvery)
	def(&o.Keep, DefaultKeep)
	if o.MaxStored == 0 {
		o.MaxStored = DefaultMaxStored
	}
	if o.MaxRecords == 0 {
		o.MaxRecords = DefaultMaxRecords
	}
	if o.MaxPending == 0 {
		o.MaxPending = DefaultMaxPending
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

func (o *Options) check() error {
	switch {
	case o.Path == "":
		return errors.New("receipts: Options.Path is required")
	case o.Key == nil:
		return errors.New("receipts: Options.Key is required")
	case o.Interval < 0 || o.FlushEvery < 0 || o.ResendEvery < 0 || o.Keep < 0:
		return errors.New("receipts: Options durations must not be negative")
	case o.Interval > receipt.MaxInterval:
		return fmt.Errorf("receipts: Options.Interval %s over %s", o.Interval, receipt.MaxInterval)
	case o.MaxStored < 0 || o.MaxRecords < 0 || o.MaxPending < 0:
		return errors.New("receipts: Options bounds must not be negative")
	}
	return nil
}

var (
	bucketMeta    = []byte("meta")
	bucketOpen    = []byte("open")    // counter → record: the interval being recorded
	bucketPending = []byte("pending") // seq → signed receipt, until acknowledged
	bucketSealed  = []byte("sealed")  // seq → end (8 bytes) + records, for audits
	keySeq        = []byte("seq")     // last sequence number used
	keyStart      = []byte("start")   // unix ms: the open interval's start
	keyOver       = []byte("over")    // JSON receipt.Overflow of the open interval
)

// Stats are the book's counters, for the status page and metrics.
type Stats struct {
	Sealed     uint64    `json:"sealed"`   // receipts signed since start
	Requests   uint64    `json:"requests"` // requests in them
	Sent       uint64    `json:"sent"`     // receipt publications the broker acknowledged
	Acked      uint64    `json:"acked"`    // receipts castd acknowledged
	Pending    int       `json:"pending"`  // on disk, waiting for castd
	Dropped    uint64    `json:"dropped"`  // unacknowledged receipts dropped over MaxPending
	Overflow   uint64    `json:"overflow"` // requests counted but not recorded (over MaxRecords)
	Audits     uint64    `json:"audits"`   // audits answered
	LastSeq    uint64    `json:"last_seq"`
	LastSealed time.Time `json:"last_sealed"`
	LastErr    string    `json:"last_error,omitempty"`
}

// Book records requests and keeps receipts.
type Book struct {
	opts Options
	log  *slog.Logger
	db   *bolt.DB
	node string

	mu       sync.Mutex
	buf      []receipt.Record // recorded, not yet on disk
	over     receipt.Overflow // not yet on disk
	open     int              // records in the open interval (disk + buf)
	lastSent map[uint64]time.Time
	lastErr  string
	lastSeal time.Time

	kick chan struct{}

	sealed, requests, sent, acked, dropped, overflow, audits, lastSeq atomic.Uint64
}

// Open opens (or creates) the book at opts.Path.
func Open(opts Options) (*Book, error) {
	opts.ensureDefaults()
	if err := opts.check(); err != nil {
		return nil, err
	}
	db, err := bolt.Open(opts.Path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("receipts: open %s: %w", opts.Path, err)
	}
	b := &Book{opts: opts, log: opts.Logger.With("component", "receipts"), db: db, node: opts.Key.ID(),
		lastSent: make(map[uint64]time.Time), kick: make(chan struct{}, 1)}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketMeta, bucketOpen, bucketPending, bucketSealed} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		m := tx.Bucket(bucketMeta)
		if m.Get(keyStart) == nil {
			m.Put(keyStart, u64(uint64(opts.Now().UnixMilli())))
		}
		if m.Get(keySeq) == nil {
			// A new book numbers from the clock (ms), so that a beacon whose
			// state was wiped (same wallet, new flash) never reuses a
			// number castd has: it would refuse the receipts as conflicts.
			m.Put(keySeq, u64(uint64(opts.Now().UnixMilli())))
		}
		b.open = tx.Bucket(bucketOpen).Stats().KeyN
		b.lastSeq.Store(getU64(m.Get(keySeq)))
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("receipts: %s: %w", opts.Path, err)
	}
	return b, nil
}

// Close flushes what was recorded and closes the file.
func (b *Book) Close() error {
	err := b.flush()
	return errors.Join(err, b.db.Close())
}

// Record counts one response. It never blocks on the disk; past
// MaxRecords in an interval the request is counted only. It is the hook
// the multicast receiver calls too (Path receipt.PathMulticast).
func (b *Book) Record(r receipt.Record) {
	if r.Validate() != nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.open >= b.opts.MaxRecords {
		b.over.Requests++
		b.over.ByPath.Add(r.Path, r.Bytes)
		b.overflow.Add(1)
		return
	}
	b.open++
	b.buf = append(b.buf, r)
}

// Kick asks for unacknowledged receipts to be sent now (after a reconnect).
func (b *Book) Kick() {
	b.mu.Lock()
	clear(b.lastSent)
	b.mu.Unlock()
	select {
	case b.kick <- struct{}{}:
	default:
	}
}

// Stats returns the counters.
func (b *Book) Stats() Stats {
	st := Stats{Sealed: b.sealed.Load(), Requests: b.requests.Load(), Sent: b.sent.Load(), Acked: b.acked.Load(), Dropped: b.dropped.Load(),
		Overflow: b.overflow.Load(), Audits: b.audits.Load(), LastSeq: b.lastSeq.Load()}
	b.db.View(func(tx *bolt.Tx) error {
		st.Pending = tx.Bucket(bucketPending).Stats().KeyN
		return nil
	})
	b.mu.Lock()
	st.LastErr, st.LastSealed = b.lastErr, b.lastSeal
	b.mu.Unlock()
	return st
}

// Run flushes, seals, sends and prunes until ctx ends. Records left open
// by an earlier run are sealed at once: they are a past interval.
func (b *Book) Run(ctx context.Context) {
	if err := b.Seal(); err != nil {
		b.setErr("seal", err)
	}
	b.resend(true)
	flush := time.NewTicker(b.opts.FlushEvery)
	defer flush.Stop()
	seal := time.NewTicker(b.opts.Interval)
	defer seal.Stop()
	resend := time.NewTicker(b.opts.ResendEvery)
	defer resend.Stop()
	for {
		select {
		case <-ctx.Done():
			if err := b.flush(); err != nil {
				b.setErr("flush", err)
			}
			return
		case <-flush.C:
			if err := b.flush(); err != nil {
				b.setErr("flush", err)
			}
		case <-seal.C:
			if err := b.Seal(); err != nil {
				b.setErr("seal", err)
			}
			if err := b.prune(); err != nil {
				b.setErr("prune", err)
			}
			b.resend(false)
		case <-resend.C:
			b.resend(false)
		case <-b.kick:
			b.resend(true)
		}
	}
}

func (b *Book) setErr(what string, err error) {
	b.log.Error("receipts: "+what, "err", err)
	b.mu.Lock()
	b.lastErr = what + ": " + err.Error()
	b.mu.Unlock()
}

// flush commits the recorded requests.
func (b *Book) flush() error {
	b.mu.Lock()
	buf, over := b.buf, b.over
	b.buf, b.over = nil, receipt.Overflow{}
	b.mu.Unlock()
	if len(buf) == 0 && over.Requests == 0 {
		return nil
	}
	err := b.db.Update(func(tx *bolt.Tx) error {
		o := tx.Bucket(bucketOpen)
		for _, r := range buf {
			n, err := o.NextSequence()
			if err != nil {
				return err
			}
			if err := o.Put(u64(n), r.AppendBinary(nil)); err != nil {
				return err
			}
		}
		if over.Requests > 0 {
			m := tx.Bucket(bucketMeta)
			var prev receipt.Overflow
			if raw := m.Get(keyOver); raw != nil {
				json.Unmarshal(raw, &prev)
			}
			prev.Requests += over.Requests
			prev.ByPath.Hit += over.ByPath.Hit
			prev.ByPath.Fill += over.ByPath.Fill
			prev.ByPath.Multicast += over.ByPath.Multicast
			raw, _ := json.Marshal(prev)
			return m.Put(keyOver, raw)
		}
		return nil
	})
	if err != nil {
		// Put back, so that a full disk loses nothing until memory bounds it.
		b.mu.Lock()
		if len(b.buf)+len(buf) <= b.opts.MaxRecords {
			b.buf = append(buf, b.buf...)
		}
		b.over.Requests += over.Requests
		b.over.ByPath.Hit += over.ByPath.Hit
		b.over.ByPath.Fill += over.ByPath.Fill
		b.over.ByPath.Multicast += over.ByPath.Multicast
		b.mu.Unlock()
		return fmt.Errorf("receipts: flush: %w", err)
	}
	return nil
}

// Seal closes the open interval: its records become a signed receipt,
// kept until acknowledged. An interval with no request gives none.
func (b *Book) Seal() error {
	if err := b.flush(); err != nil {
		return err
	}
	now := b.opts.Now().UnixMilli()
	var signed *receipt.Signed
	err := b.db.Update(func(tx *bolt.Tx) error {
		m, o := tx.Bucket(bucketMeta), tx.Bucket(bucketOpen)
		start := int64(getU64(m.Get(keyStart)))
		var over receipt.Overflow
		if raw := m.Get(keyOver); raw != nil {
			if err := json.Unmarshal(raw, &over); err != nil {
				b.log.Error("receipts: damaged overflow counter; dropped", "err", err)
				over = receipt.Overflow{}
			}
		}
		var recs []receipt.Record
		blob := make([]byte, 8, 8+o.Stats().KeyN*receipt.RecordSize)
		last := start
		err := o.ForEach(func(k, v []byte) error {
			r, err := receipt.ParseRecord(v)
			if err != nil {
				b.log.Error("receipts: damaged record; skipped", "err", err)
				return nil
			}
			recs = append(recs, r)
			blob = append(blob, v...)
			start, last = min(start, r.TS), max(last, r.TS)
			return nil
		})
		if err != nil {
			return err
		}
		if len(recs) == 0 && over.Requests == 0 {
			return m.Put(keyStart, u64(uint64(now)))
		}
		// The end: now, or just after the last record for an interval a
		// crash left open long ago.
		end := max(now, last+1)
		if time.Duration(end-start)*time.Millisecond > receipt.MaxInterval {
			end = last + 1
			start = max(start, end-receipt.MaxInterval.Milliseconds())
		}
		seq := getU64(m.Get(keySeq)) + 1
		r := receipt.Summarize(b.node, seq, start, end, recs, over)
		var err2 error
		if signed, err2 = receipt.Sign(b.opts.Key, r); err2 != nil {
			return err2
		}
		binary.BigEndian.PutUint64(blob, uint64(end))
		p := tx.Bucket(bucketPending)
		if err := p.Put(u64(seq), signed.Marshal()); err != nil {
			return err
		}
		if err := tx.Bucket(bucketSealed).Put(u64(seq), blob); err != nil {
			return err
		}
		// Empty the open interval: delete and recreate is one page write.
		if err := tx.DeleteBucket(bucketOpen); err != nil {
			return err
		}
		if _, err := tx.CreateBucket(bucketOpen); err != nil {
			return err
		}
		m.Delete(keyOver)
		if err := m.Put(keySeq, u64(seq)); err != nil {
			return err
		}
		if err := m.Put(keyStart, u64(uint64(end))); err != nil {
			return err
		}
		// Bounded: the oldest unacknowledged receipt goes first.
		n := 0
		p.ForEach(func(_, _ []byte) error { n++; return nil })
		for ; n > b.opts.MaxPending; n-- {
			k, _ := p.Cursor().First()
			if k == nil {
				break
			}
			b.log.Error("receipts: too many unacknowledged receipts; dropping the oldest", "seq", getU64(k), "limit", b.opts.MaxPending)
			p.Delete(k)
			b.dropped.Add(1)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("receipts: seal: %w", err)
	}
	if signed == nil {
		return nil
	}
	b.mu.Lock()
	b.open = 0
	b.lastSeal = time.UnixMilli(signed.Receipt.End)
	b.mu.Unlock()
	b.sealed.Add(1)
	b.requests.Add(signed.Receipt.Requests)
	b.lastSeq.Store(signed.Receipt.Seq)
	rc := signed.Receipt
	b.log.Info("receipt sealed", "seq", rc.Seq, "requests", rc.Requests, "bytes", rc.Bytes, "records", rc.Records, "root", rc.Root.String())
	return nil
}

// resend publishes unacknowledged receipts, oldest first; all of them when
// all is set, else those not sent within ResendEvery.
func (b *Book) resend(all bool) {
	if b.opts.Publish == nil {
		return
	}
	type item struct {
		seq uint64
		raw []byte
	}
	now := b.opts.Now()
	var todo []item
	b.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketPending).Cursor()
		b.mu.Lock()
		defer b.mu.Unlock()
		for k, v := c.First(); k != nil && len(todo) < resendBatch; k, v = c.Next() {
			seq := getU64(k)
			if t, ok := b.lastSent[seq]; ok && !all && now.Sub(t) < b.opts.ResendEvery {
				continue
			}
			todo = append(todo, item{seq, append([]byte(nil), v...)})
		}
		return nil
	})
	for _, it := range todo {
		if err := b.opts.Publish(ctrlmsg.KindReceipt, json.RawMessage(it.raw)); err != nil {
			b.log.Debug("receipt not sent; kept", "seq", it.seq, "err", err)
			return
		}
		b.sent.Add(1)
		b.mu.Lock()
		b.lastSent[it.seq] = now
		b.mu.Unlock()
	}
}

// Ack removes receipts castd has stored.
func (b *Book) Ack(seqs []uint64) (int, error) {
	n := 0
	err := b.db.Update(func(tx *bolt.Tx) error {
		p := tx.Bucket(bucketPending)
		for _, s := range seqs {
			if p.Get(u64(s)) != nil {
				if err := p.Delete(u64(s)); err != nil {
					return err
				}
				n++
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("receipts: ack: %w", err)
	}
	b.mu.Lock()
	for _, s := range seqs {
		delete(b.lastSent, s)
	}
	b.mu.Unlock()
	b.acked.Add(uint64(n))
	return n, nil
}

// Audit returns records idx of receipt seq with their proofs.
func (b *Book) Audit(seq uint64, idx []uint64) (*receipt.Records, error) {
	var blob []byte
	b.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketSealed).Get(u64(seq)); v != nil {
			blob = append([]byte(nil), v...)
		}
		return nil
	})
	out := &receipt.Records{Seq: seq}
	if len(blob) < 8 || (len(blob)-8)%receipt.RecordSize != 0 {
		out.Error = "records no longer kept"
		return out, nil
	}
	blob = blob[8:]
	n := len(blob) / receipt.RecordSize
	leaves := make([]receipt.Hash, n)
	recs := make([]receipt.Record, n)
	for i := range n {
		r, err := receipt.ParseRecord(blob[i*receipt.RecordSize : (i+1)*receipt.RecordSize])
		if err != nil {
			return nil, fmt.Errorf("receipts: audit %d: %w", seq, err)
		}
		recs[i], leaves[i] = r, r.LeafHash()
	}
	out.N, out.Root = uint64(n), receipt.HexHash(receipt.Root(leaves))
	for _, i := range idx {
		if i >= uint64(n) {
			out.Error = fmt.Sprintf("record %d of %d", i, n)
			continue
		}
		proof, err := receipt.Proof(leaves, int(i))
		if err != nil {
			return nil, err
		}
		it := receipt.Item{I: i, Record: recs[i], Proof: make([]receipt.HexHash, len(proof))}
		for j, p := range proof {
			it.Proof[j] = receipt.HexHash(p)
		}
		out.Items = append(out.Items, it)
	}
	b.audits.Add(1)
	return out, nil
}

// prune drops sealed records past Keep or over MaxStored, oldest first.
func (b *Book) prune() error {
	cut := b.opts.Now().Add(-b.opts.Keep).UnixMilli()
	return b.db.Update(func(tx *bolt.Tx) error {
		s := tx.Bucket(bucketSealed)
		var total int64
		s.ForEach(func(_, v []byte) error { total += int64(len(v)); return nil })
		c := s.Cursor()
		for k, v := c.First(); k != nil; k, v = c.First() {
			if len(v) >= 8 && int64(binary.BigEndian.Uint64(v)) >= cut && total <= b.opts.MaxStored {
				break
			}
			total -= int64(len(v))
			if err := s.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
}

// HandleCommand runs castd's receipt-ack and receipt-records commands.
func (b *Book) HandleCommand(c ctrlmsg.Command) ctrlmsg.Result {
	res := ctrlmsg.Result{ID: c.ID}
	switch c.Op {
	case ctrlmsg.OpReceiptAck:
		seqs, err := receipt.ParseAck(c.Arg)
		if err != nil {
			res.Error = err.Error()
			return res
		}
		n, err := b.Ack(seqs)
		if err != nil {
			res.Error = err.Error()
			return res
		}
		res.OK, res.Detail = true, fmt.Sprintf("%d receipts acknowledged", n)
	case ctrlmsg.OpReceiptRecords:
		seq, idx, err := receipt.ParseAudit(c.Arg)
		if err != nil {
			res.Error = err.Error()
			return res
		}
		recs, err := b.Audit(seq, idx)
		if err != nil {
			res.Error = err.Error()
			return res
		}
		if b.opts.Publish == nil {
			res.Error = "no control plane"
			return res
		}
		if err := b.opts.Publish(ctrlmsg.KindRecords, recs); err != nil {
			res.Error = err.Error()
			return res
		}
		res.OK, res.Detail = true, fmt.Sprintf("sent %d records of receipt %d", len(recs.Items), seq)
	default:
		res.Error = "not a receipt op: " + c.Op
	}
	return res
}

func u64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

func getU64(b []byte) uint64 {
	if len(b) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}
