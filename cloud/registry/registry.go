// Package registry is castd's persistent record of the beacons and relays
// that have registered: who they are (the node key), who owns them (the
// delegating wallet), where end users are sent (LAN URL, public IP, relay
// CIDRs) and when they were seen. It is a single bbolt file; the router is
// rebuilt from it at start with ForEach.
//
// The registry trusts the caller for authentication: the node ID is the key
// that signed the registration, checked before Upsert is called, so one key
// can never overwrite another key's record. The registry checks everything
// else a registration carries and refuses what the router could not use.
package registry

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sort"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/blockcast/beacon/shared/protocol"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Errors callers branch on. Every error the package returns for these
// conditions wraps one of them, with the detail in the message.
var (
	// ErrInvalid means a registration was refused by validation.
	ErrInvalid = errors.New("invalid registration")
	// ErrNotFound means no node has the ID.
	ErrNotFound = errors.New("node not found")
	// ErrOwnerConflict means the node is owned by another wallet and the
	// caller did not verify a delegation from the new one.
	ErrOwnerConflict = errors.New("node has another owner")
	// ErrCorrupt means the file or a record in it cannot be read. The
	// registry never repairs or wipes it: that is the operator's decision.
	ErrCorrupt = errors.New("registry file is corrupt")
	// ErrLocked means another process holds the file open.
	ErrLocked = errors.New("registry file is locked")
)

// Node is one registered beacon or relay, as stored.
type Node struct {
	ID           string     `json:"id"`              // base58 ed25519 public key of the node
	Owner        string     `json:"owner,omitempty"` // base58 wallet that delegated to the node key
	Role         string     `json:"role"`            // protocol.RoleBeacon or protocol.RoleRelay
	LANURL       string     `json:"lan_url"`         // where redirected end users are sent
	Version      string     `json:"version,omitempty"`
	Capabilities []string   `json:"capabilities,omitempty"`
	CIDRs        []string   `json:"cidrs,omitempty"` // relays only: the client networks served, canonical form
	PublicIP     netip.Addr `json:"public_ip"`       // from the registration's connection
	FirstSeen    time.Time  `json:"first_seen"`
	LastSeen     time.Time  `json:"last_seen"`

	// SeenOnline is when castd's control plane first saw the node online
	// (zero: never, see MarkOnline); a registration keeps it.
	SeenOnline time.Time `json:"seen_online,omitzero"`
}

// lockTimeout bounds how long Open waits for another process's file lock.
// A variable so that tests need not wait.
var lockTimeout = 2 * time.Second

// File layout. The format number lets a later release refuse, or migrate,
// a file written by an incompatible one instead of misreading it.
var (
	bucketNodes = []byte("nodes") // node ID → JSON Node
	bucketMeta  = []byte("meta")
	keyFormat   = []byte("format")
	keyCount    = []byte("count") // number of nodes, decimal, so Open need not walk them
)

const formatVersion = "1"

// Registry is the node registry. Its methods are safe for concurrent use.
type Registry struct {
	db    *bolt.DB
	log   *slog.Logger
	count atomic.Int64
	now   func() time.Time // tests replace it

	damaged damaged // records that cannot be decoded (damaged.go)
}

// Open opens or creates the registry file at path. A file held by another
// process makes Open fail with ErrLocked after a short wait; a file that is
// not a registry, or is damaged, makes it fail with ErrCorrupt, leaving the
// file as it is.
func Open(path string, logger *slog.Logger) (reg *Registry, err error) {
	if logger == nil {
		logger = slog.Default()
	}
	// bbolt panics on some kinds of damage; turn that into an error.
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%w: opening %s: %v", ErrCorrupt, path, p)
		}
	}()
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout: lockTimeout,
		// The map freelist stays fast in a file with many free pages,
		// which a registry rewritten by registrations becomes.
		FreelistType: bolt.FreelistMapType,
	})
	switch {
	case errors.Is(err, berrors.ErrTimeout):
		return nil, fmt.Errorf("%w: %s is in use by another process (waited %s)", ErrLocked, path, lockTimeout)
	case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrChecksum), errors.Is(err, berrors.ErrVersionMismatch):
		return nil, fmt.Errorf("%w: %s: %v", ErrCorrupt, path, err)
	case err != nil:
		return nil, fmt.Errorf("registry: opening %s: %w", path, err)
	}
	// A lone registration waits this long for others to share its commit.
	db.MaxBatchDelay = 2 * time.Millisecond
	r := &Registry{db: db, log: logger, now: time.Now}
	if err := r.init(); err != nil {
		db.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	logger.Info("registry opened", "path", path, "nodes", r.Len())
	return r, nil
}

