package main

import (
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/blockcast/beacon/test/harness"
)

// originMode is what the controllable origin does with a request.
type originMode int32

const (
	originNormal  originMode = iota
	originSlow               // answers after slowDelay
	originFailing            // answers 503 to everything
)

func (m originMode) String() string {
	switch m {
	case originSlow:
		return "slow"
	case originFailing:
		return "failing"
	}
	return "normal"
}

// origin is the harness origin (deterministic content with known SHA-256)
// behind a switch the fault schedule flips: normal, slow, failing.
type origin struct {
	URL       string
	inner     *harness.Origin
	srv       *http.Server
	mode      atomic.Int32
	slowDelay time.Duration
	requests  atomic.Int64
	refused   atomic.Int64
}

func startOrigin(slowDelay time.Duration) (*origin, error) {
	inner, err := harness.StartOrigin()
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		inner.Close()
		return nil, err
	}
	o := &origin{URL: "http://" + ln.Addr().String(), inner: inner, slowDelay: slowDelay}
	o.srv = &http.Server{Handler: o, ReadHeaderTimeout: 10 * time.Second}
	go o.srv.Serve(ln)
	return o, nil
}

func (o *origin) set(m originMode) { o.mode.Store(int32(m)) }

func (o *origin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	o.requests.Add(1)
	switch originMode(o.mode.Load()) {
	case originSlow:
		select {
		case <-time.After(o.slowDelay):
		case <-r.Context().Done():
			return
		}
	case originFailing:
		o.refused.Add(1)
		http.Error(w, "origin failing (soak fault)", http.StatusServiceUnavailable)
		return
	}
	o.inner.ServeHTTP(w, r)
}

func (o *origin) Close() {
	o.srv.Close()
	o.inner.Close()
}
