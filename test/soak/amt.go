package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/blockcast/beacon/firmware/amtgw"
	"github.com/blockcast/beacon/shared/protocol"
	"github.com/blockcast/beacon/test/harness/netns"
	"golang.org/x/net/ipv4"
)

// The AMT channel: a Go SSM source in its own namespace sends a numbered,
// checksummed stream to one group per beacon; castd's relay receives it
// as native multicast on the host end of the source's veth
// (--amt-native-iface) and tunnels it over loopback UDP to each beacon's
// gateway, which re-emits its channel out of the host end of its own veth
// (--lan-iface); a listener in the LAN namespace checks every datagram.
//
//	src ns [eth0 10.251.0.1] ── veth ── host [sa…n] castd (native SSM)
//	host beaconN [sa…lN] ── veth ── lan ns [lanN] listener N
//
// The source and the listeners are in namespaces so that nothing on the
// host's loopback sees multicast: a listener can only hear its group
// through the beacon, and castd never hears what a beacon re-emits.
// Deleting the two namespaces deletes the veths with them.
const (
	amtPort    = 5100
	amtHeader  = 8 + 1 + 8 // magic, channel, seq
	amtSumLen  = 8         // SHA-256 prefix over the rest
	amtMinBody = 48
)

var (
	amtMagic  = [8]byte{'S', 'O', 'A', 'K', 'A', 'M', 'T', '1'}
	amtSource = netip.MustParseAddr("10.251.0.1")
)

// kinds of AMT errors. amt_corrupt is never allowed; amt (a gap or a
// duplicate) is allowed inside fault windows; amt_slack is a gap outside
// windows within the slack, counted and shown but not failed.
const (
	kindAMT        = "amt"
	kindAMTCorrupt = "amt_corrupt"
	kindAMTSlack   = "amt_slack"
)

// amtSlack is the share of the datagrams sent outside fault windows that
// may be lost (or duplicated) without failing the run: UDP on a loaded
// 2-core machine drops the odd datagram in a socket buffer (the gateway's
// rings, the listener's receive queue) while 12 clients and five processes
// compete for the CPU. Loss above it, or any loss in a stretch longer than
// a moment, is a fault of the system, not of the machine.
const amtSlack = 0.01

// amtLead: a datagram sent this long before a fault began is still in
// castd's or the gateway's queues when it strikes (a beacon killed, the
// relay stopped), so its loss belongs to the fault.
const amtLead = time.Second

// amtChannel is one beacon's channel and the listener on its LAN.
type amtChannel struct {
	idx    int
	group  netip.Addr
	hostIf string // the beacon's --lan-iface
	conn   *net.UDPConn

	mu       sync.Mutex
	seen     []uint64 // bitset of received seqs
	received int64
	dups     []amtEvent
	corrupt  []amtEvent
	maxSeq   int64 // highest seq received, -1 none
}

type amtEvent struct {
	At     time.Time
	Detail string
}

// amtSoak is the whole AMT part of the run.
type amtSoak struct {
	log      *slog.Logger
	lab      *netns.Lab
	src, lan *netns.NS
	nativeIf string
	hostIfs  []string
	relay    string // castd's --amt-listen, 127.0.0.1:PORT
	rate     float64
	sender   *net.UDPConn
	chans    []*amtChannel

	t0      time.Time
	mu      sync.Mutex
	sentAt  []uint32 // ms after t0 at which seq was sent (to every channel)
	sendErr atomic.Int64
	done    chan struct{}
}

