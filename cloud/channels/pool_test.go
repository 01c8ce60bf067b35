package channels

import (
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var (
	t0   = time.Unix(1_800_000_000, 0)
	src4 = netip.MustParseAddr("192.0.2.10")
	src6 = netip.MustParseAddr("2001:db8::10")
)

func mustRanges(t testing.TB, s string) []Range {
	t.Helper()
	rs, err := ParseRanges(s)
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

func newPool(t testing.TB, o Options) *Pool {
	t.Helper()
	p, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestAcquireLifecycle(t *testing.T) {
	p := newPool(t, Options{
		Ranges:  mustRanges(t, "232.1.1.0/31"), // two groups
		Sources: []netip.Addr{src4}, Port: 6000,
		HoldDown: 10 * time.Second, LeaseTTL: 30 * time.Second,
	})
	a, err := p.Acquire("/a", t0)
	if err != nil {
		t.Fatal(err)
	}
	if a.ID == 0 || a.TSI == 0 || a.Channel.Source != src4 || a.Channel.Port != 6000 ||
		!netip.MustParsePrefix("232.1.1.0/31").Contains(a.Channel.Group) || !a.Expires.Equal(t0.Add(30*time.Second)) {
		t.Fatalf("lease %+v", a)
	}
	// The same object: the running session, not a second channel.
	again, err := p.Acquire("/a", t0.Add(time.Second))
	if !errors.Is(err, ErrHeld) || again != a {
		t.Fatalf("second Acquire = %+v, %v; want the first lease and ErrHeld", again, err)
	}
	if l, ok := p.Lookup("/a", t0); !ok || l != a {
		t.Fatalf("Lookup = %+v %v", l, ok)
	}
	b, err := p.Acquire("/b", t0)
	if err != nil || b.Channel.Group == a.Channel.Group || b.ID == a.ID || b.TSI == a.TSI {
		t.Fatalf("second object: %+v, %v (first %+v)", b, err, a)
	}
	if _, err := p.Acquire("/c", t0); !errors.Is(err, ErrExhausted) {
		t.Fatalf("third object in a two-group range: %v, want ErrExhausted", err)
	}
	// Release a at t0+5s: its channel rests until t0+15s.
	if err := p.Release(a.ID, t0.Add(5*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := p.Release(a.ID, t0.Add(5*time.Second)); !errors.Is(err, ErrLost) {
		t.Fatalf("double Release: %v, want ErrLost", err)
	}
	if _, err := p.Renew(a.ID, t0.Add(6*time.Second)); !errors.Is(err, ErrLost) {
		t.Fatalf("Renew after Release: %v, want ErrLost", err)
	}
	if _, ok := p.Lookup("/a", t0.Add(6*time.Second)); ok {
		t.Fatal("Lookup found a released lease")
	}
	if _, err := p.Acquire("/c", t0.Add(15*time.Second-1)); !errors.Is(err, ErrExhausted) {
		t.Fatalf("channel reused 1ns before its hold-down ended: %v", err)
	}
	c, err := p.Acquire("/c", t0.Add(15*time.Second))
	if err != nil || c.Channel != a.Channel || c.TSI == a.TSI || c.ID == a.ID {
		t.Fatalf("after hold-down: %+v, %v; want a's channel with a new TSI and ID", c, err)
	}
	// b is never renewed: it expires at t0+30s and rests until t0+40s.
	if _, ok := p.Lookup("/b", t0.Add(30*time.Second)); ok {
		t.Fatal("lease alive at its Expires")
	}
	if _, err := p.Renew(b.ID, t0.Add(31*time.Second)); !errors.Is(err, ErrLost) {
		t.Fatalf("Renew after expiry: %v, want ErrLost", err)
	}
	if c, err = p.Renew(c.ID, t0.Add(39*time.Second)); err != nil || !c.Expires.Equal(t0.Add(69*time.Second)) {
		t.Fatalf("Renew: %+v %v", c, err)
	}
	if _, err := p.Acquire("/d", t0.Add(40*time.Second-1)); !errors.Is(err, ErrExhausted) {
		t.Fatalf("expired channel reused within hold-down: %v", err)
	}
	if d, err := p.Acquire("/d", t0.Add(40*time.Second)); err != nil || d.Channel != b.Channel {
		t.Fatalf("expired channel after hold-down: %+v %v", d, err)
	}
}

func TestAcquireFamiliesAndCap(t *testing.T) {
	// Only an IPv6 source: the IPv4 range is skipped.
	p := newPool(t, Options{Sources: []netip.Addr{src6}})
	l, err := p.Acquire("/x", t0)
	if err != nil || l.Channel.Source != src6 || !l.Channel.Group.Is6() || l.Channel.Port != DefaultPort {
		t.Fatalf("%+v %v", l, err)
	}
	if b := l.Channel.Group.As16(); b[0] != 0xff || b[1] != 0x3e || b[12] < 0x80 {
		t.Fatalf("group %v is not a server-allocated ff3e:: group", l.Channel.Group)
	}
	// IPv4 first when both families have sources (ranges in order).
	p = newPool(t, Options{Sources: []netip.Addr{src6, src4}, MaxChannels: 3})
	for i := range 3 {
		l, err := p.Acquire(fmt.Sprint("/k", i), t0)
		if err != nil || !l.Channel.Group.Is4() || l.Channel.Source != src4 {
			t.Fatalf("%+v %v", l, err)
		}
	}
	if _, err := p.Acquire("/k3", t0); !errors.Is(err, ErrExhausted) || !strings.Contains(err.Error(), "max 3") {
		t.Fatalf("over MaxChannels: %v", err)
	}
	// The first range full, the next is used.
	p = newPool(t, Options{Ranges: mustRanges(t, "232.5.5.5/32 ff35::8000:0/127"), Sources: []netip.Addr{src4, src6}})
	var fams []bool
	for i := range 3 {
		l, err := p.Acquire(fmt.Sprint("/k", i), t0)
		if err != nil {
			t.Fatal(err)
		}
		fams = append(fams, l.Channel.Group.Is4())
	}
	if fmt.Sprint(fams) != "[true false false]" {
		t.Fatalf("families %v", fams)
	}
	if _, err := p.Acquire("", t0); !errors.Is(err, ErrBadKey) {
		t.Fatalf("empty key: %v", err)
	}
	if _, err := p.Acquire(strings.Repeat("a", MaxKeyLen+1), t0); !errors.Is(err, ErrBadKey) {
		t.Fatalf("long key: %v", err)
	}
}

func TestNewErrors(t *testing.T) {
	for _, o := range []Options{
		{},
		{Sources: []netip.Addr{src4, netip.MustParseAddr("192.0.2.11")}},
		{Sources: []netip.Addr{netip.MustParseAddr("232.1.1.1")}},
		{Sources: []netip.Addr{netip.IPv4Unspecified()}},
		{Sources: []netip.Addr{{}}},
		{Sources: []netip.Addr{src4}, Ranges: mustRanges(t, "ff3e::/96")},
		{Sources: []netip.Addr{src4}, Ranges: []Range{{}}},
		{Sources: []netip.Addr{src4}, HoldDown: -1},
	} {
		if _, err := New(o); !errors.Is(err, ErrBadOptions) && !errors.Is(err, ErrBadRange) {
			t.Errorf("New(%+v) = %v, want an error", o, err)
		}
	}
}

// TestConcurrentNeverDoubleAllocated hammers a small range from many
// goroutines with a moving clock (run with -race): a referee map marks a
// group as taken from Acquire until just before Release, and fails if an
// Acquire ever returns a group the referee says is taken, or if one key is
// sent by two holders at once.
func TestConcurrentNeverDoubleAllocated(t *testing.T) {
	p := newPool(t, Options{
		Ranges: mustRanges(t, "232.7.7.0/28"), Sources: []netip.Addr{src4},
		HoldDown: time.Microsecond, LeaseTTL: time.Hour,
	})
	var clock atomic.Int64
	now := func() time.Time { return t0.Add(time.Duration(clock.Add(100))) }
	var (
		mu      sync.Mutex
		byGroup = map[netip.Addr]LeaseID{}
		byKey   = map[string]LeaseID{}
		granted atomic.Int64
		held    atomic.Int64
	)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for i := range 400 {
				key := fmt.Sprint("/obj", (g*7+i)%24)
				l, err := p.Acquire(key, now())
				switch {
				case errors.Is(err, ErrHeld):
					held.Add(1)
					continue
				case errors.Is(err, ErrExhausted):
					continue
				case err != nil:
					t.Error(err)
					return
				}
				granted.Add(1)
				mu.Lock()
				if other, taken := byGroup[l.Channel.Group]; taken {
					t.Errorf("group %v given to lease %d while lease %d holds it", l.Channel.Group, l.ID, other)
				}
				if other, taken := byKey[key]; taken {
					t.Errorf("key %s given to lease %d while lease %d holds it", key, l.ID, other)
				}
				byGroup[l.Channel.Group], byKey[key] = l.ID, l.ID
				mu.Unlock()
				runtime.Gosched() // hold the channel while others try
				if _, err := p.Renew(l.ID, now()); err != nil {
					t.Error(err)
				}
				mu.Lock()
				delete(byGroup, l.Channel.Group)
				delete(byKey, key)
				mu.Unlock()
				if err := p.Release(l.ID, now()); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	close(start)
	wg.Wait()
	if granted.Load() < 100 || held.Load() == 0 {
		t.Fatalf("granted %d, held %d: the test did not exercise contention", granted.Load(), held.Load())
	}
	t.Logf("%d leases granted, %d ErrHeld", granted.Load(), held.Load())
}

// A long run of sessions stays within MaxChannels entries: what ended is
// forgotten after its hold-down.
func TestPoolMemoryBounded(t *testing.T) {
	p := newPool(t, Options{Sources: []netip.Addr{src4}, HoldDown: time.Second, LeaseTTL: time.Second, MaxChannels: 64})
	now := t0
	for i := range 100_000 {
		now = now.Add(50 * time.Millisecond)
		l, err := p.Acquire(fmt.Sprint("/k", i), now)
		if err != nil {
			t.Fatalf("session %d: %v", i, err)
		}
		if i%2 == 0 {
			p.Release(l.ID, now) // the rest expire
		}
	}
	if n := p.InUse(); n > 64 {
		t.Fatalf("%d channels tracked, max 64", n)
	}
	if len(p.byKey) > 64 || len(p.byID) > 64 {
		t.Fatalf("leases tracked: %d keys, %d ids", len(p.byKey), len(p.byID))
	}
}

func BenchmarkAcquireRelease(b *testing.B) {
	p := newPool(b, Options{Sources: []netip.Addr{src4}, HoldDown: time.Millisecond})
	now := t0
	for i := range b.N {
		now = now.Add(time.Millisecond)
		l, err := p.Acquire(fmt.Sprint("/k", i), now)
		if err != nil {
			b.Fatal(err)
		}
		p.Release(l.ID, now)
	}
}
