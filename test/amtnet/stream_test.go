package amtnet

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"

	"github.com/blockcast/beacon/test/harness/netns"
)

// The test streams are numbered datagrams whose content is a function of
// a run ID and the sequence number, so a receiver checks order, loss and
// every byte without being told what was sent. Sizes vary from 48 to 1343
// bytes so that small and near-MTU datagrams both cross the tunnel (1343 +
// 28 inner + 30 AMT over IPv4 fits 1500; over IPv6 the outer headers add
// 20 more and the inner ones 20 more: still 1441).
const (
	streamHeader = 8  // run ID (4) and sequence number (4)
	streamHash   = 32 // SHA-256 of what precedes it
)

func streamLen(seq uint32) int { return 48 + int(seq*389%1296) }

// streamPayload is datagram seq of run.
func streamPayload(run, seq uint32) []byte {
	n := streamLen(seq)
	b := make([]byte, n)
	binary.BigEndian.PutUint32(b[0:], run)
	binary.BigEndian.PutUint32(b[4:], seq)
	// Filler from a hash chain seeded by the header: cheap, and
	// different for every datagram.
	block := sha256.Sum256(b[:streamHeader])
	for off := streamHeader; off < n-streamHash; off += len(block) {
		copy(b[off:n-streamHash], block[:])
		block = sha256.Sum256(block[:])
	}
	sum := sha256.Sum256(b[:n-streamHash])
	copy(b[n-streamHash:], sum[:])
	return b
}

// checkPayload returns the sequence number of p, or why p is not a
// datagram of run.
func checkPayload(run uint32, p []byte) (uint32, error) {
	if len(p) < streamHeader+streamHash {
		return 0, fmt.Errorf("%d bytes: too short", len(p))
	}
	sum := sha256.Sum256(p[:len(p)-streamHash])
	if !bytes.Equal(sum[:], p[len(p)-streamHash:]) {
		return 0, errors.New("SHA-256 trailer does not match")
	}
	if r := binary.BigEndian.Uint32(p); r != run {
		return 0, fmt.Errorf("run %#x, want %#x", r, run)
	}
	seq := binary.BigEndian.Uint32(p[4:])
	if !bytes.Equal(p, streamPayload(run, seq)) {
		return seq, fmt.Errorf("datagram %d: content differs from what was sent", seq)
	}
	return seq, nil
}

// sender sends a stream as native SSM from a namespace.
type sender struct {
	conn  *net.UDPConn
	group netip.AddrPort
	run   uint32
}

// newSender opens a socket on src in ns, sending to group with TTL/hop
// limit 8 through ifname.
func newSender(tb testing.TB, ns *netns.NS, ifname string, src netip.Addr, group netip.AddrPort) *sender {
	tb.Helper()
	network := "udp4"
	if src.Is6() {
		network = "udp6"
	}
	c, err := ns.ListenUDP(network, net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, 0)))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	ifi, err := ns.InterfaceByName(ifname)
	if err != nil {
		tb.Fatal(err)
	}
	if src.Is4() {
		p := ipv4.NewPacketConn(c)
		err = errors.Join(p.SetMulticastInterface(ifi), p.SetMulticastTTL(8))
	} else {
		p := ipv6.NewPacketConn(c)
		err = errors.Join(p.SetMulticastInterface(ifi), p.SetMulticastHopLimit(8))
	}
	if err != nil {
		tb.Fatal(err)
	}
	var r [4]byte
	binary.BigEndian.PutUint32(r[:], uint32(time.Now().UnixNano()))
	return &sender{conn: c, group: group, run: binary.BigEndian.Uint32(r[:]) | 1}
}

// send sends datagrams [from, to) spaced by gap.
func (s *sender) send(from, to uint32, gap time.Duration) error {
	dst := net.UDPAddrFromAddrPort(s.group)
	for seq := from; seq < to; seq++ {
		if _, err := s.conn.WriteToUDP(streamPayload(s.run, seq), dst); err != nil {
			return fmt.Errorf("sending %d: %w", seq, err)
		}
		if gap > 0 {
			time.Sleep(gap)
		}
	}
	return nil
}

