package mcnet

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/blockcast/beacon/shared/mcproto"
)

// proxyAddr is where an on-path attacker's proxy listens, inside the
// namespace of the beacon it sits in front of.
const proxyAddr = "127.0.0.1:8090"

// onPath puts a man in the middle between n and castd: a proxy in n's
// namespace (so castd still sees n's address) that gives every offer a
// manifest changed by change. n's beacon must use it as --cast-url. It
// returns how many offers it changed.
func (l *lab) onPath(n *node, change func(manifest []byte) []byte) *atomic.Int64 {
	t := l.tb
	t.Helper()
	var ln net.Listener
	if err := n.ns.Do(func() (err error) { ln, err = net.Listen("tcp", proxyAddr); return err }); err != nil {
		t.Fatal(err)
	}
	target, _ := url.Parse("http://" + castHTTP)
	changed := new(atomic.Int64)
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
			r.Out.Host = castHTTP // castd names its MQTT broker after its Host
		},
		Transport: &http.Transport{DialContext: n.ns.DialContext},
		ModifyResponse: func(resp *http.Response) error {
			if resp.Header.Get("Content-Type") != mcproto.OfferType {
				return nil
			}
			o, err := mcproto.DecodeOffer(resp.Body)
			resp.Body.Close()
			if err != nil {
				return fmt.Errorf("proxy: %w", err)
			}
			o.Manifest = change(bytes.Clone(o.Manifest))
			b, err := mcproto.EncodeOffer(o)
			if err != nil {
				return fmt.Errorf("proxy: %w", err)
			}
			changed.Add(1)
			resp.Body = io.NopCloser(bytes.NewReader(b))
			resp.ContentLength = int64(len(b))
			resp.Header.Set("Content-Length", strconv.Itoa(len(b)))
			return nil
		},
	}
	srv := &http.Server{Handler: rp, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return changed
}