// startAMT builds the namespaces and veths and opens the source's and the
// listeners' sockets. The caller closes it (also on failure).
func startAMT(beacons int, rate float64, log *slog.Logger) (a *amtSoak, err error) {
	a = &amtSoak{log: log, rate: rate, done: make(chan struct{})}
	if a.lab, err = netns.NewLab("soak"); err != nil {
		return a, err
	}
	var suf [2]byte
	rand.Read(suf[:])
	name := "sa" + hex.EncodeToString(suf[:]) // host-side veth names, ≤ 15 bytes
	if a.src, err = a.addNS("src"); err != nil {
		return a, err
	}
	if a.lan, err = a.addNS("lan"); err != nil {
		return a, err
	}
	a.nativeIf = name + "n"
	if err = a.hostVeth(a.nativeIf, a.src, "eth0"); err != nil {
		return a, err
	}
	if err = a.src.Addr("eth0", amtSource.String()+"/30"); err != nil {
		return a, err
	}
	if err = a.src.IP("route", "add", "232.0.0.0/8", "dev", "eth0"); err != nil {
		return a, err
	}
	port, err := freeUDPPort()
	if err != nil {
		return a, err
	}
	a.relay = "127.0.0.1:" + strconv.Itoa(port)
	for i := 0; i < beacons; i++ {
		ch := &amtChannel{idx: i, group: netip.AddrFrom4([4]byte{232, 251, 0, byte(i + 1)}), hostIf: name + "l" + strconv.Itoa(i+1), maxSeq: -1}
		lanIf := "lan" + strconv.Itoa(i+1)
		if err = a.hostVeth(ch.hostIf, a.lan, lanIf); err != nil {
			return a, err
		}
		if err = a.lan.Addr(lanIf, fmt.Sprintf("10.251.%d.2/30", i+1)); err != nil {
			return a, err
		}
		// One port per channel: Go binds a multicast listener to
		// 0.0.0.0:port, and the kernel hands it every joined group's
		// datagrams to that port (IP_MULTICAST_ALL).
		if ch.conn, err = a.lan.ListenUDP("udp4", &net.UDPAddr{IP: ch.group.AsSlice(), Port: amtPort + i}); err != nil {
			return a, fmt.Errorf("amt listener %d: %w", i+1, err)
		}
		a.chans = append(a.chans, ch)
		ifi, err := a.lan.InterfaceByName(lanIf)
		if err != nil {
			return a, err
		}
		if err := ipv4.NewPacketConn(ch.conn).JoinSourceSpecificGroup(ifi, &net.UDPAddr{IP: ch.group.AsSlice()}, &net.UDPAddr{IP: amtSource.AsSlice()}); err != nil {
			return a, fmt.Errorf("amt listener %d: join (%s,%s): %w", i+1, amtSource, ch.group, err)
		}
		ch.conn.SetReadBuffer(1 << 20)
	}
	if a.sender, err = a.src.ListenUDP("udp4", &net.UDPAddr{IP: amtSource.AsSlice()}); err != nil {
		return a, fmt.Errorf("amt source: %w", err)
	}
	ifi, err := a.src.InterfaceByName("eth0")
	if err != nil {
		return a, err
	}
	p := ipv4.NewPacketConn(a.sender)
	if err := errors.Join(p.SetMulticastInterface(ifi), p.SetMulticastTTL(8), p.SetMulticastLoopback(false)); err != nil {
		return a, fmt.Errorf("amt source: %w", err)
	}
	for _, ch := range a.chans {
		go a.listen(ch)
	}
	return a, nil
}

func (a *amtSoak) addNS(name string) (*netns.NS, error) {
	n, err := a.lab.Add(name)
	if err != nil {
		return nil, err
	}
	// Re-emitted datagrams keep their source, which is not on the LAN.
	return n, n.NoRPFilter()
}

// hostVeth creates a veth whose end hostIf stays in the soak's namespace
// (where castd and the beacons run) and whose peer nsIf goes into ns. The
// host end gets no address and no IPv6, so nothing but the channel's
// multicast (and its IGMP) crosses it.
func (a *amtSoak) hostVeth(hostIf string, ns *netns.NS, nsIf string) error {
	a.hostIfs = append(a.hostIfs, hostIf)
	for _, args := range [][]string{
		{"link", "add", hostIf, "type", "veth", "peer", "name", nsIf, "netns", ns.Name()},
		{"link", "set", hostIf, "up"},
		{"-n", ns.Name(), "link", "set", nsIf, "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
		}
	}
	os.WriteFile("/proc/sys/net/ipv6/conf/"+hostIf+"/disable_ipv6", []byte("1"), 0o644)
	return nil
}

