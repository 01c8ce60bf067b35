package httpcache

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/blockcast/beacon/shared/objstore"
)

const sendfileEnv = "HTTPCACHE_SENDFILE_HELPER"

// sendfileHits is how many HITs the helper serves; sendfileSize the body.
const (
	sendfileHits = 4
	sendfileSize = 1<<20 + 7
)

// TestSendfileHelper is the child of TestHitUsesSendfile: it fills the
// cache with one large object through a real http.Server, then serves it
// as a HIT sendfileHits times, checking every byte. It does nothing in a
// normal test run.
func TestSendfileHelper(t *testing.T) {
	dir := os.Getenv(sendfileEnv)
	if dir == "" {
		t.Skip("helper process for TestHitUsesSendfile")
	}
	want := bytes.Repeat([]byte("sendfile"), sendfileSize/8+1)[:sendfileSize]
	up := UpstreamFunc(func(ctx context.Context, key string, cond http.Header) (*http.Response, error) {
		return &http.Response{
			StatusCode:    200,
			Header:        http.Header{"Cache-Control": {"max-age=3600"}, "Date": {time.Now().UTC().Format(http.TimeFormat)}},
			ContentLength: int64(len(want)),
			Body:          io.NopCloser(bytes.NewReader(want)),
		}, nil
	})
	st, err := objstore.Open(filepath.Join(dir, "c.db"), objstore.Options{MaxBytes: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	c, err := New(Options{Store: st, Upstream: up})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: c}
	go srv.Serve(ln)
	defer srv.Close()
	for i := 0; i <= sendfileHits; i++ {
		resp, err := http.Get("http://" + ln.Addr().String() + "/big")
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("request %d: %d bytes, %v", i, len(got), err)
		}
		if wantCache := map[bool]string{true: "MISS", false: "HIT"}[i == 0]; resp.Header.Get("X-Cache") != wantCache {
			t.Fatalf("request %d: X-Cache %q", i, resp.Header.Get("X-Cache"))
		}
		waitIdle(c)
	}
	fmt.Println("HELPER OK")
}

// TestHitUsesSendfile runs the helper under strace and checks that each
// HIT of a large object sent its body with sendfile(2) (the MISS cannot:
// it streams from the fill), that is, that nothing between net/http and
// the body file hides the file from net.TCPConn.ReadFrom.
func TestHitUsesSendfile(t *testing.T) {
	if os.Getenv(sendfileEnv) != "" {
		t.Skip("in helper")
	}
	strace, err := exec.LookPath("strace")
	if err != nil {
		t.Skip("strace is not installed")
	}
	dir := t.TempDir()
	trace := filepath.Join(dir, "trace")
	cmd := exec.Command(strace, "-f", "-qq", "-e", "trace=/^sendfile", "-o", trace,
		os.Args[0], "-test.run=^TestSendfileHelper$", "-test.v")
	cmd.Env = append(os.Environ(), sendfileEnv+"="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil && bytes.Contains(out, []byte("ptrace")) {
		t.Skipf("strace cannot trace here: %s", out)
	}
	if err != nil || !bytes.Contains(out, []byte("HELPER OK")) {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	b, err := os.ReadFile(trace)
	if err != nil {
		t.Fatal(err)
	}
	// "sendfile(7, 9, NULL, 1048071) = 1048071" (sendfile64 on some 32-bit
	// systems; a call can be resumed, so count bytes). A call that a signal
	// (Go's preemption, SIGURG) splits in strace's output ends on a
	// "<... sendfile resumed>) = N" line instead.
	re := regexp.MustCompile(`(?:sendfile(?:64)?\(\d+, \d+, NULL, \d+\)|<\.\.\. sendfile(?:64)? resumed>\))\s+= (\d+)`)
	var calls int
	var sent int64
	for _, m := range re.FindAllStringSubmatch(string(b), -1) {
		n, _ := strconv.ParseInt(m[1], 10, 64)
		calls++
		sent += n
	}
	// net/http writes the first 512 bytes with the head, the rest goes by
	// sendfile.
	if min := int64(sendfileHits * (sendfileSize - 512)); sent < min || calls < sendfileHits {
		t.Fatalf("%d sendfile calls sent %d bytes; want at least %d bytes for %d HITs\n%s", calls, sent, min, sendfileHits,
			strings.Join(strings.SplitN(string(b), "\n", 20), "\n"))
	}
	t.Logf("%d HITs: %d sendfile calls, %d bytes", sendfileHits, calls, sent)
}

// openFDs counts this process's open file descriptors.
func openFDs(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	return len(ents)
}

// TestHitNoFDLeaks serves a body stored in a file every way a HIT can go:
// whole, ranges, HEAD, 304, and clients that leave midway; afterwards no
// file descriptor is left open.
func TestHitNoFDLeaks(t *testing.T) {
	// No GC meanwhile: it would close a leaked *os.File and hide the leak.
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	body := strings.Repeat("0123456789abcdef", 16<<10) // 256 KiB: a body file
	o := newOrigin(t, fixed(body, "Cache-Control", "max-age=600", "Etag", `"fd"`))
	e := newEnv(t, o.URL, 64<<20)
	expect(t, e.do(t, "GET", "/fd"), 200, "MISS", body)
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	before := openFDs(t)
	for i := 0; i < 10; i++ {
		expect(t, e.do(t, "GET", "/fd"), 200, "HIT", body)
		expect(t, e.do(t, "GET", "/fd", "Range", "bytes=100-199"), 206, "HIT", body[100:200])
		expect(t, e.do(t, "HEAD", "/fd"), 200, "HIT", "")
		expect(t, e.do(t, "GET", "/fd", "If-None-Match", `"fd"`), 304, "HIT", "")
		// A client that reads a little and hangs up.
		resp, err := client.Get(e.srv.URL + "/fd")
		if err != nil {
			t.Fatal(err)
		}
		io.ReadFull(resp.Body, make([]byte, 1000))
		resp.Body.Close()
	}
	e.srv.Client().CloseIdleConnections()
	// The server notices the hang-ups and closes its side a moment later.
	var after int
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if after = openFDs(t); after <= before {
			return
		}
	}
	t.Fatalf("%d file descriptors open before, %d after", before, after)
}
