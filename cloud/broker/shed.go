package broker

import (
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/blockcast/beacon/shared/ratelimit"
)

// Why a connection was shed: closed by the listener before it became an
// MQTT client. These are the keys of Stats.ShedBy and the reason label of
// castd's castd_mqtt_connections_shed_total.
const (
	// ShedPerAddr: its source address (IPv6: its /64) already had
	// MaxHandshakesPerAddr connections in the handshake.
	ShedPerAddr = "per_address"
	// ShedTotal: MaxHandshakes connections were in the handshake.
	ShedTotal = "total"
	// ShedRate: its source address opened connections faster than
	// ConnectRate (after ConnectBurst).
	ShedRate = "rate"
	// ShedTimeout: it sent no CONNECT within HandshakeTimeout.
	ShedTimeout = "timeout"
)

// ShedReasons lists every shed reason, for exporting zeros too; the
// shed* indexes below point into it.
var ShedReasons = [...]string{ShedPerAddr, ShedTotal, ShedRate, ShedTimeout}

const (
	shedPerAddr = iota
	shedTotal
	shedRate
	shedTimeout
)

// shedLogEvery is how often, at most, shedding is logged.
const shedLogEvery = 10 * time.Second

// gate decides which new connections may start a handshake: a connection
// rate and a handshake count per source address, then the global count. It
// counts what it sheds and logs it at warn, at most once per logEvery, with
// the counts since the line before, so that a flood shows in the log
// without becoming one.
type gate struct {
	rate     *ratelimit.PerAddr // nil: no per-address rate
	perAddr  *ratelimit.Slots
	total    chan struct{}
	log      *slog.Logger
	logEvery time.Duration

	shed [len(ShedReasons)]atomic.Uint64

	mu       sync.Mutex
	lastLog  time.Time
	unlogged [len(ShedReasons)]uint64
}

func newGate(o *Options, log *slog.Logger) *gate {
	g := &gate{
		perAddr:  ratelimit.NewSlots(o.MaxHandshakesPerAddr),
		total:    make(chan struct{}, o.MaxHandshakes),
		log:      log,
		logEvery: shedLogEvery,
	}
	if o.ConnectRate > 0 {
		g.rate = ratelimit.NewPerAddr(o.ConnectRate, o.ConnectBurst)
	}
	return g
}

// remoteAddr is the source address of c; the zero Addr if it has none
// (all such connections then share one budget).
func remoteAddr(c net.Conn) netip.Addr {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return a.AddrPort().Addr().Unmap()
	}
	if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}

// admit takes a handshake slot for a connection from src, or counts it as
// shed and returns false. Every admitted connection must be given back
// with release.
func (g *gate) admit(src netip.Addr, now time.Time) bool {
	if g.rate != nil && !g.rate.Allow(src, now) {
		g.count(shedRate, src, now)
		return false
	}
	if !g.perAddr.Acquire(src) {
		g.count(shedPerAddr, src, now)
		return false
	}
	select {
	case g.total <- struct{}{}:
		return true
	default:
		g.perAddr.Release(src)
		g.count(shedTotal, src, now)
		return false
	}
}

func (g *gate) release(src netip.Addr) {
	<-g.total
	g.perAddr.Release(src)
}

// count records a shed connection and logs, when the last line is old
// enough, what was shed since it.
func (g *gate) count(i int, src netip.Addr, now time.Time) {
	g.shed[i].Add(1)
	g.mu.Lock()
	g.unlogged[i]++
	if now.Sub(g.lastLog) < g.logEvery {
		g.mu.Unlock()
		return
	}
	counts := g.unlogged
	g.unlogged = [len(ShedReasons)]uint64{}
	g.lastLog = now
	g.mu.Unlock()
	args := []any{"latest_from", src, "every", g.logEvery}
	for j, r := range ShedReasons {
		if counts[j] > 0 {
			args = append(args, r, counts[j])
		}
	}
	g.log.Warn("mqtt: shedding connections (counts since the last such line)", args...)
}

// stats returns the shed counts by reason, and their sum.
func (g *gate) stats() (map[string]uint64, uint64) {
	m := make(map[string]uint64, len(ShedReasons))
	var sum uint64
	for i, r := range ShedReasons {
		n := g.shed[i].Load()
		m[r] = n
		sum += n
	}
	return m, sum
}
