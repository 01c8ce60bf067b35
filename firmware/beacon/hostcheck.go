package beacon

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/blockcast/beacon/shared/ctrlmsg"
	"github.com/blockcast/beacon/shared/ratelimit"
)

// hostGuard refuses requests whose Host header is not an IP literal,
// "localhost", or a name the operator configured (--allow-host, the host of
// --lan-url). It defeats DNS rebinding: a hostile page at evil.example
// whose name is made to resolve to 127.0.0.1 or the router's LAN address
// is same-origin with whatever answers there, so it could read the status
// and metrics, and send JSON POSTs to the local API that jsonOnly's
// content-type rule lets through (a same-origin request needs no
// preflight). The browser still sends Host: evil.example, and no
// attacker can make a browser send a Host that is an IP literal or
// localhost for a name it controls.
type hostGuard struct {
	log     *slog.Logger
	names   map[string]bool // lower case, no trailing dot
	logRate *ratelimit.Bucket
}

// errHostRefused is what a refused request's log line and body say.
const errHostRefused = "this beacon answers only at its IP address, localhost or a name set with --allow-host"

func newHostGuard(log *slog.Logger, names []string) *hostGuard {
	g := &hostGuard{log: log, names: map[string]bool{}, logRate: ratelimit.NewBucket(1, 5, time.Now())}
	for _, n := range names {
		if n = normalHost(n); n != "" {
			g.names[n] = true
		}
	}
	return g
}

// normalHost lower-cases a host name and drops a final dot, so that
// "Beacon.LAN." and "beacon.lan" are one name.
func normalHost(h string) string {
	return strings.TrimSuffix(strings.ToLower(h), ".")
}

// allowed reports whether a request's Host header (host[:port]) may be
// answered.
func (g *hostGuard) allowed(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	} else if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		host = host[1 : len(host)-1]
	} else if strings.Contains(host, ":") {
		// An IPv6 literal in a Host header is bracketed (RFC 3986
		// 3.2.2); "::%]" would otherwise pass as "::" with zone "]".
		return false
	}
	if host == "" {
		return false
	}
	if _, err := netip.ParseAddr(host); err == nil {
		// A zone ("fe80::1%eth0") is part of a literal too; nothing
		// resolves to a literal, so no page can rebind one.
		return true
	}
	h := normalHost(host)
	return h == "localhost" || g.names[h]
}

// wrap guards h.
func (g *hostGuard) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if g.allowed(r.Host) {
			h.ServeHTTP(w, r)
			return
		}
		if g.logRate.Allow(time.Now()) {
			g.log.Warn("refused a request for another host name (DNS rebinding?)", "err", errHostRefused,
				"host", clip(r.Host, 100), "method", r.Method, "path", clip(r.URL.Path, 100), "remote", r.RemoteAddr)
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusMisdirectedRequest)
		fmt.Fprintf(w, "%s; open it by address (e.g. http://%s/) or add %q to --allow-host\n",
			errHostRefused, localAddrOf(r), normalHost(clip(hostOnly(r.Host), 100)))
	})
}

// hostOnly is the host part of a Host header.
func hostOnly(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return h
	}
	return hostport
}

// localAddrOf is the address:port the request came in at.
func localAddrOf(r *http.Request) string {
	if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		return a.String()
	}
	return "ADDRESS:PORT"
}

// allowHosts are the names the status page and the local API answer to:
// the configured ones and the host of --lan-url.
func (o *Options) allowHosts() []string {
	names := append([]string(nil), o.AllowHosts...)
	if u, err := url.Parse(o.LANURL); err == nil && o.LANURL != "" {
		names = append(names, u.Hostname())
	}
	return names
}

// checkAllowHosts checks --allow-host entries: host names only (an address
// is always allowed, and a pattern would let a rebinding name through).
func checkAllowHosts(names []string) error {
	for _, n := range names {
		if n == "localhost" {
			continue
		}
		if err := ctrlmsg.CheckHostName(n); err != nil {
			return fieldError("AllowHosts", fmt.Errorf("%q: want a host name such as beacon.lan: %w", n, err))
		}
	}
	return nil
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