// init creates the buckets of a new file, checks the format of an old one
// and reads its node count.
func (r *Registry) init() error {
	return r.update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		nodes := tx.Bucket(bucketNodes)
		if meta == nil {
			// A fresh file. A file with buckets but no meta bucket was not
			// written by us: refuse it rather than adopt it.
			if k, _ := tx.Cursor().First(); k != nil {
				return fmt.Errorf("%w: unexpected bucket %q, not a registry file", ErrCorrupt, k)
			}
			var err error
			if meta, err = tx.CreateBucket(bucketMeta); err != nil {
				return err
			}
			if err := meta.Put(keyFormat, []byte(formatVersion)); err != nil {
				return err
			}
			if nodes, err = tx.CreateBucket(bucketNodes); err != nil {
				return err
			}
		}
		if f := meta.Get(keyFormat); string(f) != formatVersion {
			return fmt.Errorf("%w: format %q, this castd reads %q", ErrCorrupt, f, formatVersion)
		}
		if nodes == nil {
			return fmt.Errorf("%w: no %q bucket", ErrCorrupt, bucketNodes)
		}
		// Files from before relay approvals existed get the bucket now.
		if _, err := tx.CreateBucketIfNotExists(bucketApprovals); err != nil {
			return err
		}
		n, err := strconv.ParseInt(string(meta.Get(keyCount)), 10, 64)
		if err != nil || n < 0 {
			// Missing (a new file) or damaged: count once, the slow way.
			n = int64(nodes.Stats().KeyN)
			if err := meta.Put(keyCount, strconv.AppendInt(nil, n, 10)); err != nil {
				return err
			}
		}
		r.count.Store(n)
		return nil
	})
}

// addCount adjusts the stored node count inside a write transaction.
func addCount(tx *bolt.Tx, delta int64) error {
	if delta == 0 {
		return nil
	}
	meta := tx.Bucket(bucketMeta)
	n, err := strconv.ParseInt(string(meta.Get(keyCount)), 10, 64)
	if err != nil {
		return fmt.Errorf("%w: node count: %v", ErrCorrupt, err)
	}
	// Only a file edited behind our back can make it negative.
	return meta.Put(keyCount, strconv.AppendInt(nil, max(n+delta, 0), 10))
}

// Close closes the file. The Registry must not be used afterwards.
func (r *Registry) Close() error {
	return r.db.Close()
}

// Len is the number of registered nodes. It is kept in the file, not
// counted, so records written into it by other tools are not included.
func (r *Registry) Len() int {
	return int(r.count.Load())
}

// Upsert stores a registration: it inserts a new node or updates an existing
// one and returns the node as stored (canonical CIDRs, UTC times, FirstSeen
// kept from the first registration). A zero LastSeen means now.
//
// Owner rule: the first registration that names an owner binds the node to
// it; a registration with an empty Owner keeps the stored owner. A different
// owner is refused with ErrOwnerConflict unless verifiedDelegation is true,
// which the caller may pass only when it has itself verified, in this
// request, a delegation from n.Owner to the node key that supersedes the old
// one (the owner wallet signed it, and it is newer than what was stored). The
// registry cannot check that itself because it does not keep delegations.
func (r *Registry) Upsert(n Node, verifiedDelegation bool) (Node, error) {
	n, err := r.normalize(n)
	if err != nil {
		return Node{}, err
	}
	var stored Node
	var created bool
	// Batch coalesces registrations that arrive together (many nodes
	// coming back after an outage) into one commit and one fsync. It may
	// run the function more than once, which put allows.
	err = r.batch(func(tx *bolt.Tx) error {
		var err error
		stored, created, err = r.put(tx.Bucket(bucketNodes), n, verifiedDelegation)
		if err == nil && created {
			err = addCount(tx, 1)
		}
		return err
	})
	if err != nil {
		return Node{}, err
	}
	if created {
		r.count.Add(1)
	}
	r.noteReplaced(stored.ID)
	return stored, nil
}

