package probe

import (
	"log"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/blockcast/beacon/test/harness"
)

// TestEagerAnswerLogsNothing: a relay that answers before it is asked made
// net/http write "Unsolicited response" to the process's standard log on
// every probe, outside any rate limit.
func TestEagerAnswerLogsNothing(t *testing.T) {
	var out harness.LineBuffer
	log.SetOutput(&out)
	t.Cleanup(func() { log.SetOutput(nil) })
	var urls []string
	for range 10 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Write([]byte("HTTP/1.1 503 Go Away\r\nContent-Length: 0\r\n\r\n"))
				go func() {
					time.Sleep(time.Second)
					c.Close()
				}()
			}
		}()
		urls = append(urls, "http://"+ln.Addr().String())
	}
	p := start(t, Options{Interval: 100 * time.Millisecond, AllowPrivate: true})
	for i, u := range urls {
		p.Set(string(rune('a'+i)), u)
	}
	if !waitFor(5*time.Second, func() bool { c := p.Counts(); return c[Status]+c[Error]+c[Timeout] >= 100 }) {
		t.Fatalf("probes: %v", p.Counts())
	}
	if s := out.String(); strings.Contains(s, "Unsolicited") {
		t.Fatalf("probes of eager relays logged outside the rate limit:\n%s", s[:min(len(s), 500)])
	}
}
