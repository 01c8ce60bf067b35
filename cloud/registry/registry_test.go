package registry

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mr-tron/base58"
	bolt "go.etcd.io/bbolt"
)

var update = flag.Bool("update", false, "rewrite testdata golden files")

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// key returns a deterministic, real ed25519 public key in base58.
func key(seed byte) string {
	var s [ed25519.SeedSize]byte
	s[0] = seed
	s[1] = 0x5a
	pub := ed25519.NewKeyFromSeed(s[:]).Public().(ed25519.PublicKey)
	return base58.Encode(pub)
}

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func open(t testing.TB, path string) *Registry {
	t.Helper()
	r, err := Open(path, quiet)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return r
}

func tempRegistry(t testing.TB) (*Registry, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "registry.db")
	r := open(t, path)
	t.Cleanup(func() { r.Close() })
	return r, path
}

func beaconNode(id string) Node {
	return Node{
		ID: id, Role: "beacon", LANURL: "http://192.168.1.10:8080",
		Version: "0.3.1", Capabilities: []string{"amt", "cache"},
		PublicIP: netip.MustParseAddr("203.0.113.7"), LastSeen: t0,
	}
}

func relayNode(id string, cidrs ...string) Node {
	return Node{
		ID: id, Role: "relay", LANURL: "https://relay.example.net/edge",
		CIDRs: cidrs, PublicIP: netip.MustParseAddr("198.51.100.1"), LastSeen: t0,
	}
}

func TestUpsertGetAndReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "registry.db")
	r := open(t, path)
	b := beaconNode(key(1))
	got, err := r.Upsert(b, false)
	if err != nil {
		t.Fatal(err)
	}
	want := b
	want.FirstSeen = t0
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Upsert returned\n%+v\nwant\n%+v", got, want)
	}

	// A later registration keeps FirstSeen and moves LastSeen and the IP.
	b.LastSeen = t0.Add(time.Hour)
	b.PublicIP = netip.MustParseAddr("::ffff:198.51.100.20")
	got, err = r.Upsert(b, false)
	if err != nil {
		t.Fatal(err)
	}
	want.LastSeen = b.LastSeen
	want.PublicIP = netip.MustParseAddr("198.51.100.20") // unmapped
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("second Upsert returned\n%+v\nwant\n%+v", got, want)
	}
	rl, err := r.Upsert(relayNode(key(2), "10.0.0.0/8", "2001:DB8::/32"), false)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(rl.CIDRs, []string{"10.0.0.0/8", "2001:db8::/32"}) {
		t.Errorf("CIDRs stored as %q, want canonical text", rl.CIDRs)
	}
	if r.Len() != 2 {
		t.Errorf("Len = %d, want 2", r.Len())
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}

	r = open(t, path)
	defer r.Close()
	if r.Len() != 2 {
		t.Errorf("Len after reopen = %d, want 2", r.Len())
	}
	g, err := r.Get(b.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(g, want) {
		t.Fatalf("Get after reopen\n%+v\nwant\n%+v", g, want)
	}
	if g, err := r.Get(rl.ID); err != nil || !reflect.DeepEqual(g, rl) {
		t.Fatalf("Get relay after reopen = %+v, %v", g, err)
	}
	if _, err := r.Get(key(3)); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get unknown: %v, want ErrNotFound", err)
	}
}

func TestUpsertDefaultsTimes(t *testing.T) {
	r, _ := tempRegistry(t)
	r.now = func() time.Time { return t0.Add(5 * time.Minute).In(time.FixedZone("X", 3600)) }
	n := beaconNode(key(1))
	n.LastSeen = time.Time{}
	got, err := r.Upsert(n, false)
	if err != nil {
		t.Fatal(err)
	}
	if want := t0.Add(5 * time.Minute); !got.LastSeen.Equal(want) || got.LastSeen.Location() != time.UTC || !got.FirstSeen.Equal(want) {
		t.Errorf("times %v / %v, want %v in UTC", got.FirstSeen, got.LastSeen, want)
	}
	// An imported node may bring its FirstSeen; one in the future is not believed.
	n2 := beaconNode(key(2))
	n2.FirstSeen = t0.Add(-24 * time.Hour)
	if got, _ := r.Upsert(n2, false); !got.FirstSeen.Equal(n2.FirstSeen) {
		t.Errorf("FirstSeen %v, want %v", got.FirstSeen, n2.FirstSeen)
	}
	n3 := beaconNode(key(3))
	n3.FirstSeen = t0.Add(24 * time.Hour)
	if got, _ := r.Upsert(n3, false); !got.FirstSeen.Equal(t0) {
		t.Errorf("FirstSeen %v, want LastSeen %v", got.FirstSeen, t0)
	}
}