// close stops the listeners and removes the namespaces and veths.
func (a *amtSoak) close() error {
	if a == nil {
		return nil
	}
	if a.sender != nil {
		a.sender.Close()
	}
	for _, ch := range a.chans {
		ch.conn.Close()
	}
	var err error
	if a.lab != nil {
		err = a.lab.Close()
	}
	// Deleting a namespace deletes its veths' host ends too; this only
	// catches one whose peer never made it into a namespace.
	for _, ifname := range a.hostIfs {
		if _, serr := os.Stat("/sys/class/net/" + ifname); serr == nil {
			exec.Command("ip", "link", "del", ifname).Run()
		}
	}
	return err
}

// castdArgs are castd's AMT flags.
func (a *amtSoak) castdArgs() []string {
	return []string{"--amt-listen", a.relay, "--amt-native-iface", a.nativeIf}
}

// beaconArgs are beacon i's: its channel, re-emitted on its LAN veth.
func (a *amtSoak) beaconArgs(i int) []string {
	ch := a.chans[i]
	return []string{"--lan-iface", ch.hostIf,
		"--amt-join", fmt.Sprintf("%s@%s relay=%s reemit", amtSource, ch.group, a.relay)}
}

// run sends datagram seq to every channel, one every 1/rate, until ctx
// ends. A sender that fell behind (the soak process not scheduled for a
// while on a loaded machine) catches up at most 5 periods' worth at once
// and otherwise starts its schedule again from now: a real source sends at
// its steady rate, and a burst of a hundred datagrams in a millisecond
// (seen after a 0.4 s stall) overflows socket buffers on the way and
// would be judged as the system's loss.
func (a *amtSoak) run(ctx context.Context) {
	defer close(a.done)
	period := time.Duration(float64(time.Second) / a.rate)
	buf := make([]byte, 0, 2048)
	dsts := make([]*net.UDPAddr, len(a.chans))
	for i, ch := range a.chans {
		dsts[i] = &net.UDPAddr{IP: ch.group.AsSlice(), Port: amtPort + ch.idx}
	}
	next := a.t0
	for seq := uint64(0); ; seq++ {
		if d := time.Until(next); d > 0 {
			sleepCtx(ctx, d)
		} else if d < -5*period {
			next = time.Now()
		}
		next = next.Add(period)
		if ctx.Err() != nil {
			return
		}
		a.mu.Lock()
		a.sentAt = append(a.sentAt, uint32(time.Since(a.t0).Milliseconds()))
		a.mu.Unlock()
		for i, ch := range a.chans {
			buf = amtPayload(buf[:0], ch.idx, seq)
			if _, err := a.sender.WriteToUDP(buf, dsts[i]); err != nil && a.sendErr.Add(1) == 1 {
				a.log.Warn("amt source: send failed", "err", err)
			}
		}
	}
}

// amtPayload appends datagram seq of channel ch: magic, channel, seq, a
// body whose length and bytes follow from (ch, seq), and the first 8
// bytes of SHA-256 over all that.
func amtPayload(b []byte, ch int, seq uint64) []byte {
	b = append(b, amtMagic[:]...)
	b = append(b, byte(ch))
	b = binary.BigEndian.AppendUint64(b, seq)
	n := amtMinBody + int((seq*7919+uint64(ch)*131)%900)
	x := seq*0x9e3779b97f4a7c15 + uint64(ch) + 1
	for i := 0; i < n; i++ {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		b = append(b, byte(x))
	}
	sum := sha256.Sum256(b)
	return append(b, sum[:amtSumLen]...)
}

