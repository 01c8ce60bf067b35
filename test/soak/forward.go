package main

import (
	"context"
	"io"
	"net"
	"sync"
)

// forwarder relays TCP connections to castd, dialling from a chosen
// loopback source address: castd then sees each beacon at its own public
// IP (127.0.0.x), as it sees real beacons behind their own NATs, and
// routes the end users who come from that address to it. It dials anew
// for each connection, so a restarted castd is reached again by itself.
type forwarder struct {
	ln     net.Listener
	src    net.IP
	target string
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
}

func startForwarder(src net.IP, target string) (*forwarder, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	f := &forwarder{ln: ln, src: src, target: target, conns: map[net.Conn]struct{}{}}
	f.wg.Add(1)
	go f.serve()
	return f, nil
}

func (f *forwarder) Addr() string { return f.ln.Addr().String() }

func (f *forwarder) serve() {
	defer f.wg.Done()
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			f.relay(c)
		}()
	}
}

func (f *forwarder) track(c net.Conn, on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if on {
		f.conns[c] = struct{}{}
	} else {
		delete(f.conns, c)
	}
}

func (f *forwarder) relay(c net.Conn) {
	defer c.Close()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: f.src}}
	up, err := d.DialContext(context.Background(), "tcp", f.target)
	if err != nil {
		return // the beacon sees a closed connection, as from a castd that is down
	}
	defer up.Close()
	f.track(c, true)
	f.track(up, true)
	defer f.track(c, false)
	defer f.track(up, false)
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		io.Copy(dst, src)
		if tc, ok := dst.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
		done <- struct{}{}
	}
	go cp(up, c)
	go cp(c, up)
	<-done
	<-done
}

// Close stops accepting and cuts every relayed connection.
func (f *forwarder) Close() {
	f.ln.Close()
	f.mu.Lock()
	for c := range f.conns {
		c.Close()
	}
	f.mu.Unlock()
	f.wg.Wait()
}