func TestValidation(t *testing.T) {
	r, _ := tempRegistry(t)
	many := make([]string, MaxCIDRs+1)
	for i := range many {
		many[i] = fmt.Sprintf("10.%d.%d.0/24", i/256, i%256)
	}
	tests := []struct {
		name   string
		modify func(*Node)
		errHas string // "" means accepted
	}{
		{"valid beacon", func(n *Node) {}, ""},
		{"valid relay", func(n *Node) { *n = relayNode(n.ID, "10.0.0.0/8", "2001:db8::/32", "192.0.2.1/32") }, ""},
		{"relay without CIDRs", func(n *Node) { *n = relayNode(n.ID) }, ""},
		{"relay at the limit", func(n *Node) { *n = relayNode(n.ID, many[:MaxCIDRs]...) }, ""},
		{"LAN URL with path", func(n *Node) { n.LANURL = "http://h:1/sub/" }, ""},
		{"IPv6 LAN URL", func(n *Node) { n.LANURL = "http://[fd00::1]:8080" }, ""},
		{"IPv6 public IP", func(n *Node) { n.PublicIP = netip.MustParseAddr("2001:db8::1") }, ""},

		{"empty ID", func(n *Node) { n.ID = "" }, "node ID"},
		{"short ID", func(n *Node) { n.ID = n.ID[:20] }, "node ID"},
		{"ID with 0", func(n *Node) { n.ID = "0" + n.ID[1:] }, "node ID"},
		{"ID of 33 bytes", func(n *Node) { n.ID = base58.Encode(make([]byte, 33)) }, "node ID"},
		{"ID of 31 bytes", func(n *Node) { n.ID = base58.Encode(bytes.Repeat([]byte{0xff}, 31)) }, "node ID"},
		{"bad owner", func(n *Node) { n.Owner = "not-a-key" }, "owner"},
		{"no role", func(n *Node) { n.Role = "" }, "role"},
		{"unknown role", func(n *Node) { n.Role = "cast" }, "role"},
		{"no LAN URL", func(n *Node) { n.LANURL = "" }, "lan_url"},
		{"relative LAN URL", func(n *Node) { n.LANURL = "/x" }, "lan_url"},
		{"ftp LAN URL", func(n *Node) { n.LANURL = "ftp://h/" }, "lan_url"},
		{"opaque LAN URL", func(n *Node) { n.LANURL = "http:h" }, "lan_url"},
		{"LAN URL without host", func(n *Node) { n.LANURL = "http://:8080/" }, "lan_url"},
		{"LAN URL with user info", func(n *Node) { n.LANURL = "http://u:p@h/" }, "user info"},
		{"LAN URL with query", func(n *Node) { n.LANURL = "http://h/?a=b" }, "query"},
		{"LAN URL with empty query", func(n *Node) { n.LANURL = "http://h/?" }, "query"},
		{"LAN URL with fragment", func(n *Node) { n.LANURL = "http://h/#f" }, "fragment"},
		{"LAN URL with empty fragment", func(n *Node) { n.LANURL = "http://h/#" }, "fragment"},
		{"LAN URL with space", func(n *Node) { n.LANURL = "http://h/a b" }, "lan_url"},
		{"long LAN URL", func(n *Node) { n.LANURL = "http://h/" + strings.Repeat("a", MaxURLLen) }, "lan_url"},
		{"no public IP", func(n *Node) { n.PublicIP = netip.Addr{} }, "public IP"},
		{"long version", func(n *Node) { n.Version = strings.Repeat("1", MaxVersionLen+1) }, "version"},
		{"control in version", func(n *Node) { n.Version = "1.0\n" }, "version"},
		{"too many capabilities", func(n *Node) { n.Capabilities = many[:MaxCapabilities+1] }, "capabilities"},
		{"empty capability", func(n *Node) { n.Capabilities = []string{""} }, "capabilities"},
		{"capability with space", func(n *Node) { n.Capabilities = []string{"a b"} }, "capabilities"},
		{"duplicate capability", func(n *Node) { n.Capabilities = []string{"amt", "amt"} }, "twice"},
		{"beacon with CIDRs", func(n *Node) { n.CIDRs = []string{"10.0.0.0/8"} }, "only relays"},
		{"host bits set", func(n *Node) { *n = relayNode(n.ID, "10.0.0.1/8") }, "did you mean 10.0.0.0/8"},
		{"IPv6 host bits set", func(n *Node) { *n = relayNode(n.ID, "2001:db8::1/32") }, "did you mean 2001:db8::/32"},
		{"not a CIDR", func(n *Node) { *n = relayNode(n.ID, "10.0.0.0") }, "not a CIDR"},
		{"CIDR too long", func(n *Node) { *n = relayNode(n.ID, "10.0.0.0/33") }, "not a CIDR"},
		{"CIDR with zone", func(n *Node) { *n = relayNode(n.ID, "fe80::%eth0/64") }, "not a CIDR"},
		{"mapped CIDR", func(n *Node) { *n = relayNode(n.ID, "::ffff:10.0.0.0/104") }, "IPv4-mapped"},
		{"duplicate CIDR", func(n *Node) { *n = relayNode(n.ID, "10.0.0.0/8", "10.0.0.0/8") }, "twice"},
		{"duplicate CIDR spelled differently", func(n *Node) { *n = relayNode(n.ID, "2001:db8::/32", "2001:DB8::/32") }, "twice"},
		{"too many CIDRs", func(n *Node) { *n = relayNode(n.ID, many...) }, "at most 1024"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := beaconNode(key(byte(i)))
			tt.modify(&n)
			_, err := r.Upsert(n, false)
			switch {
			case tt.errHas == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tt.errHas == "":
				return
			case !errors.Is(err, ErrInvalid):
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			case !strings.Contains(err.Error(), tt.errHas):
				t.Fatalf("error %q does not mention %q", err, tt.errHas)
			}
			if _, err := r.Get(n.ID); !errors.Is(err, ErrNotFound) {
				t.Errorf("refused node was stored (Get: %v)", err)
			}
		})
	}
}