// listen checks every datagram on ch's LAN: it must be exactly what the
// source sent for its seq on this channel.
func (a *amtSoak) listen(ch *amtChannel) {
	buf := make([]byte, 65536)
	var want []byte
	for {
		n, from, err := ch.conn.ReadFromUDP(buf)
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				a.log.Error("amt listener", "beacon", ch.idx+1, "err", err)
			}
			return
		}
		p := buf[:n]
		now := time.Now()
		bad := ""
		var seq uint64
		switch {
		case n < amtHeader+amtMinBody+amtSumLen || !bytes.Equal(p[:8], amtMagic[:]):
			bad = fmt.Sprintf("%d bytes from %s: not a soak datagram", n, from)
		case int(p[8]) != ch.idx:
			bad = fmt.Sprintf("datagram of channel %d on beacon%d's LAN", p[8], ch.idx+1)
		default:
			seq = binary.BigEndian.Uint64(p[9:17])
			if seq >= uint64(a.sent()) {
				bad = fmt.Sprintf("seq %d never sent (%d sent)", seq, a.sent())
				break
			}
			want = amtPayload(want[:0], ch.idx, seq)
			if !bytes.Equal(p, want) {
				bad = fmt.Sprintf("seq %d: %d bytes differ from what was sent (%d bytes, want %d)", seq, diffBytes(p, want), n, len(want))
			}
		}
		ch.mu.Lock()
		if bad != "" {
			ch.corrupt = append(ch.corrupt, amtEvent{At: now, Detail: bad})
			ch.mu.Unlock()
			continue
		}
		w, bit := seq/64, uint64(1)<<(seq%64)
		for uint64(len(ch.seen)) <= w {
			ch.seen = append(ch.seen, 0)
		}
		if ch.seen[w]&bit != 0 {
			ch.dups = append(ch.dups, amtEvent{At: now, Detail: fmt.Sprintf("seq %d received twice", seq)})
		} else {
			ch.seen[w] |= bit
			ch.received++
			ch.maxSeq = max(ch.maxSeq, int64(seq))
		}
		ch.mu.Unlock()
	}
}

func diffBytes(a, b []byte) int {
	n := max(len(a), len(b)) - min(len(a), len(b))
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			n++
		}
	}
	return n
}

func (a *amtSoak) sent() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.sentAt)
}

// sentTime is when seq was sent.
func (a *amtSoak) sentTime(seq int) time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.t0.Add(time.Duration(a.sentAt[seq]) * time.Millisecond)
}

// waitFresh waits until every listener has received a datagram sent after
// since: the channel flows again end to end with nobody's help.
func (a *amtSoak) waitFresh(ctx context.Context, since, deadline time.Time) error {
	for {
		var stale []string
		for _, ch := range a.chans {
			ch.mu.Lock()
			m := ch.maxSeq
			ch.mu.Unlock()
			if m < 0 || !a.sentTime(int(m)).After(since) {
				stale = append(stale, "beacon"+strconv.Itoa(ch.idx+1))
			}
		}
		if len(stale) == 0 {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("AMT listeners behind %s received nothing sent after the fault ended", strings.Join(stale, ", "))
		}
		sleepCtx(ctx, 100*time.Millisecond)
	}
}

// amtSample is one reading of the channels, for amt.csv and the chart.
type amtSample struct {
	T        time.Duration
	Beacon   int
	Received int64
	Sent     int
	Dups     int
	Corrupt  int
}

func (a *amtSoak) sample(start time.Time) []amtSample {
	sent := a.sent()
	var out []amtSample
	for _, ch := range a.chans {
		ch.mu.Lock()
		out = append(out, amtSample{T: time.Since(start), Beacon: ch.idx, Received: ch.received, Sent: sent, Dups: len(ch.dups), Corrupt: len(ch.corrupt)})
		ch.mu.Unlock()
	}
	return out
}

func writeAMTCSV(path string, ss []amtSample) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := csv.NewWriter(f)
	w.Write([]string{"t_seconds", "beacon", "sent", "received", "duplicates", "corrupt"})
	for _, s := range ss {
		w.Write([]string{strconv.FormatFloat(s.T.Seconds(), 'f', 1, 64), strconv.Itoa(s.Beacon + 1), strconv.Itoa(s.Sent),
			strconv.FormatInt(s.Received, 10), strconv.Itoa(s.Dups), strconv.Itoa(s.Corrupt)})
	}
	w.Flush()
	return errors.Join(w.Error(), f.Close())
}