// UpsertBatch stores many registrations in one transaction, as Upsert would
// one by one (a later entry for the same ID wins), and is what a bulk import
// should use: one commit instead of one per node. It is all or nothing: if
// any node is refused, nothing is written and the error names it.
//
// A batch is held in memory until it commits, so import a large fleet in
// batches of some ten thousand nodes, sorted by ID across batches: each
// batch then only appends to the file instead of rewriting pages all over
// it (a million nodes load in well under a minute that way).
func (r *Registry) UpsertBatch(nodes []Node, verifiedDelegation bool) error {
	norm := make([]Node, len(nodes))
	for i, n := range nodes {
		var err error
		if norm[i], err = r.normalize(n); err != nil {
			return fmt.Errorf("batch entry %d: %w", i, err)
		}
	}
	// Keys in order make bbolt append to pages instead of splitting them
	// all over the tree; stable so that the last entry for an ID wins.
	order := make([]int, len(norm))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return norm[order[a]].ID < norm[order[b]].ID })
	var created int64
	err := r.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketNodes)
		if last, _ := b.Cursor().Last(); len(order) > 0 && string(last) < norm[order[0]].ID {
			// Appending: pack pages full, as nothing will be inserted
			// between these keys later except by re-registration.
			b.FillPercent = 0.9
		}
		created = 0
		for _, i := range order {
			_, c, err := r.put(b, norm[i], verifiedDelegation)
			if err != nil {
				return fmt.Errorf("batch entry %d: %w", i, err)
			}
			if c {
				created++
			}
		}
		return addCount(tx, created)
	})
	if err != nil {
		return err
	}
	r.count.Add(created)
	for _, n := range norm {
		r.noteReplaced(n.ID)
	}
	return nil
}

// put merges the normalized n into what is stored under its ID.
func (r *Registry) put(b *bolt.Bucket, n Node, verifiedDelegation bool) (stored Node, created bool, err error) {
	key := []byte(n.ID)
	if old := b.Get(key); old != nil {
		prev, err := decode(n.ID, old)
		switch {
		case err != nil && !verifiedDelegation:
			// The damaged record may bind the node to an owner that this
			// registration, naming none or an unverified one, must not
			// erase: refuse, and leave the record to the operator.
			r.noteDamaged(n.ID, old, err)
			return Node{}, false, fmt.Errorf("%w; refused: the record may hold an owner binding (register with the owner's delegation, or have the operator delete the record)", err)
		case err != nil:
			// The owner's verified delegation would replace a readable
			// record's owner too, so nothing it could bind is lost.
			r.log.Warn("registry: damaged record replaced by a registration with a verified owner delegation",
				"id", n.ID, "owner", n.Owner, "old_bytes", len(old), "old", clip(string(old)), "err", clip(err.Error()))
			if n.FirstSeen.IsZero() || n.FirstSeen.After(n.LastSeen) {
				n.FirstSeen = n.LastSeen
			}
			prev = Node{Owner: n.Owner, FirstSeen: n.FirstSeen}
		}
		switch {
		case n.Owner == "":
			n.Owner = prev.Owner
		case prev.Owner != "" && n.Owner != prev.Owner && !verifiedDelegation:
			return Node{}, false, fmt.Errorf("%w: node %s is owned by %s, not %s (a new delegation from the owner is required)",
				ErrOwnerConflict, n.ID, prev.Owner, n.Owner)
		case prev.Owner != "" && n.Owner != prev.Owner:
			r.log.Info("node owner changed by delegation", "id", n.ID, "from", prev.Owner, "to", n.Owner)
		}
		n.FirstSeen = prev.FirstSeen
		if n.SeenOnline.IsZero() {
			n.SeenOnline = prev.SeenOnline
		}
		if prev.Role == protocol.RoleRelay && n.Role != protocol.RoleRelay {
			// Approvals are for a relay; a node that stops being one
			// loses them rather than regaining them if it comes back.
			if err := dropApprovals(b.Tx(), n.ID); err != nil {
				return Node{}, false, err
			}
		}
	} else {
		created = true
		if n.FirstSeen.IsZero() || n.FirstSeen.After(n.LastSeen) {
			n.FirstSeen = n.LastSeen
		}
	}
	val, err := json.Marshal(n)
	if err != nil {
		return Node{}, false, fmt.Errorf("registry: encoding node %s: %w", n.ID, err)
	}
	if err := b.Put(key, val); err != nil {
		return Node{}, false, fmt.Errorf("registry: storing node %s: %w", n.ID, err)
	}
	return n, created, nil
}

