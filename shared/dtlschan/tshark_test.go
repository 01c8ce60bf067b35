package dtlschan

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// lines collects a command's output lines.
type lines struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (l *lines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *lines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *lines) has(s string) bool {
	return slices.Contains(strings.Split(l.String(), "\n"), s)
}

// TestTshark captures a handshake and datagrams both ways on lo and has
// tshark dissect them as DTLS: every handshake message of a mutually
// authenticated exchange, Ed25519 signatures, no malformed packet, no
// expert warning, and no UDP payload over the MTU.
func TestTshark(t *testing.T) {
	skip := t.Skipf
	if os.Getenv("CI") == "true" {
		skip = t.Fatalf
	}
	tshark, err := exec.LookPath("tshark")
	if err != nil {
		skip("tshark not installed: %v", err)
	}
	if os.Geteuid() != 0 {
		skip("capturing on lo needs root")
	}
	node := newKey(t)
	const mtu = 1200
	s := startServer(t, ListenConfig{MTU: mtu}, registry(node.ID()))
	port := strconv.Itoa(s.Addr().(*net.UDPAddr).Port)
	probe, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer probe.Close()
	probePort := strconv.Itoa(probe.LocalAddr().(*net.UDPAddr).Port)
	sendProbe := func() { probe.WriteToUDP([]byte("probe"), probe.LocalAddr().(*net.UDPAddr)) }

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pcap := filepath.Join(t.TempDir(), "dtls.pcap")
	cmd := exec.CommandContext(ctx, tshark, "-i", "lo", "-f", "udp port "+port+" or udp port "+probePort,
		"-w", pcap, "-P", "-l", "-T", "fields", "-e", "udp.dstport", "-E", "occurrence=f")
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr lines
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	}
	defer stop()
	// The filter is live once a probe shows up; wait for one, bounded.
	wait := func(what string, tick func(), cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for !cond() {
			if tick != nil {
				tick()
			}
			select {
			case err := <-exited:
				stopped = true
				t.Fatalf("tshark exited waiting for %s: %v\n%s", what, err, stderr.String())
			case <-time.After(100 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s\n%s", what, stderr.String())
			}
		}
	}
	wait("tshark to capture", sendProbe, func() bool { return stdout.has(probePort) })

	c, err := dial(t, Dialer{MTU: mtu}, s.addr(), node, s.key.Public())
	if err != nil {
		t.Fatal(err)
	}
	sc := accept(t, s)
	for _, dir := range [][2]*Session{{c, sc}, {sc, c}} {
		for _, size := range []int{64, dir[0].MaxPayload()} {
			if _, err := dir[0].Write(make([]byte, size)); err != nil {
				t.Fatal(err)
			}
			dir[1].SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := dir[1].Read(make([]byte, 2000)); err != nil {
				t.Fatal(err)
			}
		}
	}
	c.Close()
	sc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := sc.Read(make([]byte, 2000)); !errors.Is(err, ErrPeerClosed) {
		t.Fatalf("server read after the beacon closed: %v, want ErrPeerClosed", err)
	}
	<-sc.Done()
	// lo keeps order: once a last probe is seen, everything before it is in.
	n := len(strings.Split(stdout.String(), "\n"))
	wait("the last probe", sendProbe, func() bool {
		l := strings.Split(stdout.String(), "\n")
		return len(l) > n && slices.Contains(l[n-1:], probePort)
	})
	stop()

	fields := []string{"udp.dstport", "udp.length", "dtls.record.content_type", "dtls.handshake.type",
		"dtls.handshake.sig_hash_alg", "dtls.handshake.ciphersuite", "_ws.malformed", "_ws.expert.severity",
		"_ws.expert.message"}
	args := []string{"-r", pcap, "-d", "udp.port==" + port + ",dtls", "-T", "fields", "-E", "occurrence=a",
		"-E", "aggregator=,", "-E", "separator=/t"}
	for _, f := range fields {
		args = append(args, "-e", f)
	}
	out, err := exec.CommandContext(ctx, tshark, args...).Output()
	if err != nil {
		t.Fatalf("tshark -r: %v", err)
	}
	seen := map[string]map[string]bool{}
	packets := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		cols := strings.Split(line, "\t")
		if len(cols) < len(fields) || cols[0] == probePort {
			continue
		}
		packets++
		for i, f := range fields {
			if seen[f] == nil {
				seen[f] = map[string]bool{}
			}
			for _, v := range strings.Split(cols[i], ",") {
				if v != "" {
					seen[f][v] = true
				}
			}
		}
		if udpLen, _ := strconv.Atoi(cols[1]); udpLen-8 > mtu {
			t.Errorf("a %d-byte UDP payload, MTU %d: %s", udpLen-8, mtu, line)
		}
		if cols[6] != "" || cols[7] != "" {
			t.Errorf("tshark: malformed or expert info: %s", line)
		}
	}
	t.Logf("%d DTLS packets; record types %v; handshake types %v", packets,
		keys(seen["dtls.record.content_type"]), keys(seen["dtls.handshake.type"]))
	// ClientHello, ServerHello, HelloVerifyRequest, Certificate,
	// ServerKeyExchange, CertificateRequest, ServerHelloDone,
	// CertificateVerify, ClientKeyExchange: a cookie exchange and a client
	// certificate. Finished is encrypted and shows as an opaque message.
	for _, ht := range []string{"1", "2", "3", "11", "12", "13", "14", "15", "16"} {
		if !seen["dtls.handshake.type"][ht] {
			t.Errorf("handshake message type %s not dissected", ht)
		}
	}
	// change_cipher_spec, alert (close_notify), handshake, application_data.
	for _, ct := range []string{"20", "21", "22", "23"} {
		if !seen["dtls.record.content_type"][ct] {
			t.Errorf("record type %s not dissected", ct)
		}
	}
	if !seen["dtls.handshake.sig_hash_alg"]["0x0807"] {
		t.Errorf("no Ed25519 signature (0x0807) in the handshake: %v", keys(seen["dtls.handshake.sig_hash_alg"]))
	}
	if !seen["dtls.handshake.ciphersuite"]["0xc02b"] {
		t.Errorf("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 (0xc02b) not negotiated: %v", keys(seen["dtls.handshake.ciphersuite"]))
	}
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
