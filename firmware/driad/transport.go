package driad

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// exchange sends one query and returns the first usable response: it tries
// each nameserver in turn, for r.attempts rounds, with a growing random
// timeout, and repeats over TCP when a UDP answer is truncated. Server
// errors (SERVFAIL, REFUSED, ...) move on to the next server; NOERROR and
// NXDOMAIN are answers.
func (r *Resolver) exchange(ctx context.Context, name string, qtype uint16) (*response, error) {
	var lastErr error
	for attempt := 0; attempt < r.attempts; attempt++ {
		timeout := r.attemptTimeout(attempt)
		for _, ns := range r.servers {
			if err := r.limit.wait(ctx); err != nil {
				return nil, err
			}
			id := uint16(rand.Uint32())
			q, err := appendQuery(nil, id, name, qtype)
			if err != nil {
				return nil, err
			}
			resp, err := exchangeUDP(ctx, ns, q, timeout)
			if err == nil && resp.truncated {
				resp, err = exchangeTCP(ctx, ns, q, timeout)
			}
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if err != nil {
				lastErr = fmt.Errorf("%v: %w", ns, err)
				r.log.Debug("driad: DNS exchange failed", "server", ns, "name", name, "type", qtype, "err", err)
				continue
			}
			if resp.rcode != rcodeSuccess && resp.rcode != rcodeNXDomain {
				lastErr = fmt.Errorf("%v: rcode %d: %w", ns, resp.rcode, ErrServer)
				continue
			}
			return resp, nil
		}
	}
	return nil, lastErr
}

// matches reports whether resp answers query q (same ID and question).
func matches(resp *response, q []byte) bool {
	if resp.id != binary.BigEndian.Uint16(q[0:2]) {
		return false
	}
	qname, off, err := readName(q, headerLen, false)
	if err != nil {
		return false
	}
	return equalName(resp.qname, qname) &&
		resp.qtype == binary.BigEndian.Uint16(q[off:]) &&
		resp.qclass == binary.BigEndian.Uint16(q[off+2:])
}

func exchangeUDP(ctx context.Context, ns netip.AddrPort, q []byte, timeout time.Duration) (*response, error) {
	var d net.Dialer
	// A connected socket: the kernel drops datagrams from other sources.
	c, err := d.DialContext(ctx, "udp", ns.String())
	if err != nil {
		return nil, err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write(q); err != nil {
		return nil, err
	}
	buf := make([]byte, 65535)
	for {
		n, err := c.Read(buf)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return nil, ErrTimeout
			}
			return nil, err
		}
		resp, err := parseResponse(buf[:n:n])
		if err != nil || !matches(resp, q) {
			// A stray or forged datagram: keep waiting for the answer.
			continue
		}
		return resp, nil
	}
}

func exchangeTCP(ctx context.Context, ns netip.AddrPort, q []byte, timeout time.Duration) (*response, error) {
	d := net.Dialer{Timeout: timeout}
	c, err := d.DialContext(ctx, "tcp", ns.String())
	if err != nil {
		return nil, err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()
	c.SetDeadline(time.Now().Add(timeout))
	msg := binary.BigEndian.AppendUint16(make([]byte, 0, 2+len(q)), uint16(len(q)))
	if _, err := c.Write(append(msg, q...)); err != nil {
		return nil, err
	}
	var hdr [2]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return nil, tcpErr(err)
	}
	buf := make([]byte, binary.BigEndian.Uint16(hdr[:]))
	if _, err := io.ReadFull(c, buf); err != nil {
		return nil, tcpErr(err)
	}
	resp, err := parseResponse(buf)
	if err != nil {
		return nil, err
	}
	if !matches(resp, q) {
		return nil, fmt.Errorf("dns: TCP answer does not match the query: %w", ErrMalformed)
	}
	if resp.truncated {
		return nil, fmt.Errorf("dns: truncated answer over TCP: %w", ErrMalformed)
	}
	return resp, nil
}

func tcpErr(err error) error {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return ErrTimeout
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return fmt.Errorf("dns: TCP answer cut short: %w", ErrMalformed)
	}
	return err
}

// limiter is a token bucket: at most n queries in any window.
type limiter struct {
	mu     sync.Mutex
	tokens float64
	max    float64
	per    time.Duration // time to earn one token
	last   time.Time
}

func newLimiter(n int, window time.Duration) *limiter {
	return &limiter{tokens: float64(n), max: float64(n), per: window / time.Duration(n), last: time.Now()}
}

func (l *limiter) wait(ctx context.Context) error {
	for {
		l.mu.Lock()
		now := time.Now()
		l.tokens = min(l.max, l.tokens+float64(now.Sub(l.last))/float64(l.per))
		l.last = now
		if l.tokens >= 1 {
			l.tokens--
			l.mu.Unlock()
			return nil
		}
		need := time.Duration((1 - l.tokens) * float64(l.per))
		l.mu.Unlock()
		t := time.NewTimer(need)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// resolvConf is what this package uses of resolv.conf(5).
type resolvConf struct {
	servers  []netip.AddrPort
	timeout  time.Duration
	attempts int
}

// readResolvConf reads nameserver lines and the timeout and attempts
// options. A missing file is not an error: New falls back to localhost, as
// the C library does.
func readResolvConf(path string) (resolvConf, error) {
	var rc resolvConf
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return rc, nil
	}
	if err != nil {
		return rc, err
	}
	defer f.Close()
	return parseResolvConf(f)
}

func parseResolvConf(r io.Reader) (resolvConf, error) {
	var rc resolvConf
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if i := strings.IndexAny(line, "#;"); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "nameserver":
			a, err := netip.ParseAddr(f[1])
			if err != nil {
				continue // glibc ignores what it cannot parse, too
			}
			rc.servers = append(rc.servers, netip.AddrPortFrom(a, 53))
		case "options":
			for _, o := range f[1:] {
				k, v, ok := strings.Cut(o, ":")
				if !ok {
					continue
				}
				n, err := strconv.Atoi(v)
				if err != nil || n <= 0 {
					continue
				}
				switch k {
				case "timeout":
					rc.timeout = time.Duration(min(n, 30)) * time.Second
				case "attempts":
					rc.attempts = min(n, 5)
				}
			}
		}
	}
	return rc, sc.Err()
}
