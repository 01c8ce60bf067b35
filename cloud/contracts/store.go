package contracts

import (
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

var bucketContracts = []byte("contracts")

// MaxPerNode bounds the contracts one node may have stored: an owner
// cannot fill castd's disk with short contracts.
const MaxPerNode = 1000

// Store keeps contracts in a bbolt file, and all of them in memory (a
// contract is small, and at most MaxPerNode per node).
type Store struct {
	db  *bolt.DB
	log *slog.Logger

	mu     sync.Mutex
	byID   map[string]Contract
	byNode map[string][]string // node → contract IDs
}

// Open opens (creating) the store at path. A record that no longer
// verifies is logged and skipped, never served.
func Open(path string, log *slog.Logger) (*Store, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("contracts: %w", err)
	}
	s := &Store{db: db, log: log, byID: map[string]Contract{}, byNode: map[string][]string{}}
	err = db.Update(func(tx *bolt.Tx) error {
		if _, err := tx.CreateBucketIfNotExists(bucketAnchors); err != nil {
			return err
		}
		b, err := tx.CreateBucketIfNotExists(bucketContracts)
		if err != nil {
			return err
		}
		return b.ForEach(func(k, v []byte) error {
			c, err := Decode(v)
			if err == nil && c.ID != string(k) {
				err = fmt.Errorf("%w: stored under %q", ErrBadContract, k)
			}
			if err != nil {
				log.Error("contracts: damaged record skipped", "key", string(k), "err", err)
				return nil
			}
			s.add(c)
			return nil
		})
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("contracts: %w", err)
	}
	return s, nil
}

func (s *Store) add(c Contract) {
	s.byID[c.ID] = c
	n := c.Offer.Node.String()
	s.byNode[n] = append(s.byNode[n], c.ID)
}

// Close closes the file.
func (s *Store) Close() error { return s.db.Close() }

// Put stores a verified contract. The same contract again is not an
// error (it returns the stored one); another one whose period overlaps one
// of the node's contracts is (ErrOverlap).
func (s *Store) Put(c Contract) (Contract, error) {
	if err := c.Verify(); err != nil {
		return Contract{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.byID[c.ID]; ok {
		return old, nil
	}
	ids := s.byNode[c.Offer.Node.String()]
	if len(ids) >= MaxPerNode {
		return Contract{}, fmt.Errorf("%w: node has %d contracts, at most %d", ErrTerms, len(ids), MaxPerNode)
	}
	for _, id := range ids {
		o := s.byID[id].Offer
		if c.Offer.Start.Before(o.End) && o.Start.Before(c.Offer.End) {
			return Contract{}, fmt.Errorf("%w: %s (%s to %s)", ErrOverlap, id, o.Start.Format(time.RFC3339), o.End.Format(time.RFC3339))
		}
	}
	rec, err := Encode(c)
	if err != nil {
		return Contract{}, err
	}
	if err := s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketContracts).Put([]byte(c.ID), rec)
	}); err != nil {
		return Contract{}, fmt.Errorf("contracts: %w", err)
	}
	s.add(c)
	return c, nil
}

// Get returns one contract.
func (s *Store) Get(id string) (Contract, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.byID[id]
	if !ok {
		return Contract{}, ErrNotFound
	}
	return c, nil
}

// List returns the contracts that keep selects (nil: all), by start then ID.
func (s *Store) List(keep func(Contract) bool) []Contract {
	s.mu.Lock()
	out := make([]Contract, 0, len(s.byID))
	for _, c := range s.byID {
		if keep == nil || keep(c) {
			out = append(out, c)
		}
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Offer.Start.Equal(out[j].Offer.Start) {
			return out[i].Offer.Start.Before(out[j].Offer.Start)
		}
		return out[i].ID < out[j].ID
	})
	return out
}
