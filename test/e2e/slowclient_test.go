package e2e

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/blockcast/beacon/shared/protocol"
	"github.com/blockcast/beacon/test/harness"
)

// rawGet sends a GET on a new connection and returns it unread.
func rawGet(t *testing.T, addr, path string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", path, addr)
	return c
}

// Slow and hostile clients against real processes: the beacon's
// connection cap (the admin listener is not starved), a reader that stalls
// versus one that is slow, and a body sent a byte at a time to castd.
func TestSlowClients(t *testing.T) {
	sys := newSystem(t, "--body-timeout", "1s", "--write-stall-timeout", "1s")
	sys.BeaconArgs = []string{"--max-conns", "4", "--write-stall-timeout", "1s", "--body-timeout", "1s"}
	if err := sys.Start(); err != nil {
		t.Fatal(err)
	}

	t.Run("beacon connection cap", func(t *testing.T) {
		var held []net.Conn
		for range 4 {
			c := rawGet(t, sys.BeaconAddr, "/obj/1k/cap.bin")
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			held = append(held, c) // idle keep-alive: holds a slot
		}
		fifth := rawGet(t, sys.BeaconAddr, "/obj/1k/cap.bin")
		fifth.SetReadDeadline(time.Now().Add(700 * time.Millisecond))
		var one [1]byte
		if _, err := fifth.Read(one[:]); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("a fifth connection was served past --max-conns 4 (%v)", err)
		}
		// The local status endpoint has its own slots.
		if _, err := http.Get("http://" + sys.AdminAddr + protocol.PathHealthz); err != nil {
			t.Fatalf("admin listener starved: %v", err)
		}
		held[0].Close()
		fifth.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(fifth), nil)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("fifth client once a slot freed: %v", err)
		}
		for _, c := range held[1:] {
			c.Close()
		}
	})

	t.Run("stalled reader cut off, slow reader served", func(t *testing.T) {
		path := "/obj/64M/stall.bin"
		stuck := rawGet(t, sys.BeaconAddr, path)
		stuck.(*net.TCPConn).SetReadBuffer(4 << 10)
		start := time.Now()
		// The beacon gives up on it once its writes make no progress for
		// --write-stall-timeout, and frees its connection slot.
		if !harness.WaitFor(15*time.Second, func() bool {
			return beaconMetric(t, sys, "beacon_http_write_stalls_total") >= 1
		}) {
			t.Fatal("a client that never reads held its response for 15 s")
		}
		t.Logf("stalled reader cut off after %v", time.Since(start).Round(time.Millisecond))
		if !harness.WaitFor(5*time.Second, func() bool { return beaconMetric(t, sys, "beacon_http_connections") == 0 }) {
			t.Fatalf("connection slot not freed: %v open", beaconMetric(t, sys, "beacon_http_connections"))
		}

		// 4 MiB at 128 KiB per 100 ms: over 3 s, many stall periods.
		slow := rawGet(t, sys.BeaconAddr, "/obj/4M/slow.bin")
		resp, err := http.ReadResponse(bufio.NewReader(slow), nil)
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 128<<10)
		var got int64
		for {
			m, err := io.ReadFull(resp.Body, buf)
			got += int64(m)
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				break
			}
			if err != nil {
				t.Fatalf("slow reader cut off after %d bytes: %v", got, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		if got != 4<<20 {
			t.Fatalf("slow reader got %d bytes", got)
		}
	})

	t.Run("castd slow body", func(t *testing.T) {
		c, err := net.Dial("tcp", sys.CastdAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n", protocol.PathRegister)
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			for {
				select {
				case <-stop:
					return
				case <-time.After(time.Second):
				}
				if _, err := c.Write([]byte(" ")); err != nil {
					return
				}
			}
		}()
		start := time.Now()
		c.SetReadDeadline(time.Now().Add(15 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err == nil {
			resp.Body.Close()
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatal("castd held a one-byte-per-second body for 15 s")
		}
		t.Logf("castd answered %v after %v", statusOf(resp), time.Since(start).Round(time.Millisecond))
		if time.Since(start) > 5*time.Second {
			t.Fatalf("cut off only after %v", time.Since(start))
		}
	})
}

// beaconMetric reads one sample from the beacon's /metrics.
func beaconMetric(t *testing.T, sys *harness.System, series string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + sys.AdminAddr + protocol.PathMetrics)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindSubmatch(raw)
	if m == nil {
		t.Fatalf("no %s in the beacon's metrics", series)
	}
	v, _ := strconv.ParseFloat(string(m[1]), 64)
	return v
}

func statusOf(resp *http.Response) string {
	if resp == nil {
		return "nothing (connection closed)"
	}
	return resp.Status
}

// A web page the router's owner visits can POST text/plain to the beacon's
// local API without a preflight; the API refuses it.
func TestLocalAPICrossSite(t *testing.T) {
	sys := startSystem(t)
	body := `{"channel":"198.51.100.1@232.1.1.1 relay=127.0.0.1:9"}`
	post := func(ctype string) int {
		req, _ := http.NewRequest(http.MethodPost, "http://"+sys.AdminAddr+protocol.PathAMT+protocol.AMTJoin, strings.NewReader(body))
		req.Header.Set("Content-Type", ctype)
		req.Header.Set("Origin", "http://evil.example")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	channels := func() int {
		resp, err := http.Get("http://" + sys.AdminAddr + protocol.PathAMT)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var st struct{ Channels []json.RawMessage }
		json.NewDecoder(resp.Body).Decode(&st)
		return len(st.Channels)
	}
	for _, ct := range []string{"text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", ""} {
		if got := post(ct); got != http.StatusUnsupportedMediaType {
			t.Errorf("Content-Type %q: %d, want 415", ct, got)
		}
	}
	if n := channels(); n != 0 {
		t.Fatalf("a cross-site request joined %d channels", n)
	}
	// The operator's own JSON request still works.
	if got := post("application/json"); got != http.StatusOK {
		t.Fatalf("JSON join: %d", got)
	}
	if n := channels(); n != 1 {
		t.Fatalf("JSON join: %d channels", n)
	}
}