// amtResult is the channels' account at the end of the run.
type amtResult struct {
	Errors  []reqError // for the verdict and errors.csv
	Figures []string
}

// account finds every datagram that never arrived and places it by the
// time it was sent: inside a fault window (with its grace), in the
// warm-up, or outside; contiguous losses are one error. Outside losses
// and duplicates within amtSlack of what was sent outside become
// amt_slack (shown, not failed), more become amt errors.
func (a *amtSoak) account(start time.Time, warmup, grace, relayGrace time.Duration, ws []window) amtResult {
	var res amtResult
	// The verdict places errors with the common grace: a loss or a
	// duplicate placed in a window here is reported at the window's
	// start, one outside is outside with either grace.
	windowOf := func(t time.Time, ws []window, _ time.Duration) int {
		for i := len(ws) - 1; i >= 0; i-- {
			w := ws[i]
			if !t.Before(w.Start.Add(-amtLead)) && !t.After(w.End.Add(amtGraceOf(w.Name, grace, relayGrace))) {
				return i
			}
		}
		return -1
	}
	a.mu.Lock()
	sentAt := append([]uint32(nil), a.sentAt...)
	a.mu.Unlock()
	at := func(seq int) time.Time { return a.t0.Add(time.Duration(sentAt[seq]) * time.Millisecond) }
	warm := start.Add(warmup)
	for _, ch := range a.chans {
		ch.mu.Lock()
		seen := append([]uint64(nil), ch.seen...)
		dups := append([]amtEvent(nil), ch.dups...)
		corrupt := append([]amtEvent(nil), ch.corrupt...)
		received := ch.received
		ch.mu.Unlock()
		has := func(seq int) bool { w := seq / 64; return w < len(seen) && seen[w]&(1<<(seq%64)) != 0 }
		perWin := make([]int, len(ws))
		var outSent, outLost, warmLost int
		var outside []reqError
		flush := func(from, to int) { // [from, to) lost, all outside
			if from < to {
				outside = append(outside, reqError{At: at(from), Kind: kindAMT, Beacon: ch.idx,
					Detail: fmt.Sprintf("lost %d datagrams, seq %d..%d, sent %s..%s", to-from, from, to-1,
						at(from).Sub(start).Round(time.Millisecond), at(to-1).Sub(start).Round(time.Millisecond))})
			}
		}
		runFrom := -1
		for seq := range sentAt {
			t := at(seq)
			wi := windowOf(t, ws, grace)
			isOut := wi < 0 && !t.Before(warm)
			if isOut {
				outSent++
			}
			lost := !has(seq)
			if lost {
				switch {
				case wi >= 0:
					perWin[wi]++
				case t.Before(warm):
					warmLost++
				default:
					outLost++
				}
			}
			if lost && isOut {
				if runFrom < 0 {
					runFrom = seq
				}
			} else if runFrom >= 0 {
				flush(runFrom, seq)
				runFrom = -1
			}
		}
		if runFrom >= 0 {
			flush(runFrom, len(sentAt))
		}
		var inDups []reqError
		for _, d := range dups {
			e := reqError{At: d.At, Kind: kindAMT, Beacon: ch.idx, Detail: d.Detail}
			switch wi := windowOf(d.At, ws, grace); {
			case wi >= 0:
				e.At, e.Detail = ws[wi].Start, fmt.Sprintf("%s at %s", d.Detail, d.At.Sub(start).Round(time.Millisecond))
				inDups = append(inDups, e)
			case d.At.Before(warm):
				inDups = append(inDups, e)
			default:
				outside = append(outside, e)
				outLost++
			}
		}
		// Losses in a fault window are errors of that window, as a
		// failed request there is.
		for wi, n := range perWin {
			if n > 0 {
				res.Errors = append(res.Errors, reqError{At: ws[wi].Start, Kind: kindAMT, Beacon: ch.idx,
					Detail: fmt.Sprintf("lost %d datagrams during %s", n, ws[wi].Name)})
			}
		}
		res.Errors = append(res.Errors, inDups...)
		if float64(outLost) <= amtSlack*float64(outSent) {
			for i := range outside {
				outside[i].Kind = kindAMTSlack
			}
		}
		res.Errors = append(res.Errors, outside...)
		for _, c := range corrupt {
			res.Errors = append(res.Errors, reqError{At: c.At, Kind: kindAMTCorrupt, Beacon: ch.idx, Detail: c.Detail})
		}
		var wins []string
		for wi, n := range perWin {
			wins = append(wins, fmt.Sprintf("%s %d", ws[wi].Name, n))
		}
		pct := 0.0
		if outSent > 0 {
			pct = 100 * float64(outLost) / float64(outSent)
		}
		res.Figures = append(res.Figures, fmt.Sprintf("amt beacon%d (%s,%s): %d sent, %d received, %d lost (%d in warm-up, %d outside windows = %.2f%% of %d, slack %.0f%%), %d duplicates, %d corrupt; lost per window: %s",
			ch.idx+1, amtSource, ch.group, len(sentAt), received, len(sentAt)-int(received), warmLost, outLost, pct, outSent, 100*amtSlack, len(dups), len(corrupt), strings.Join(wins, ", ")))
	}
	if len(sentAt) > 0 {
		res.Figures = append(res.Figures, fmt.Sprintf("amt source: %d datagrams per channel in %s (%.0f a second), %d send errors",
			len(sentAt), time.Duration(sentAt[len(sentAt)-1])*time.Millisecond, float64(len(sentAt))/max(float64(sentAt[len(sentAt)-1])/1000, 1), a.sendErr.Load()))
	}
	return res
}