func TestOwnerRule(t *testing.T) {
	r, _ := tempRegistry(t)
	id, alice, bob := key(1), key(10), key(11)
	reg := func(owner string, verified bool) (Node, error) {
		n := beaconNode(id)
		n.Owner = owner
		return r.Upsert(n, verified)
	}
	steps := []struct {
		name      string
		owner     string
		verified  bool
		wantErr   error
		wantOwner string
	}{
		{"unowned", "", false, nil, ""},
		{"first owner binds", alice, true, nil, alice},
		{"no owner keeps it", "", false, nil, alice},
		{"same owner", alice, false, nil, alice},
		{"other owner refused", bob, false, ErrOwnerConflict, alice},
		{"other owner with verified delegation", bob, true, nil, bob},
		{"old owner now refused", alice, false, ErrOwnerConflict, bob},
	}
	for _, s := range steps {
		got, err := reg(s.owner, s.verified)
		if !errors.Is(err, s.wantErr) || (s.wantErr == nil) != (err == nil) {
			t.Fatalf("%s: err %v, want %v", s.name, err, s.wantErr)
		}
		if err == nil && got.Owner != s.wantOwner {
			t.Fatalf("%s: returned owner %q, want %q", s.name, got.Owner, s.wantOwner)
		}
		if stored, _ := r.Get(id); stored.Owner != s.wantOwner {
			t.Fatalf("%s: stored owner %q, want %q", s.name, stored.Owner, s.wantOwner)
		}
	}
}

