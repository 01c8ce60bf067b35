package amtgw

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/blockcast/beacon/shared/amt"
)

// testRelay is a minimal AMT relay (RFC 7450 §5.3) built from the shared
// codec, enough to drive the gateway over real loopback sockets: it answers
// Relay Discovery and Request, checks the MAC of Updates and Teardowns,
// keeps the channels each gateway address joined, and sends Multicast
// Data to them. Every message it receives is recorded.
type testRelay struct {
	t      testing.TB
	addr   netip.AddrPort
	secret []byte

	mu   sync.Mutex
	conn *net.UDPConn
	// Behaviour.
	qqic   uint8 // query interval code (0: 125 s)
	qrv    uint8
	limit  bool // set the L flag
	gflag  bool // send the gateway address (G flag)
	silent bool // answer nothing
	// gwAddr, if set, says which gateway address to report with G.
	gwAddr func(from netip.AddrPort) netip.AddrPort
	// State.
	members map[netip.AddrPort]map[Channel]bool
	log     []relayMsg
	queries []sentQuery
}

type relayMsg struct {
	at     time.Time
	from   netip.AddrPort
	msg    amt.Message
	report amt.ReportPacket // for Updates
	macOK  bool             // Updates and Teardowns: the MAC verified
}

type sentQuery struct {
	to    netip.AddrPort
	nonce uint32
	mac   [6]byte
	gw    netip.AddrPort // reported with G, if any
}

func newTestRelay(t testing.TB, network, addr string) *testRelay {
	t.Helper()
	c, err := net.ListenUDP(network, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
	if err != nil {
		t.Fatal(err)
	}
	r := &testRelay{t: t, conn: c, addr: c.LocalAddr().(*net.UDPAddr).AddrPort(), secret: []byte("relay secret 1"), members: map[netip.AddrPort]map[Channel]bool{}}
	go r.serve(c)
	t.Cleanup(r.close)
	return r
}

func (r *testRelay) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.conn != nil {
		r.conn.Close()
		r.conn = nil
	}
}

// restart closes the relay and opens it again on the same address, with
// a new secret and no state, as a restarted relay would be.
func (r *testRelay) restart(down time.Duration) {
	r.close()
	time.Sleep(down)
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(r.addr))
	if err != nil {
		r.t.Errorf("relay restart: %v", err)
		return
	}
	r.mu.Lock()
	r.conn = c
	r.secret = []byte("relay secret 2")
	r.members = map[netip.AddrPort]map[Channel]bool{}
	r.mu.Unlock()
	go r.serve(c)
}

func (r *testRelay) set(f func(r *testRelay)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f(r)
}

func (r *testRelay) serve(c *net.UDPConn) {
	buf := make([]byte, 65536)
	for {
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		m, err := amt.Parse(buf[:n])
		if err != nil {
			r.t.Errorf("relay: gateway sent a bad message %x: %v", buf[:n], err)
			continue
		}
		r.handle(c, from, m)
	}
}

func (r *testRelay) handle(c *net.UDPConn, from netip.AddrPort, m amt.Message) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rec := relayMsg{at: time.Now(), from: from, msg: m}
	var reply amt.Message
	switch m := m.(type) {
	case *amt.RelayDiscovery:
		reply = &amt.RelayAdvertisement{Nonce: m.Nonce, Relay: r.addr.Addr()}
	case *amt.Request:
		src := netip.MustParseAddr("10.0.0.1")
		if m.IPv6 {
			src = netip.MustParseAddr("fe80::1")
		}
		qp, err := amt.AppendQueryPacket(nil, src, amt.Query{MaxRespCode: 100, QRV: r.qrv, QQIC: r.qqic})
		if err != nil {
			r.t.Error(err)
			return
		}
		q := &amt.MembershipQuery{Limit: r.limit, MAC: amt.ComputeMAC(r.secret, from, m.Nonce), Nonce: m.Nonce, Query: qp}
		if r.gflag {
			q.Gateway = from
			if r.gwAddr != nil {
				q.Gateway = r.gwAddr(from)
			}
		}
		r.queries = append(r.queries, sentQuery{to: from, nonce: m.Nonce, mac: q.MAC, gw: q.Gateway})
		reply = q
	case *amt.MembershipUpdate:
		rec.macOK = amt.VerifyMAC(r.secret, from, m.Nonce, m.MAC)
		rp, err := amt.Options{Strict: true}.ParseReportPacket(m.Report)
		if err != nil {
			r.t.Errorf("relay: bad report from %v: %v", from, err)
			break
		}
		rec.report = rp
		if !rec.macOK || r.limit && r.members[from] == nil {
			break
		}
		set := r.members[from]
		if set == nil {
			set = map[Channel]bool{}
			r.members[from] = set
		}
		for _, g := range rp.Records {
			switch g.Type {
			case amt.ModeIsInclude, amt.ChangeToInclude:
				for ch := range set {
					if ch.Group == g.Group {
						delete(set, ch)
					}
				}
				fallthrough
			case amt.AllowNewSources:
				for _, s := range g.Sources {
					set[Channel{Source: s, Group: g.Group}] = true
				}
			case amt.BlockOldSources:
				for _, s := range g.Sources {
					delete(set, Channel{Source: s, Group: g.Group})
				}
			}
		}
	case *amt.Teardown:
		rec.macOK = amt.VerifyMAC(r.secret, m.Gateway, m.Nonce, m.MAC)
		if rec.macOK {
			delete(r.members, m.Gateway)
		}
	}
	r.log = append(r.log, rec)
	if reply != nil && !r.silent {
		b, err := reply.AppendTo(nil)
		if err != nil {
			r.t.Error(err)
			return
		}
		c.WriteToUDPAddrPort(b, from)
	}
}

// messages returns the recorded messages of type typ (0: all).
func (r *testRelay) messages(typ amt.Type) []relayMsg {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []relayMsg
	for _, m := range r.log {
		if typ == 0 || m.msg.Type() == typ {
			out = append(out, m)
		}
	}
	return out
}

func (r *testRelay) sentQueries() []sentQuery {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]sentQuery(nil), r.queries...)
}

// member returns a gateway address that joined ch, if any.
func (r *testRelay) member(ch Channel) (netip.AddrPort, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for gw, set := range r.members {
		if set[ch] {
			return gw, true
		}
	}
	return netip.AddrPort{}, false
}

func (r *testRelay) memberCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, set := range r.members {
		n += len(set)
	}
	return n
}

// send sends one Multicast Data datagram of channel ch to every gateway
// that joined wantCh (normally ch itself). It returns how many it sent.
func (r *testRelay) send(wantCh Channel, d amt.Datagram) int {
	inner, err := amt.AppendInnerUDP(nil, d)
	if err != nil {
		r.t.Fatal(err)
	}
	return r.sendRaw(wantCh, amt.AppendData(nil, inner))
}

func (r *testRelay) sendRaw(wantCh Channel, b []byte) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for gw, set := range r.members {
		if set[wantCh] && r.conn != nil {
			r.conn.WriteToUDPAddrPort(b, gw)
			n++
		}
	}
	return n
}
