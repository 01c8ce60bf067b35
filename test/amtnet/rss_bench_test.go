package amtnet

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// rssTarget is the beacon's memory budget with ten channels joined, on
// amd64 (the figure: 25 MB).
const rssTarget = 25_000_000

// BenchmarkBeaconRSS runs castd and a beacon in their namespaces with ten
// channels joined through the tunnel and re-emitted on the LAN, while a
// source pushes 8 Mbit/s across them (1000 datagrams of 1000 bytes a
// second) for 20 s, then reads the beacon's VmRSS and VmHWM from /proc. One
// run takes the whole 20 s, so use -benchtime=1x:
//
//	go test -run '^$' -bench BeaconRSS -benchtime 1x ./test/amtnet
func BenchmarkBeaconRSS(b *testing.B) {
	require(b)
	const (
		channels = 10
		payload  = 1000
		perTick  = channels // one datagram per channel every 10 ms
		tick     = 10 * time.Millisecond
		duration = 20 * time.Second
	)
	l := newLab(b, labOpts{})
	l.startCastd("--amt-query-interval", "10s")
	var joins []string
	groups := make([]netip.AddrPort, channels)
	for i := range groups {
		groups[i] = netip.MustParseAddrPort(fmt.Sprintf("232.10.8.%d:5008", i+1))
		joins = append(joins, "--amt-join", srcIP4.String()+"@"+groups[i].Addr().String()+" relay="+amtRelayIP4.String()+" reemit")
	}
	l.startBeacon(joins...)
	for _, g := range groups {
		l.waitJoined(srcIP4, g.Addr(), 15*time.Second)
	}
	waitAMTRelayNative(b, l, channels)
	snds := make([]*sender, channels)
	dsts := make([]*net.UDPAddr, channels)
	for i, g := range groups {
		snds[i] = newSender(b, l.src, "eth0", srcIP4, g)
		dsts[i] = net.UDPAddrFromAddrPort(g)
	}
	msg := make([]byte, payload)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		t := time.NewTicker(tick)
		sent := 0
		for time.Since(start) < duration {
			<-t.C
			for j, s := range snds[:perTick] {
				if _, err := s.conn.WriteToUDP(msg, dsts[j]); err != nil {
					b.Fatal(err)
				}
				sent++
			}
		}
		t.Stop()
		elapsed := time.Since(start)
		time.Sleep(200 * time.Millisecond)
		b.StopTimer()

		st, err := l.gwState()
		if err != nil {
			b.Fatal(err)
		}
		var got uint64
		for _, c := range st.Channels {
			got += c.Packets
		}
		if st.Reemit == nil || float64(got) < 0.99*float64(sent) || st.Reemit.Sent < got*99/100 {
			b.Errorf("the load did not get through: %d datagrams sent, %d received, re-emission %+v", sent, got, st.Reemit)
		}
		rss, hwm, err := memory(l.beacon.Pid())
		if err != nil {
			b.Fatal(err)
		}
		mbit := float64(sent*payload*8) / elapsed.Seconds() / 1e6
		b.Logf("beacon with %d channels, %.1f Mbit/s for %s (%d datagrams, %d received, %d re-emitted): VmRSS %.1f MB, VmHWM %.1f MB (target < %d MB)",
			channels, mbit, elapsed.Round(time.Second), sent, got, st.Reemit.Sent, float64(rss)/1e6, float64(hwm)/1e6, rssTarget/1_000_000)
		b.ReportMetric(float64(rss)/1e6, "MB-RSS")
		b.ReportMetric(float64(hwm)/1e6, "MB-HWM")
		b.ReportMetric(mbit, "Mbit/s")
		if hwm > rssTarget {
			b.Errorf("beacon's peak RSS %.1f MB is over the %d MB target", float64(hwm)/1e6, rssTarget/1_000_000)
		}
		b.StartTimer()
	}
}

// memory reads VmRSS and VmHWM of pid, in bytes.
func memory(pid int) (rss, hwm int64, err error) {
	s, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(s), "\n") {
		f := strings.Fields(line)
		if len(f) < 3 || f[2] != "kB" {
			continue
		}
		kb, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("%s: %w", line, err)
		}
		switch f[0] {
		case "VmRSS:":
			rss = kb << 10
		case "VmHWM:":
			hwm = kb << 10
		}
	}
	if rss == 0 || hwm == 0 {
		return 0, 0, fmt.Errorf("no VmRSS/VmHWM for pid %d", pid)
	}
	return rss, hwm, nil
}