func TestDeleteAndForEach(t *testing.T) {
	r, _ := tempRegistry(t)
	var ids []string
	for i := 0; i < 5; i++ {
		n, err := r.Upsert(beaconNode(key(byte(i))), false)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, n.ID)
	}
	if err := r.Delete(ids[2]); err != nil {
		t.Fatal(err)
	}
	if err := r.Delete(ids[2]); !errors.Is(err, ErrNotFound) {
		t.Errorf("second Delete: %v, want ErrNotFound", err)
	}
	if r.Len() != 4 {
		t.Errorf("Len = %d, want 4", r.Len())
	}
	var seen []string
	if err := r.ForEach(func(n Node) error { seen = append(seen, n.ID); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(seen) != 4 || !sortedStrings(seen) {
		t.Errorf("ForEach saw %q, want 4 IDs in order", seen)
	}
	for _, id := range seen {
		if id == ids[2] {
			t.Error("ForEach saw the deleted node")
		}
	}
	stop := errors.New("stop")
	calls := 0
	if err := r.ForEach(func(Node) error { calls++; return stop }); err != stop || calls != 1 {
		t.Errorf("ForEach returned %v after %d calls, want the callback's error after 1", err, calls)
	}
	func() {
		defer func() {
			if p := recover(); p != "boom" {
				t.Errorf("callback panic came back as %v", p)
			}
		}()
		r.ForEach(func(Node) error { panic("boom") })
	}()
	// The registry still works after the callback panicked.
	if _, err := r.Upsert(beaconNode(key(9)), false); err != nil {
		t.Fatal(err)
	}
}

func sortedStrings(s []string) bool {
	for i := 1; i < len(s); i++ {
		if s[i-1] >= s[i] {
			return false
		}
	}
	return true
}

func TestUpsertBatch(t *testing.T) {
	r, path := tempRegistry(t)
	var batch []Node
	for i := 0; i < 100; i++ {
		batch = append(batch, beaconNode(key(byte(i))))
	}
	// A later entry for the same ID wins.
	last := beaconNode(key(7))
	last.LANURL = "http://192.168.7.7"
	batch = append(batch, last)
	if err := r.UpsertBatch(batch, false); err != nil {
		t.Fatal(err)
	}
	if r.Len() != 100 {
		t.Errorf("Len = %d, want 100", r.Len())
	}
	if n, _ := r.Get(last.ID); n.LANURL != last.LANURL {
		t.Errorf("duplicate ID: stored %q, want the later %q", n.LANURL, last.LANURL)
	}

	// All or nothing: one invalid entry, or one owner conflict, and none is written.
	owned := beaconNode(key(200))
	owned.Owner = key(201)
	if _, err := r.Upsert(owned, true); err != nil {
		t.Fatal(err)
	}
	bad := []Node{beaconNode(key(150)), beaconNode(key(151))}
	bad[1].Role = "nope"
	if err := r.UpsertBatch(bad, false); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "entry 1") {
		t.Errorf("batch with invalid entry: %v", err)
	}
	conflict := []Node{beaconNode(key(152)), owned}
	conflict[1].Owner = key(202)
	if err := r.UpsertBatch(conflict, false); !errors.Is(err, ErrOwnerConflict) {
		t.Errorf("batch with owner conflict: %v", err)
	}
	for _, id := range []string{key(150), key(152)} {
		if _, err := r.Get(id); !errors.Is(err, ErrNotFound) {
			t.Errorf("node %s of a refused batch was stored", id)
		}
	}
	if r.Len() != 101 {
		t.Errorf("Len = %d after refused batches, want 101", r.Len())
	}
	r.Close()
	r2 := open(t, path)
	defer r2.Close()
	if r2.Len() != 101 {
		t.Errorf("Len after reopen = %d, want 101", r2.Len())
	}
}

func TestCorruptFileIsRefusedAndKept(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.db")
	data := bytes.Repeat([]byte("not a bbolt file "), 4096)
	if err := os.WriteFile(garbage, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(garbage, quiet); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Open(garbage) = %v, want ErrCorrupt", err)
	}
	if got, _ := os.ReadFile(garbage); !bytes.Equal(got, data) {
		t.Error("garbage file was modified")
	}

	// A bbolt file that some other program wrote.
	foreign := filepath.Join(dir, "foreign.db")
	db, err := bolt.Open(foreign, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("other")); return err })
	db.Close()
	if _, err := Open(foreign, quiet); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "other") {
		t.Errorf("Open(foreign) = %v, want ErrCorrupt naming the bucket", err)
	}

	// A registry from a later format.
	r, path := tempRegistry(t)
	r.Close()
	poke(t, path, bucketMeta, keyFormat, []byte("99"))
	if _, err := Open(path, quiet); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "99") {
		t.Errorf("Open(format 99) = %v, want ErrCorrupt naming the format", err)
	}
}

// poke writes a raw key into a closed registry file.
func poke(t *testing.T, path string, bucket, k, v []byte) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucket).Put(k, v) }); err != nil {
		t.Fatal(err)
	}
}

