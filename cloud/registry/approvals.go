package registry

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/blockcast/beacon/shared/protocol"
	bolt "go.etcd.io/bbolt"
)

// A relay's CIDRs in its registration are only a request. The prefixes the
// router may send clients to are the operator's approvals, kept here in a
// bucket of their own: a registration writes only the node's record, so no
// registration, however often repeated, can widen what was approved.
//
// An approval may name prefixes the relay did not request (the operator
// decides coverage; the relay's list is a hint). It stays until the
// operator revokes it, the node is deleted, or the node re-registers as
// something other than a relay.

// Errors callers branch on, besides ErrNotFound and ErrInvalid.
var (
	// ErrNotRelayNode means the node exists but is not a relay.
	ErrNotRelayNode = errors.New("node is not a relay")
	// ErrNotApproved means a revocation named a prefix that is not
	// approved for the relay.
	ErrNotApproved = errors.New("prefix is not approved")
)

// MaxByLen bounds the operator's name recorded with an approval.
const MaxByLen = 64

var bucketApprovals = []byte("approvals") // relay ID → JSON approvalRecord

// Approval is one prefix the operator approved for a relay: who (the name
// the operator gave, and the address the request came from) and when.
type Approval struct {
	CIDR string    `json:"cidr"`
	By   string    `json:"by,omitempty"`
	From string    `json:"from,omitempty"`
	At   time.Time `json:"at"`
}

type approvalRecord struct {
	ID       string     `json:"id"`
	Prefixes []Approval `json:"prefixes"`
}

// Approve adds cidrs to the prefixes approved for relay id and returns the
// prefixes newly approved (those already approved keep their first record)
// and the whole approved list. An empty cidrs approves everything the relay
// currently requests. by names the operator (optional, printable ASCII) and
// from where the request came from; both are recorded with the time.
func (r *Registry) Approve(id string, cidrs []string, by, from string) (added []string, all []Approval, err error) {
	if err := checkBy(by); err != nil {
		return nil, nil, err
	}
	if len(from) > 128 {
		from = from[:128]
	}
	want, err := canonicalCIDRs(cidrs)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: cidrs: %v", ErrInvalid, err)
	}
	now := r.nowUTC()
	err = r.update(func(tx *bolt.Tx) error {
		n, err := storedRelayNode(tx, id)
		if err != nil {
			return err
		}
		if len(cidrs) == 0 {
			if len(n.CIDRs) == 0 {
				return fmt.Errorf("%w: relay %s requested no prefixes: name the prefixes to approve", ErrInvalid, id)
			}
			want = n.CIDRs
		}
		rec, err := getApprovals(tx, id)
		if err != nil {
			return err
		}
		have := make(map[string]bool, len(rec.Prefixes))
		for _, a := range rec.Prefixes {
			have[a.CIDR] = true
		}
		added = added[:0]
		for _, c := range want {
			if !have[c] {
				have[c] = true
				added = append(added, c)
				rec.Prefixes = append(rec.Prefixes, Approval{CIDR: c, By: by, From: from, At: now})
			}
		}
		if len(rec.Prefixes) > MaxCIDRs {
			return fmt.Errorf("%w: relay %s would have %d approved prefixes, at most %d", ErrInvalid, id, len(rec.Prefixes), MaxCIDRs)
		}
		sortApprovals(rec.Prefixes)
		all = rec.Prefixes
		return putApprovals(tx, id, rec)
	})
	if err != nil {
		return nil, nil, err
	}
	return added, all, nil
}

// Revoke removes cidrs from the prefixes approved for relay id, or all of
// them when cidrs is empty, and returns what it removed and what remains. A
// listed prefix that is not approved fails the whole call with
// ErrNotApproved (a typo must not leave the prefix routed unnoticed).
// Revoking everything from a relay with no approvals is not an error.
func (r *Registry) Revoke(id string, cidrs []string) (removed []string, left []Approval, err error) {
	drop, err := canonicalCIDRs(cidrs)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: cidrs: %v", ErrInvalid, err)
	}
	err = r.update(func(tx *bolt.Tx) error {
		if _, err := storedRelayNode(tx, id); err != nil {
			return err
		}
		rec, err := getApprovals(tx, id)
		if err != nil {
			return err
		}
		removed, left = removed[:0], nil
		if len(cidrs) == 0 {
			for _, a := range rec.Prefixes {
				removed = append(removed, a.CIDR)
			}
			return dropApprovals(tx, id)
		}
		gone := make(map[string]bool, len(drop))
		for _, c := range drop {
			gone[c] = true
		}
		for _, a := range rec.Prefixes {
			if gone[a.CIDR] {
				removed = append(removed, a.CIDR)
				delete(gone, a.CIDR)
			} else {
				left = append(left, a)
			}
		}
		if len(gone) > 0 {
			var missing []string
			for _, c := range drop {
				if gone[c] {
					missing = append(missing, c)
				}
			}
			return fmt.Errorf("%w: %s not approved for relay %s (nothing was revoked)", ErrNotApproved, strings.Join(missing, ", "), id)
		}
		if len(left) == 0 {
			return dropApprovals(tx, id)
		}
		return putApprovals(tx, id, approvalRecord{ID: id, Prefixes: left})
	})
	if err != nil {
		return nil, nil, err
	}
	return removed, left, nil
}

