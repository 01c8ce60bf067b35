package probe

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"slices"
	"testing"
	"time"
)

// FuzzAnswer: whatever a relay answers, a probe ends within its deadline
// with one of the Results, and only a 200 answer passes.
func FuzzAnswer(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\n",
		"HTTP/1.0 200 OK\r\n\r\nok",
		"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:1/\r\n\r\n",
		"HTTP/1.1 503 Down\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
		"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
		"HTTP/1.1 200 OK\r\n" + string(bytes.Repeat([]byte("X: y\r\n"), 5000)) + "\r\n",
		"SSH-2.0-OpenSSH\r\n",
		"",
	} {
		f.Add([]byte(s))
	}
	p, err := New(Options{Interval: time.Second, Timeout: 300 * time.Millisecond, AllowPrivate: true, Path: "/healthz",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, answer []byte) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Skip(err)
		}
		defer ln.Close()
		go func() {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(time.Second))
			c.Write(answer)
		}()
		start := time.Now()
		res, err := p.check(context.Background(), "http://"+ln.Addr().String())
		if took := time.Since(start); took > time.Second {
			t.Fatalf("probe took %s", took)
		}
		if !slices.Contains(Results, res) {
			t.Fatalf("result %q", res)
		}
		if (res == OK) != (err == nil) {
			t.Fatalf("result %s with error %v", res, err)
		}
		if res == OK && !bytes.HasPrefix(answer, []byte("HTTP/1.")) {
			t.Fatalf("%q passed", answer)
		}
	})
}