func TestCorruptRecord(t *testing.T) {
	path := filepath.Join(t.TempDir(), "registry.db")
	r := open(t, path)
	good := beaconNode(key(1))
	if _, err := r.Upsert(good, false); err != nil {
		t.Fatal(err)
	}
	r.Close()
	bad, other := key(2), key(3)
	poke(t, path, bucketNodes, []byte(bad), []byte("{not json"))
	otherRec := fmt.Sprintf(`{"id":%q,"role":"beacon","lan_url":"http://h","public_ip":"192.0.2.1","first_seen":"2025-01-01T00:00:00Z","last_seen":"2025-01-01T00:00:00Z"}`, good.ID)
	poke(t, path, bucketNodes, []byte(other), []byte(otherRec))

	r = open(t, path)
	defer r.Close()
	if _, err := r.Get(bad); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Get(corrupt) = %v, want ErrCorrupt", err)
	}
	if _, err := r.Get(other); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Get(record under another key) = %v, want ErrCorrupt", err)
	}
	if _, err := r.Get(good.ID); err != nil {
		t.Errorf("Get(good) = %v", err)
	}
	// ForEach skips them and serves the rest (damaged_test.go has more).
	var seen []string
	if err := r.ForEach(func(n Node) error { seen = append(seen, n.ID); return nil }); err != nil || len(seen) != 1 || seen[0] != good.ID {
		t.Errorf("ForEach over corrupt records = %v, saw %q; want only the good node", err, seen)
	}
	// A corrupt record is not silently overwritten (it may hold an owner).
	n := beaconNode(bad)
	if _, err := r.Upsert(n, false); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Upsert over a corrupt record = %v, want ErrCorrupt", err)
	}
	// The operator's way out is Delete.
	if err := r.Delete(bad); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Upsert(n, false); err != nil {
		t.Errorf("Upsert after Delete = %v", err)
	}
}

func TestLockedFile(t *testing.T) {
	old := lockTimeout
	lockTimeout = 50 * time.Millisecond
	defer func() { lockTimeout = old }()
	r, path := tempRegistry(t)
	_, err := Open(path, quiet)
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), path) {
		t.Fatalf("second Open = %v, want ErrLocked naming the file", err)
	}
	r.Close()
	r2 := open(t, path)
	r2.Close()
}