// amtGraceOf is how long after the fault named name the AMT channel may
// still be dark: relayGrace after a castd restart (see Options.AMTGrace),
// the common grace after the others.
func amtGraceOf(name string, grace, relayGrace time.Duration) time.Duration {
	if name == faultCastd {
		return max(grace, relayGrace)
	}
	return grace
}

// freeUDPPort returns a UDP port free on 127.0.0.1 just now.
func freeUDPPort() (int, error) {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return 0, err
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port, nil
}

// where locates the losses at the end of the run: what castd's relay took
// in and sent out, and what each gateway received, re-emitted and dropped
// (each since its process last started).
func (a *amtSoak) where(sys *system, smp *sampler) string {
	var parts []string
	const in, out = "castd_amt_packets_in_total", "castd_amt_packets_out_total"
	v, err := smp.scrape(sys.castdURL()+protocol.PathMetrics, in, out)
	if err == nil && len(v) != 2 {
		err = fmt.Errorf("castd /metrics lacks %s or %s", in, out)
	}
	if err != nil {
		parts = append(parts, "castd: "+err.Error())
	} else {
		parts = append(parts, fmt.Sprintf("castd relay in %.0f, out %.0f", v[in], v[out]))
	}
	c := http.Client{Timeout: 5 * time.Second}
	for _, n := range sys.nodes {
		var st amtgw.State
		resp, err := c.Get("http://" + n.admin + protocol.PathAMT)
		if err == nil {
			err = json.NewDecoder(resp.Body).Decode(&st)
			resp.Body.Close()
		}
		switch {
		case err != nil:
			parts = append(parts, n.name+": "+err.Error())
		case len(st.Channels) != 1 || st.Reemit == nil:
			parts = append(parts, fmt.Sprintf("%s: %d channels, re-emission %v", n.name, len(st.Channels), st.Reemit != nil))
		default:
			ch := st.Channels[0]
			parts = append(parts, fmt.Sprintf("%s gateway got %d, dropped %d, re-emitted %d (dropped %d, errors %d)",
				n.name, ch.Packets, ch.Dropped+ch.ReemitDropped, st.Reemit.Sent, st.Reemit.Dropped, st.Reemit.Errors))
		}
	}
	return "amt counters since each process's last start: " + strings.Join(parts, "; ")
}
