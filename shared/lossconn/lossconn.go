// Package lossconn is a TEST HOOK: it drops UDP datagrams with a seeded
// probability, so that tests can make real castd and beacon processes lose
// packets on their multicast sockets without touching the network.
//
// It does nothing unless the program was built with the build tag
// "testhooks" (test/harness builds castd and beacon so; release builds do
// not, and carry no parser for it) and the environment variable
// BLOCKCAST_TEST_LOSS is set, which only tests do, e.g.
//
//	BLOCKCAST_TEST_LOSS="rx=0.05,seed=7"   // drop 5% of datagrams read
//	BLOCKCAST_TEST_LOSS="tx=0.2,seed=3"    // drop 20% of datagrams sent
//
// Each wrapped socket gets its own generator (seed, then seed+1, ...), so
// two sockets of one process lose independently, and a run is repeatable.
// An operator never sets it: a value it cannot parse is logged as an error
// and drops nothing.
package lossconn

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// EnvVar is the environment variable the hook reads.
const EnvVar = "BLOCKCAST_TEST_LOSS"

// ErrBadSpec is wrapped by Parse's errors.
var ErrBadSpec = errors.New("lossconn: bad loss spec")

// Config is a parsed loss spec.
type Config struct {
	Rx, Tx float64 // probability of dropping a datagram read / written, 0..1
	Seed   uint64
}

// Enabled reports whether c drops anything.
func (c Config) Enabled() bool { return c.Rx > 0 || c.Tx > 0 }

// String formats c the way Parse reads it.
func (c Config) String() string {
	return fmt.Sprintf("rx=%g,tx=%g,seed=%d", c.Rx, c.Tx, c.Seed)
}

// Parse reads "rx=P,tx=P,seed=N" (every key optional, any order).
func Parse(s string) (Config, error) {
	var c Config
	seen := map[string]bool{}
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			return Config{}, fmt.Errorf("%w: %q is not key=value", ErrBadSpec, f)
		}
		if seen[k] {
			return Config{}, fmt.Errorf("%w: %q given twice", ErrBadSpec, k)
		}
		seen[k] = true
		switch k {
		case "rx", "tx":
			p, err := strconv.ParseFloat(v, 64)
			if err != nil || !(p >= 0 && p <= 1) { // also rejects NaN
				return Config{}, fmt.Errorf("%w: %s=%q is not a probability in [0,1]", ErrBadSpec, k, v)
			}
			if k == "rx" {
				c.Rx = p
			} else {
				c.Tx = p
			}
		case "seed":
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				return Config{}, fmt.Errorf("%w: seed=%q: %w", ErrBadSpec, v, err)
			}
			c.Seed = n
		default:
			return Config{}, fmt.Errorf("%w: unknown key %q (want rx, tx, seed)", ErrBadSpec, k)
		}
	}
	return c, nil
}

var sockets atomic.Uint64 // sockets wrapped so far: each gets seed+n

// Dropper decides, datagram by datagram, whether to drop. A nil Dropper
// drops nothing.
type Dropper struct {
	p  float64
	mu sync.Mutex
	r  *rand.Rand

	seen, dropped atomic.Uint64
}

// NewDropper drops with probability p, from seed.
func NewDropper(p float64, seed uint64) *Dropper {
	if p <= 0 {
		return nil
	}
	return &Dropper{p: p, r: rand.New(rand.NewPCG(seed, 0x6c6f7373))}
}

// Drop reports whether to drop the next datagram.
func (d *Dropper) Drop() bool {
	if d == nil {
		return false
	}
	d.seen.Add(1)
	d.mu.Lock()
	drop := d.r.Float64() < d.p
	d.mu.Unlock()
	if drop {
		d.dropped.Add(1)
	}
	return drop
}

// Counts returns the datagrams seen and dropped.
func (d *Dropper) Counts() (seen, dropped uint64) {
	if d == nil {
		return 0, 0
	}
	return d.seen.Load(), d.dropped.Load()
}

var (
	txOnce sync.Once
	tx     *Dropper
)

// DropTx reports whether the process's sender should drop the datagram it
// is about to send (the env's tx probability; one generator per process).
func DropTx() bool {
	txOnce.Do(func() {
		c := env()
		tx = NewDropper(c.Tx, c.Seed+sockets.Add(1)-1)
	})
	return tx.Drop()
}

// Conn is a UDP socket whose reads and writes lose datagrams as configured.
type Conn struct {
	*net.UDPConn
	Rx, Tx *Dropper
}

// Wrap wraps c with the env's loss (none when unset).
func Wrap(c *net.UDPConn) *Conn { return WrapConfig(c, env()) }

// WrapConfig wraps c with cfg's loss.
func WrapConfig(c *net.UDPConn, cfg Config) *Conn {
	w := &Conn{UDPConn: c}
	if cfg.Enabled() {
		seed := cfg.Seed + sockets.Add(1) - 1
		w.Rx = NewDropper(cfg.Rx, seed)
		w.Tx = NewDropper(cfg.Tx, seed^0x9e3779b97f4a7c15)
	}
	return w
}

// ReadFromUDPAddrPort reads the next datagram that is not dropped.
func (c *Conn) ReadFromUDPAddrPort(b []byte) (int, netip.AddrPort, error) {
	for {
		n, a, err := c.UDPConn.ReadFromUDPAddrPort(b)
		if err != nil || !c.Rx.Drop() {
			return n, a, err
		}
	}
}

// ReadFromUDP reads the next datagram that is not dropped.
func (c *Conn) ReadFromUDP(b []byte) (int, *net.UDPAddr, error) {
	for {
		n, a, err := c.UDPConn.ReadFromUDP(b)
		if err != nil || !c.Rx.Drop() {
			return n, a, err
		}
	}
}

// ReadFrom reads the next datagram that is not dropped (net.PacketConn).
func (c *Conn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		n, a, err := c.UDPConn.ReadFrom(b)
		if err != nil || !c.Rx.Drop() {
			return n, a, err
		}
	}
}

// WriteToUDPAddrPort sends b unless it is dropped; a drop looks like a
// send, as a lossy link does.
func (c *Conn) WriteToUDPAddrPort(b []byte, a netip.AddrPort) (int, error) {
	if c.Tx.Drop() {
		return len(b), nil
	}
	return c.UDPConn.WriteToUDPAddrPort(b, a)
}

// WriteToUDP sends b unless it is dropped.
func (c *Conn) WriteToUDP(b []byte, a *net.UDPAddr) (int, error) {
	if c.Tx.Drop() {
		return len(b), nil
	}
	return c.UDPConn.WriteToUDP(b, a)
}

// WriteTo sends b unless it is dropped (net.PacketConn).
func (c *Conn) WriteTo(b []byte, a net.Addr) (int, error) {
	if c.Tx.Drop() {
		return len(b), nil
	}
	return c.UDPConn.WriteTo(b, a)
}

var _ net.PacketConn = (*Conn)(nil)