// Get returns the node with the ID, or ErrNotFound.
func (r *Registry) Get(id string) (Node, error) {
	var n Node
	err := r.view(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketNodes).Get([]byte(id))
		if v == nil {
			return fmt.Errorf("%w: %q", ErrNotFound, id)
		}
		var err error
		if n, err = decode(id, v); err != nil {
			r.noteDamaged(id, v, err)
		}
		return err
	})
	if errors.Is(err, ErrCorrupt) {
		r.reportUnlisted()
	}
	return n, err
}

// Delete removes the node with the ID, and any relay approvals it had, or
// returns ErrNotFound.
func (r *Registry) Delete(id string) error {
	err := r.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketNodes)
		if b.Get([]byte(id)) == nil {
			return fmt.Errorf("%w: %q", ErrNotFound, id)
		}
		if err := b.Delete([]byte(id)); err != nil {
			return err
		}
		if err := dropApprovals(tx, id); err != nil {
			return err
		}
		return addCount(tx, -1)
	})
	if err == nil {
		r.count.Add(-1)
		r.noteReplaced(id)
	}
	return err
}

// ForEach calls fn for every node in ID order, stopping at the first error,
// which it returns as is. It runs inside one read transaction: fn must not
// write to the registry (a write may wait for the read to end).
//
// A record that cannot be decoded is skipped, not returned as an error: it
// is reported once (an error log naming its key, and Damaged) and left as
// it is in the file, and every other node is still served. Damage bbolt
// itself reports still ends ForEach with ErrCorrupt.
func (r *Registry) ForEach(fn func(Node) error) error {
	var fnPanic any
	defer r.reportUnlisted()
	err := r.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketNodes).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			n, err := decode(string(k), v)
			if err != nil {
				r.noteDamaged(string(k), v, err)
				continue
			}
			if err := callFn(fn, n, &fnPanic); err != nil {
				return err
			}
		}
		return nil
	})
	if fnPanic != nil {
		panic(fnPanic) // the caller's bug, not damage: let it through
	}
	return err
}

// callFn runs a ForEach callback, setting *p to what it panics with so that
// guard does not mistake it for bbolt reporting damage.
func callFn(fn func(Node) error, n Node, p *any) (err error) {
	defer func() {
		if v := recover(); v != nil {
			*p = v
			err = errors.New("callback panicked")
		}
	}()
	return fn(n)
}

// decode reads a stored record. The record is checked against its key so
// that a damaged or hand-edited file cannot feed the router a node under
// another node's ID.
func decode(key string, v []byte) (Node, error) {
	var n Node
	if err := json.Unmarshal(v, &n); err != nil {
		return Node{}, fmt.Errorf("%w: record %q: %s", ErrCorrupt, clip(key), clip(err.Error()))
	}
	if n.ID != key {
		return Node{}, fmt.Errorf("%w: record %q holds node %q", ErrCorrupt, clip(key), clip(n.ID))
	}
	return n, nil
}

// view and update run fn in a transaction, turning a bbolt panic (which is
// how it reports some kinds of damage) into ErrCorrupt.
func (r *Registry) view(fn func(*bolt.Tx) error) error {
	return r.db.View(func(tx *bolt.Tx) error { return guard(tx, fn) })
}

func (r *Registry) update(fn func(*bolt.Tx) error) error {
	return r.db.Update(func(tx *bolt.Tx) error { return guard(tx, fn) })
}

func (r *Registry) batch(fn func(*bolt.Tx) error) error {
	return r.db.Batch(func(tx *bolt.Tx) error { return guard(tx, fn) })
}

func guard(tx *bolt.Tx, fn func(*bolt.Tx) error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%w: %v", ErrCorrupt, p)
		}
	}()
	return fn(tx)
}

// nowUTC is the current time as stored: UTC, without a monotonic reading.
func (r *Registry) nowUTC() time.Time {
	return r.now().UTC().Round(0)
}