// sendUntil sends one datagram every gap until stop closes, and returns
// how many it sent.
func (s *sender) sendUntil(stop <-chan struct{}, gap time.Duration) (uint32, error) {
	tick := time.NewTicker(gap)
	defer tick.Stop()
	dst := net.UDPAddrFromAddrPort(s.group)
	var seq uint32
	for {
		select {
		case <-stop:
			return seq, nil
		case <-tick.C:
		}
		if _, err := s.conn.WriteToUDP(streamPayload(s.run, seq), dst); err != nil {
			return seq, fmt.Errorf("sending %d: %w", seq, err)
		}
		seq++
	}
}

// start sends one datagram every gap until the returned function is
// called; that returns how many were sent. It may be called again.
func (s *sender) start(gap time.Duration) (stop func() (uint32, error)) {
	quit := make(chan struct{})
	type result struct {
		n   uint32
		err error
	}
	done := make(chan result, 1)
	go func() {
		n, err := s.sendUntil(quit, gap)
		done <- result{n, err}
	}()
	var once sync.Once
	var res result
	return func() (uint32, error) {
		once.Do(func() {
			close(quit)
			res = <-done
		})
		return res.n, res.err
	}
}

// arrival is one datagram a receiver got.
type arrival struct {
	seq uint32
	at  time.Time
	err error // not a valid datagram of the run
}

// receiver joins (S,G) on a LAN interface, as a set-top box would, and
// records what arrives on the group's port.
type receiver struct {
	conn *net.UDPConn
	run  uint32

	mu   sync.Mutex
	got  []arrival
	done chan struct{}
}

// newReceiver joins (src, group) on ifname in ns and starts reading the
// stream of run.
func newReceiver(tb testing.TB, ns *netns.NS, ifname string, src netip.Addr, group netip.AddrPort, run uint32) *receiver {
	tb.Helper()
	c, err := ns.ListenUDP("udp4", &net.UDPAddr{IP: group.Addr().AsSlice(), Port: int(group.Port())})
	if err != nil {
		tb.Fatal(err)
	}
	ifi, err := ns.InterfaceByName(ifname)
	if err != nil {
		c.Close()
		tb.Fatal(err)
	}
	if err := ipv4.NewPacketConn(c).JoinSourceSpecificGroup(ifi,
		&net.UDPAddr{IP: group.Addr().AsSlice()}, &net.UDPAddr{IP: src.AsSlice()}); err != nil {
		c.Close()
		tb.Fatal(err)
	}
	c.SetReadBuffer(4 << 20)
	r := &receiver{conn: c, run: run, done: make(chan struct{})}
	go r.read()
	tb.Cleanup(r.close)
	return r
}

func (r *receiver) read() {
	defer close(r.done)
	buf := make([]byte, 65536)
	for {
		n, _, err := r.conn.ReadFromUDP(buf)
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				fmt.Fprintln(os.Stderr, "receiver:", err)
			}
			return
		}
		seq, perr := checkPayload(r.run, buf[:n])
		r.mu.Lock()
		r.got = append(r.got, arrival{seq: seq, at: time.Now(), err: perr})
		r.mu.Unlock()
	}
}

func (r *receiver) close() {
	r.conn.Close()
	<-r.done
}

// arrivals returns what has arrived so far.
func (r *receiver) arrivals() []arrival {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]arrival(nil), r.got...)
}

func (r *receiver) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.got)
}

// waitCount waits until n datagrams arrived.
func (r *receiver) waitCount(n int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for r.count() < n {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

// checkInOrder reports the first problem in arrivals: a bad datagram, a
// duplicate or a datagram out of order. Loss is not a problem here;
// callers that want none compare counts.
func checkInOrder(got []arrival) error {
	next := uint32(0)
	for i, a := range got {
		if a.err != nil {
			return fmt.Errorf("arrival %d: %w", i, a.err)
		}
		if i > 0 && a.seq < next {
			return fmt.Errorf("arrival %d: datagram %d after %d (duplicate or reordered)", i, a.seq, next-1)
		}
		next = a.seq + 1
	}
	return nil
}