// Approvals returns the prefixes approved for id, sorted; none is not an
// error (the node may not even exist).
func (r *Registry) Approvals(id string) ([]Approval, error) {
	var out []Approval
	err := r.view(func(tx *bolt.Tx) error {
		rec, err := getApprovals(tx, id)
		out = rec.Prefixes
		return err
	})
	return out, err
}

// ForEachApproval calls fn for every relay with approvals, in ID order,
// stopping at the first error. fn must not write to the registry.
func (r *Registry) ForEachApproval(fn func(id string, approved []Approval) error) error {
	return r.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketApprovals).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			rec, err := decodeApprovals(string(k), v)
			if err != nil {
				return err
			}
			if err := fn(rec.ID, rec.Prefixes); err != nil {
				return err
			}
		}
		return nil
	})
}

// Prefixes parses approvals into prefixes for the router.
func Prefixes(approved []Approval) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(approved))
	for _, a := range approved {
		// decodeApprovals checked every entry.
		if p, err := netip.ParsePrefix(a.CIDR); err == nil {
			out = append(out, p)
		}
	}
	return out
}

func storedRelayNode(tx *bolt.Tx, id string) (Node, error) {
	v := tx.Bucket(bucketNodes).Get([]byte(id))
	if v == nil {
		return Node{}, fmt.Errorf("%w: %q", ErrNotFound, clip(id))
	}
	n, err := decode(id, v)
	if err != nil {
		return Node{}, err
	}
	if n.Role != protocol.RoleRelay {
		return Node{}, fmt.Errorf("%w: %s registered as %q", ErrNotRelayNode, id, n.Role)
	}
	return n, nil
}

func getApprovals(tx *bolt.Tx, id string) (approvalRecord, error) {
	v := tx.Bucket(bucketApprovals).Get([]byte(id))
	if v == nil {
		return approvalRecord{ID: id}, nil
	}
	return decodeApprovals(id, v)
}

func putApprovals(tx *bolt.Tx, id string, rec approvalRecord) error {
	rec.ID = id
	val, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("registry: encoding approvals of %s: %w", id, err)
	}
	if err := tx.Bucket(bucketApprovals).Put([]byte(id), val); err != nil {
		return fmt.Errorf("registry: storing approvals of %s: %w", id, err)
	}
	return nil
}

func dropApprovals(tx *bolt.Tx, id string) error {
	b := tx.Bucket(bucketApprovals)
	if b == nil || b.Get([]byte(id)) == nil {
		return nil
	}
	return b.Delete([]byte(id))
}

// decodeApprovals reads a stored approval record, checking it as strictly
// as a new approval: a damaged or hand-edited file must not route a prefix
// no operator approved through the API's rules.
func decodeApprovals(key string, v []byte) (approvalRecord, error) {
	var rec approvalRecord
	if err := json.Unmarshal(v, &rec); err != nil {
		return approvalRecord{}, fmt.Errorf("%w: approvals %q: %v", ErrCorrupt, clip(key), err)
	}
	if rec.ID != key {
		return approvalRecord{}, fmt.Errorf("%w: approvals %q hold relay %q", ErrCorrupt, clip(key), clip(rec.ID))
	}
	cidrs := make([]string, len(rec.Prefixes))
	for i, a := range rec.Prefixes {
		cidrs[i] = a.CIDR
	}
	canon, err := canonicalCIDRs(cidrs)
	if err != nil {
		return approvalRecord{}, fmt.Errorf("%w: approvals %q: %v", ErrCorrupt, clip(key), err)
	}
	for i := range canon {
		if canon[i] != cidrs[i] {
			return approvalRecord{}, fmt.Errorf("%w: approvals %q: %q is not in canonical form", ErrCorrupt, clip(key), clip(cidrs[i]))
		}
	}
	return rec, nil
}

func checkBy(by string) error {
	if len(by) > MaxByLen {
		return fmt.Errorf("%w: by: longer than %d bytes", ErrInvalid, MaxByLen)
	}
	if i := strings.IndexFunc(by, func(c rune) bool { return c < 0x20 || c > 0x7e }); i >= 0 {
		return fmt.Errorf("%w: by %q: only printable ASCII", ErrInvalid, clip(by))
	}
	return nil
}

// sortApprovals orders by address family, address, then length, so lists
// read naturally and compare equal across calls.
func sortApprovals(a []Approval) {
	slices.SortFunc(a, func(x, y Approval) int {
		px, _ := netip.ParsePrefix(x.CIDR)
		py, _ := netip.ParsePrefix(y.CIDR)
		if c := px.Addr().Compare(py.Addr()); c != 0 {
			return c
		}
		return px.Bits() - py.Bits()
	})
}
