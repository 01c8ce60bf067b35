package registry

import (
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func cidrsOf(a []Approval) []string {
	var out []string
	for _, x := range a {
		out = append(out, x.CIDR)
	}
	return out
}

func mustApprovals(t *testing.T, r *Registry, id string) []string {
	t.Helper()
	a, err := r.Approvals(id)
	if err != nil {
		t.Fatal(err)
	}
	return cidrsOf(a)
}

func TestApproveRevoke(t *testing.T) {
	path := filepath.Join(t.TempDir(), "registry.db")
	r := open(t, path)
	r.now = func() time.Time { return t0 }
	id := key(1)
	if _, err := r.Upsert(relayNode(id, "198.51.100.0/24", "2001:db8::/48"), false); err != nil {
		t.Fatal(err)
	}
	if got := mustApprovals(t, r, id); got != nil {
		t.Fatalf("a fresh relay has approvals %q", got)
	}
	// Empty list: everything requested.
	added, all, err := r.Approve(id, nil, "alice", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"198.51.100.0/24", "2001:db8::/48"}; !reflect.DeepEqual(added, want) || !reflect.DeepEqual(cidrsOf(all), want) {
		t.Fatalf("approve all: added %q all %q, want %q", added, cidrsOf(all), want)
	}
	if a := all[0]; a.By != "alice" || a.From != "127.0.0.1" || !a.At.Equal(t0) {
		t.Errorf("approval record %+v lacks who/when", a)
	}
	// A prefix the relay did not request may be approved (the operator's
	// call); one already approved is kept as first recorded.
	added, all, err = r.Approve(id, []string{"203.0.113.0/24", "198.51.100.0/24"}, "bob", "")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(added, []string{"203.0.113.0/24"}) || all[0].By != "alice" {
		t.Fatalf("added %q, first %+v", added, all[0])
	}
	// Re-registering with wider CIDRs widens nothing approved.
	if _, err := r.Upsert(relayNode(id, "0.0.0.0/0", "::/0"), false); err != nil {
		t.Fatal(err)
	}
	if got, want := mustApprovals(t, r, id), []string{"198.51.100.0/24", "203.0.113.0/24", "2001:db8::/48"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("after re-registration approvals %q, want %q", got, want)
	}
	// Approvals survive a restart.
	r.Close()
	r = open(t, path)
	defer r.Close()
	if got := mustApprovals(t, r, id); len(got) != 3 {
		t.Fatalf("after reopen %q", got)
	}
	// Revoking a prefix that is not approved changes nothing.
	if _, _, err := r.Revoke(id, []string{"198.51.100.0/24", "10.0.0.0/8"}); !errors.Is(err, ErrNotApproved) {
		t.Fatalf("revoke of an unapproved prefix: %v", err)
	}
	if got := mustApprovals(t, r, id); len(got) != 3 {
		t.Fatalf("failed revoke changed approvals to %q", got)
	}
	removed, left, err := r.Revoke(id, []string{"203.0.113.0/24"})
	if err != nil || !reflect.DeepEqual(removed, []string{"203.0.113.0/24"}) || len(left) != 2 {
		t.Fatalf("revoke: %q %q %v", removed, cidrsOf(left), err)
	}
	removed, left, err = r.Revoke(id, nil)
	if err != nil || len(removed) != 2 || left != nil {
		t.Fatalf("revoke all: %q %q %v", removed, cidrsOf(left), err)
	}
	if got := mustApprovals(t, r, id); got != nil {
		t.Fatalf("after revoke all %q", got)
	}
	if _, _, err := r.Revoke(id, nil); err != nil {
		t.Fatalf("revoke all of nothing: %v", err)
	}
}

func TestApproveRefused(t *testing.T) {
	r, _ := tempRegistry(t)
	relay, beacon, bare := key(1), key(2), key(3)
	r.Upsert(relayNode(relay, "198.51.100.0/24"), false)
	r.Upsert(relayNode(bare), false)
	r.Upsert(beaconNode(beacon), false)
	for _, tc := range []struct {
		id    string
		cidrs []string
		by    string
		want  error
	}{
		{key(9), nil, "", ErrNotFound},
		{beacon, []string{"10.0.0.0/8"}, "", ErrNotRelayNode},
		{bare, nil, "", ErrInvalid}, // requested nothing: name the prefixes
		{relay, []string{"10.0.0.1/8"}, "", ErrInvalid},
		{relay, []string{"::ffff:10.0.0.0/104"}, "", ErrInvalid},
		{relay, []string{"10.0.0.0/8", "10.0.0.0/8"}, "", ErrInvalid},
		{relay, []string{"banana"}, "", ErrInvalid},
		{relay, []string{"10.0.0.0/8"}, "bad\nname", ErrInvalid},
	} {
		if _, _, err := r.Approve(tc.id, tc.cidrs, tc.by, ""); !errors.Is(err, tc.want) {
			t.Errorf("Approve(%.8s, %q, %q) = %v, want %v", tc.id, tc.cidrs, tc.by, err, tc.want)
		}
	}
	if got := mustApprovals(t, r, relay); got != nil {
		t.Fatalf("refused approvals stored: %q", got)
	}
	// The bound counts the union.
	many := make([]string, MaxCIDRs)
	for i := range many {
		many[i] = netipPrefix4(i)
	}
	if _, _, err := r.Approve(relay, many, "", ""); err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.Approve(relay, []string{"203.0.113.0/24"}, "", ""); !errors.Is(err, ErrInvalid) {
		t.Fatalf("approval past %d prefixes: %v", MaxCIDRs, err)
	}
}

func netipPrefix4(i int) string {
	return fmt.Sprintf("10.%d.%d.0/24", i>>8, i&0xff)
}

// Deleting a relay (by the operator or by expiry), or its turning into a
// beacon, removes its approvals:
// they must not come back if the key registers as a relay again.
func TestApprovalsDroppedWithNode(t *testing.T) {
	r, _ := tempRegistry(t)
	a, b, c := key(1), key(2), key(3)
	for _, id := range []string{a, b, c} {
		r.Upsert(relayNode(id, "198.51.100.0/24"), false)
		if _, _, err := r.Approve(id, nil, "", ""); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Delete(a); err != nil {
		t.Fatal(err)
	}
	r.Upsert(beaconNode(b), false)
	if gone, err := r.ExpireUnseen(t0.Add(time.Hour), c); err != nil || len(gone) != 1 {
		t.Fatalf("ExpireUnseen: %v %v", gone, err)
	}
	for _, id := range []string{a, b, c} {
		r.Upsert(relayNode(id, "198.51.100.0/24"), false)
		if got := mustApprovals(t, r, id); got != nil {
			t.Errorf("%.8s: approvals %q came back", id, got)
		}
	}
	n := 0
	r.ForEachApproval(func(string, []Approval) error { n++; return nil })
	if n != 0 {
		t.Errorf("ForEachApproval saw %d relays", n)
	}
}

// A hand-edited approvals record is refused, not routed.
func TestApprovalsCorrupt(t *testing.T) {
	r, path := tempRegistry(t)
	id := key(1)
	r.Upsert(relayNode(id, "198.51.100.0/24"), false)
	r.Close()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{
		`{"id":"` + id + `","prefixes":[{"cidr":"10.0.0.1/8"}]}`,
		`{"id":"` + key(2) + `","prefixes":[]}`,
		`{"id":"` + id + `","prefixes":[{"cidr":"10.0.0.0/8"},{"cidr":"10.0.0.0/8"}]}`,
		`{"id":"` + id + `","prefixes":[{"cidr":"2001:DB8::/32"}]}`,
		`[`,
	} {
		if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketApprovals).Put([]byte(id), []byte(v)) }); err != nil {
			t.Fatal(err)
		}
		db.Close()
		r = open(t, path)
		if _, err := r.Approvals(id); !errors.Is(err, ErrCorrupt) {
			t.Errorf("record %s: %v, want ErrCorrupt", v, err)
		}
		if err := r.ForEachApproval(func(string, []Approval) error { return nil }); !errors.Is(err, ErrCorrupt) {
			t.Errorf("record %s: ForEachApproval %v, want ErrCorrupt", v, err)
		}
		r.Close()
		if db, err = bolt.Open(path, 0o600, nil); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()
}

func FuzzDecodeApprovals(f *testing.F) {
	id := key(1)
	f.Add([]byte(`{"id":"` + id + `","prefixes":[{"cidr":"198.51.100.0/24","by":"a","from":"127.0.0.1","at":"2025-03-01T12:00:00Z"}]}`))
	f.Add([]byte(`{"id":"` + id + `","prefixes":[{"cidr":"2001:db8::/32"},{"cidr":"10.0.0.0/8"}]}`))
	f.Add([]byte(`{"id":"x"}`))
	f.Fuzz(func(t *testing.T, v []byte) {
		rec, err := decodeApprovals(id, v)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		// Whatever is accepted is what the API would have stored.
		cidrs := cidrsOf(rec.Prefixes)
		canon, err := canonicalCIDRs(cidrs)
		if err != nil || !reflect.DeepEqual(canon, cidrs) && len(cidrs) > 0 {
			t.Fatalf("accepted %q, canonical %q (%v)", cidrs, canon, err)
		}
		if len(Prefixes(rec.Prefixes)) != len(rec.Prefixes) {
			t.Fatalf("Prefixes dropped entries of %q", cidrs)
		}
	})
}