// TestGoldenRecord pins the stored form of a node: a change to it is a
// change of file format (bump formatVersion and migrate).
func TestGoldenRecord(t *testing.T) {
	r, path := tempRegistry(t)
	n := relayNode(key(1), "10.0.0.0/8", "2001:db8::/32")
	n.Owner = key(2)
	n.Version = "castd 0.1.0"
	n.Capabilities = []string{"amt-relay", "cache"}
	n.FirstSeen = t0.Add(-time.Hour)
	if _, err := r.Upsert(n, true); err != nil {
		t.Fatal(err)
	}
	r.Close()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	var got []byte
	db.View(func(tx *bolt.Tx) error {
		got = append(got, tx.Bucket(bucketNodes).Get([]byte(n.ID))...)
		return nil
	})
	db.Close()
	golden := filepath.Join("testdata", "node.golden.json")
	if *update {
		if err := os.WriteFile(golden, append(got, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(append(got, '\n'), want) {
		t.Errorf("stored record\n%s\nwant (testdata/node.golden.json)\n%s", got, want)
	}
	// And the golden record decodes to the node.
	dec, err := decode(n.ID, bytes.TrimSpace(want))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(dec, n) {
		t.Errorf("golden decodes to\n%+v\nwant\n%+v", dec, n)
	}
}

func TestPlausibleKey(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for i := 0; i < 2000; i++ {
		n := 28 + rng.Intn(9) // 28..36 bytes
		b := make([]byte, n)
		rng.Read(b)
		for z := rng.Intn(4); z > 0 && z <= n; z-- {
			b[z-1] = 0 // leading zero bytes become leading '1's
		}
		s := base58.Encode(b)
		if got := plausibleKey(s); got != (n == 32) {
			t.Fatalf("plausibleKey(%q) (%d bytes) = %v", s, n, got)
		}
	}
	for _, s := range []string{
		"11111111111111111111111111111111",            // 32 zero bytes: the system program
		"Memo1UhkJRfHyvLMcVucJwxXeuD728EqVDDwQDxFMNo", // memo program
	} {
		if !plausibleKey(s) {
			t.Errorf("plausibleKey(%q) = false", s)
		}
	}
	for _, s := range []string{"", "1111111111111111111111111111111", "111111111111111111111111111111111",
		"zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz", "Memo1UhkJRfHyvLMcVucJwxXeuD728EqVDDwQDxFMN0", "Memo1UhkJRfHyvLMcVucJwxXeuD728EqVDDwQDxFMNo\x00"} {
		if plausibleKey(s) {
			t.Errorf("plausibleKey(%q) = true", s)
		}
	}
}

func FuzzPlausibleKey(f *testing.F) {
	f.Add("11111111111111111111111111111111")
	f.Add("Memo1UhkJRfHyvLMcVucJwxXeuD728EqVDDwQDxFMNo")
	f.Add("zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz")
	f.Fuzz(func(t *testing.T, s string) {
		b, err := base58.Decode(s)
		want := err == nil && len(b) == 32 && s != ""
		if got := plausibleKey(s); got != want {
			t.Fatalf("plausibleKey(%q) = %v, base58 decodes %d bytes (err %v)", s, got, len(b), err)
		}
	})
}

// FuzzNormalize feeds registration fields from the wire through
// validation: it must not panic, and what it accepts must be stable (stored
// form validates to itself) and usable by the router.
func FuzzNormalize(f *testing.F) {
	f.Add("relay", "http://h:1/sub", "1.0", "amt,cache", "10.0.0.0/8,2001:db8::/32", "203.0.113.7")
	f.Add("beacon", "https://[fd00::1]:8443/", "", "", "", "::ffff:1.2.3.4")
	f.Add("relay", "http://u@h/?#", "\x00", ",", "10.0.0.1/8", "fe80::1%eth0")
	r := &Registry{log: quiet, now: func() time.Time { return t0 }}
	f.Fuzz(func(t *testing.T, role, lan, version, caps, cidrs, ip string) {
		n := Node{ID: key(1), Role: role, LANURL: lan, Version: version, LastSeen: t0}
		if caps != "" {
			n.Capabilities = strings.Split(caps, ",")
		}
		if cidrs != "" {
			n.CIDRs = strings.Split(cidrs, ",")
		}
		n.PublicIP, _ = netip.ParseAddr(ip)
		out, err := r.normalize(n)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		again, err := r.normalize(out)
		if err != nil || !reflect.DeepEqual(again, out) {
			t.Fatalf("stored form does not validate to itself: %v\n%+v\n%+v", err, out, again)
		}
		for _, c := range out.CIDRs {
			p, err := netip.ParsePrefix(c)
			if err != nil || p.String() != c || p.Masked() != p {
				t.Fatalf("stored CIDR %q is not canonical", c)
			}
		}
		if out.PublicIP.Is4In6() || out.PublicIP.Zone() != "" {
			t.Fatalf("stored public IP %v is not unmapped and zoneless", out.PublicIP)
		}
	})
}

// FuzzDecode reads stored records, which a damaged file may make anything.
func FuzzDecode(f *testing.F) {
	golden, _ := os.ReadFile(filepath.Join("testdata", "node.golden.json"))
	f.Add(golden)
	f.Add([]byte(`{"id":"x"}`))
	f.Add([]byte(`{"id":"x","public_ip":"999.1.1.1"}`))
	f.Add([]byte(`{"id":"` + strings.Repeat("y", 5000) + `"}`))
	f.Add([]byte(`{"id":"x","public_ip":"` + strings.Repeat("9", 5000) + `"}`))
	f.Fuzz(func(t *testing.T, v []byte) {
		n, err := decode("x", v)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			// It is logged and may be sent to the node: clipped.
			if len(err.Error()) > 400 {
				t.Fatalf("error of %d bytes", len(err.Error()))
			}
			return
		}
		if n.ID != "x" {
			t.Fatalf("decoded ID %q under key x", n.ID)
		}
	})
}

func TestConcurrentUpserts(t *testing.T) {
	r, path := tempRegistry(t)
	owner1, owner2 := key(100), key(101)
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				n := beaconNode(key(byte(i)))
				// Two owners race for node 0 without delegations: exactly
				// one binds it, the other is refused from then on.
				if i == 0 {
					n.Owner = []string{owner1, owner2}[g%2]
				}
				if _, err := r.Upsert(n, false); err != nil && !(i == 0 && errors.Is(err, ErrOwnerConflict)) {
					errs <- err
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if r.Len() != 20 {
		t.Errorf("Len = %d, want 20", r.Len())
	}
	n0, err := r.Get(key(0))
	if err != nil || (n0.Owner != owner1 && n0.Owner != owner2) {
		t.Errorf("node 0 = %+v, %v", n0, err)
	}
	r.Close()
	r = open(t, path)
	defer r.Close()
	if r.Len() != 20 {
		t.Errorf("Len after reopen = %d, want 20", r.Len())
	}
}
