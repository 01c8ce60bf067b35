package beacon

import (
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/protocol"
)

// CastdView is castd's answer to the beacon's last signed whoami: whether
// it knows the node, its control-plane state there, and whether its
// request router sends users here.
type CastdView struct {
	At         time.Time `json:"at"`
	PublicIP   string    `json:"public_ip"`
	Registered *bool     `json:"registered,omitempty"`
	State      string    `json:"state,omitempty"`
	Routable   *bool     `json:"routable,omitempty"` // absent: castd does not say (an older castd)
}

func (b *Beacon) noteCastdView(who protocol.Whoami) {
	v := &CastdView{At: time.Now(), PublicIP: who.IP, Registered: who.Registered, State: clip(who.State, 32), Routable: who.Routable}
	b.mu.Lock()
	b.view = v
	b.lastErr = "" // castd answered
	b.mu.Unlock()
}

// AMTStatus is the gateway's tunnels and channels, in short.
type AMTStatus struct {
	Tunnels  []AMTTunnel  `json:"tunnels"`
	Channels []AMTChannel `json:"channels"`
}

// AMTTunnel is one tunnel to an AMT relay.
type AMTTunnel struct {
	Relay     string    `json:"relay"`
	Phase     string    `json:"phase"`
	Since     time.Time `json:"since"`
	Channels  int       `json:"channels"`
	Packets   uint64    `json:"packets"`
	Bytes     uint64    `json:"bytes"`
	LastData  time.Time `json:"last_data,omitzero"`
	LastError string    `json:"last_error,omitempty"`
}

// AMTChannel is one joined SSM channel.
type AMTChannel struct {
	Channel   string    `json:"channel"` // SOURCE@GROUP
	Status    string    `json:"status"`
	Relay     string    `json:"relay,omitempty"`
	Reemit    bool      `json:"reemit,omitempty"`
	Packets   uint64    `json:"packets"`
	Bytes     uint64    `json:"bytes"`
	LastData  time.Time `json:"last_data,omitzero"`
	LastError string    `json:"last_error,omitempty"`
}

// maxAMTRows bounds the tunnels and channels the status lists.
const maxAMTRows = 32

func (b *Beacon) amtStatus() AMTStatus {
	out := AMTStatus{Tunnels: []AMTTunnel{}, Channels: []AMTChannel{}}
	if b.gw == nil {
		return out
	}
	st := b.gw.State()
	for _, t := range st.Tunnels[:min(len(st.Tunnels), maxAMTRows)] {
		out.Tunnels = append(out.Tunnels, AMTTunnel{Relay: t.Relay.String(), Phase: string(t.Phase), Since: t.Since,
			Channels: len(t.Channels), Packets: t.Packets, Bytes: t.Bytes, LastData: t.LastData, LastError: clip(t.LastError, maxProblemText)})
	}
	for _, c := range st.Channels[:min(len(st.Channels), maxAMTRows)] {
		ch := AMTChannel{Channel: c.Source.String() + "@" + c.Group.String(), Status: c.Status, Reemit: c.Reemit,
			Packets: c.Packets, Bytes: c.Bytes, LastData: c.LastData, LastError: clip(c.LastError, maxProblemText)}
		if c.Relay.IsValid() {
			ch.Relay = c.Relay.String()
		}
		out.Channels = append(out.Channels, ch)
	}
	return out
}

// secretStrings are the forms the node's secret key (and the owner's
// delegation signature) could take in text; the problem log cuts them out.
func secretStrings(key *identity.Keypair, d *protocol.Delegation) []string {
	priv := key.PrivateKey()
	seed := priv.Seed()
	s := []string{
		identity.EncodeBase58(priv), identity.EncodeBase58(seed),
		hex.EncodeToString(priv), hex.EncodeToString(seed),
		base64.StdEncoding.EncodeToString(priv), base64.StdEncoding.EncodeToString(seed),
		strings.TrimSpace(string(key.MarshalSolana())),
	}
	if d != nil {
		s = append(s, d.Signature)
	}
	return s
}

// redactURL drops user info (a password) from a URL shown to the LAN.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL)"
	}
	if u.User == nil {
		return s
	}
	u.User = nil
	return u.String()
}

//go:embed status.html
var statusPage []byte

// statusCSP allows the page's own inline script and style (by hash) and
// fetches from its own origin; nothing else loads, nothing may frame it,
// and no form can be submitted anywhere. The empty data: icon keeps the
// browser from asking for /favicon.ico, a content URL the cache would
// fetch from castd.
var statusCSP = "default-src 'none'; script-src " + inlineHash(statusPage, "script") +
	"; style-src " + inlineHash(statusPage, "style") +
	"; connect-src 'self'; img-src data:; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"

// inlineHash is the CSP source of the page's one inline <tag> element.
func inlineHash(page []byte, tag string) string {
	s := string(page)
	i := strings.Index(s, "<"+tag+">")
	j := strings.Index(s, "</"+tag+">")
	if i < 0 || j < i {
		return "'none'"
	}
	sum := sha256.Sum256([]byte(s[i+len(tag)+2 : j]))
	return "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
}

// publicHandler is what the end users' listener serves: the cache, and the
// owner's read-only status page on "/" and protocol.PathStatus unless
// --status-page=false. It lives on this listener because the owner's
// devices reach it already (it is the LAN URL castd sends users to): no
// other port to find or open.
func (b *Beacon) publicHandler() http.Handler {
	if !b.opts.StatusPage {
		return b.cache
	}
	status := b.hosts.wrap(http.HandlerFunc(b.serveStatusPage))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case protocol.PathStatusPage, protocol.PathStatus:
			status.ServeHTTP(w, r)
		default:
			b.cache.ServeHTTP(w, r)
		}
	})
}

// serveStatusPage serves the page and its JSON, read-only: the LAN can look
// but change nothing.
func (b *Beacon) serveStatusPage(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		b.log.Info("status page: refused a method", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr)
		h.Set("Allow", "GET, HEAD")
		h.Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusMethodNotAllowed)
		w.Write([]byte("the status page is read-only: GET or HEAD\n"))
		return
	}
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
	if r.URL.Path == protocol.PathStatus {
		b.serveStatusJSON(w, r)
		return
	}
	h.Set("Content-Security-Policy", statusCSP)
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	w.Write(statusPage)
}

func (b *Beacon) serveStatusJSON(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(b.Status())
}

// describe says castd's view in a line, for `beacon status`.
func (v *CastdView) describe() string {
	var s string
	switch {
	case v.Registered != nil && !*v.Registered:
		s = "it does not know this node"
	case v.Routable != nil && *v.Routable:
		s = "routable: users are sent here"
	case v.Routable != nil:
		s = "not routable: users are sent elsewhere"
	default:
		s = "it knows this node"
	}
	if v.State != "" {
		s += " (" + v.State + ")"
	}
	return s + ", as of " + v.At.Format(time.RFC3339)
}
