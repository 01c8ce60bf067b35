package ratelimit

import (
	"net/netip"
	"testing"
	"time"
)

func TestPerAddr(t *testing.T) {
	l := NewPerAddr(10, 3)
	now := time.Now()
	a := netip.MustParseAddr("198.51.100.7")
	for i := 0; i < 3; i++ {
		if !l.Allow(a, now) {
			t.Fatalf("request %d of the burst refused", i)
		}
	}
	if l.Allow(a, now) {
		t.Fatal("request past the burst allowed")
	}
	if !l.Allow(a, now.Add(100*time.Millisecond)) {
		t.Fatal("a token did not come back after 1/rate")
	}
	// Another address (not colliding) has its own budget.
	b := netip.MustParseAddr("203.0.113.9")
	for l.Collide(a, b) {
		b = b.Next()
	}
	if !l.Allow(b, now) {
		t.Fatal("a second address was limited by the first's use")
	}
	// One IPv6 host is one /64; the mapped form of an IPv4 address is that address.
	v6a := netip.MustParseAddr("2001:db8:1:2::1")
	v6b := netip.MustParseAddr("2001:db8:1:2:ffff::9")
	if !l.Collide(v6a, v6b) {
		t.Fatal("two addresses of one /64 have separate budgets")
	}
	if !l.Collide(a, netip.AddrFrom16(a.As16())) {
		t.Fatal("IPv4-mapped address is not limited as the IPv4 address")
	}
}

func TestSlots(t *testing.T) {
	s := NewSlots(2)
	a := netip.MustParseAddr("192.0.2.1")
	if !s.Acquire(a) || !s.Acquire(a) {
		t.Fatal("slots under the maximum refused")
	}
	if s.Acquire(a) {
		t.Fatal("a third slot was granted")
	}
	s.Release(a)
	if s.Held(a) != 1 || !s.Acquire(a) {
		t.Fatal("a released slot was not given back")
	}
	s.Release(a)
	s.Release(a)
	s.Release(a) // one too many: stays at zero
	if s.Held(a) != 0 {
		t.Fatalf("held %d after releasing all", s.Held(a))
	}
}

func TestBucket(t *testing.T) {
	now := time.Now()
	b := NewBucket(1, 2, now)
	if !b.Allow(now) || !b.Allow(now) || b.Allow(now) {
		t.Fatal("bucket of 2 did not allow exactly 2")
	}
	if !b.Allow(now.Add(time.Second)) {
		t.Fatal("a token did not come back after a second")
	}
}

func TestBucketAllowN(t *testing.T) {
	now := time.Now()
	// 1000 bytes a second, 1500 saved: one full datagram, then a wait.
	b := NewBucket(1000, 1500, now)
	tests := []struct {
		at   time.Duration
		n    int
		want bool
	}{
		{0, 1400, true},
		{0, 200, false}, // 100 left: refused, and nothing taken
		{0, 100, true},
		{0, 1, false},
		{500 * time.Millisecond, 500, true},
		{500 * time.Millisecond, 1, false},
		{10 * time.Second, 1501, false}, // more than the burst: never
		{10 * time.Second, 1500, true},
		{10 * time.Second, -1, false},
	}
	for i, tt := range tests {
		if got := b.AllowN(now.Add(tt.at), tt.n); got != tt.want {
			t.Fatalf("step %d: AllowN(+%v, %d) = %v, want %v", i, tt.at, tt.n, got, tt.want)
		}
	}
	if b.Full(now.Add(10 * time.Second)) {
		t.Fatal("an emptied bucket reports full")
	}
	if !b.Full(now.Add(12 * time.Second)) {
		t.Fatal("a refilled bucket does not report full")
	}
}
