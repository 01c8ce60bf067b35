package broker

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	mqtt "github.com/mochi-mqtt/server/v2"

	"github.com/blockcast/beacon/cloud/broker/brokertest"
	"github.com/blockcast/beacon/shared/ctrlmsg"
	"github.com/blockcast/beacon/shared/identity"
)

func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func newKey(t testing.TB) *identity.Keypair {
	t.Helper()
	kp, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

func startBroker(t testing.TB, opts Options) *Broker {
	t.Helper()
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	b, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); b.Close() })
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return b
}

// recorder collects what a bus subscription sees.
type recorder struct {
	mu   sync.Mutex
	msgs []string // topic + " " + payload
	ch   chan string
}

func newRecorder() *recorder { return &recorder{ch: make(chan string, 1024)} }

func (r *recorder) fn(topic string, payload []byte, _ bool) {
	s := topic + " " + string(payload)
	r.mu.Lock()
	r.msgs = append(r.msgs, s)
	r.mu.Unlock()
	select {
	case r.ch <- s:
	default:
	}
}

func (r *recorder) all() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.msgs...)
}

// waitFor waits until a message containing substr arrives.
func (r *recorder) waitFor(t testing.TB, substr string) {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		for _, m := range r.all() {
			if strings.Contains(m, substr) {
				return
			}
		}
		select {
		case <-r.ch:
		case <-timeout:
			t.Fatalf("no message containing %q; got %q", substr, r.all())
		}
	}
}

type clientOpt func(*paho.ClientOptions)

// connectNode connects a paho client as kp with a fresh token.
func connectNode(t testing.TB, url string, kp *identity.Keypair, opts ...clientOpt) (paho.Client, error) {
	t.Helper()
	po := paho.NewClientOptions().AddBroker(url).SetClientID(kp.ID()).SetAutoReconnect(false).SetProtocolVersion(4).
		SetConnectTimeout(5 * time.Second).SetCredentialsProvider(func() (string, string) {
		tok, err := ctrlmsg.MakeToken(kp, time.Now())
		if err != nil {
			t.Error(err)
		}
		return kp.ID(), tok
	})
	for _, o := range opts {
		o(po)
	}
	c := paho.NewClient(po)
	tok := c.Connect()
	if !tok.WaitTimeout(5 * time.Second) {
		return nil, io.ErrNoProgress
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return c, nil
}

func mustConnect(t testing.TB, url string, kp *identity.Keypair, opts ...clientOpt) paho.Client {
	t.Helper()
	c, err := connectNode(t, url, kp, opts...)
	if err != nil {
		t.Fatalf("connect %s: %v", kp.ID(), err)
	}
	return c
}

func publish(t testing.TB, c paho.Client, topic string, qos byte, retain bool, payload string) error {
	t.Helper()
	tok := c.Publish(topic, qos, retain, payload)
	if !tok.WaitTimeout(5 * time.Second) {
		return io.ErrNoProgress
	}
	return tok.Error()
}

func knownSet(ids ...string) func(string) bool {
	set := map[string]bool{}
	for _, id := range ids {
		set[id] = true
	}
	return func(id string) bool { return set[id] }
}

func TestNodeHealthReachesCastd(t *testing.T) {
	node := newKey(t)
	b := startBroker(t, Options{Known: knownSet(node.ID())})
	rec := newRecorder()
	bus := b.Bus()
	defer bus.Close()
	if err := bus.Subscribe(ctrlmsg.Filter(ctrlmsg.LeafHealth), rec.fn); err != nil {
		t.Fatal(err)
	}
	c := mustConnect(t, "tcp://"+b.Addr(), node)
	payload, err := ctrlmsg.Seal(node, ctrlmsg.Topic(node.ID(), ctrlmsg.LeafHealth), ctrlmsg.KindHealth, ctrlmsg.Health{Load: 0.5}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := publish(t, c, ctrlmsg.Topic(node.ID(), ctrlmsg.LeafHealth), 1, false, string(payload)); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, `"load":0.5`)
	if _, err := ctrlmsg.Open([]byte(strings.SplitN(rec.all()[0], " ", 2)[1]), ctrlmsg.Topic(node.ID(), ctrlmsg.LeafHealth), nil, time.Minute, time.Now(), nil); err != nil {
		t.Fatalf("payload arrived altered: %v", err)
	}

	// castd → node: the node receives commands on its cmd topic.
	got := make(chan string, 1)
	tok := c.Subscribe(ctrlmsg.Topic(node.ID(), ctrlmsg.LeafCmd), 1, func(_ paho.Client, m paho.Message) { got <- string(m.Payload()) })
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal("subscribe own cmd:", tok.Error())
	}
	if err := bus.Publish(ctrlmsg.Topic(node.ID(), ctrlmsg.LeafCmd), []byte("cmd-1"), false); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-got:
		if s != "cmd-1" {
			t.Fatal(s)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("command not delivered")
	}
	if st := b.Stats(); st.Connected != 1 || st.AuthOK != 1 || st.AuthRefused != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestLoginRefused(t *testing.T) {
	node := newKey(t)
	other := newKey(t)
	stranger := newKey(t)
	b := startBroker(t, Options{Known: knownSet(node.ID(), other.ID()), TokenWindow: time.Minute,
		AdminUser: "castd", AdminPassword: "s3cret"})
	url := "tcp://" + b.Addr()

	// A token that worked once may not work again.
	usedTok, _ := ctrlmsg.MakeToken(node, time.Now())
	first := paho.NewClient(paho.NewClientOptions().AddBroker(url).SetClientID(node.ID()).SetUsername(node.ID()).SetPassword(usedTok))
	if tok := first.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal("first use of token:", tok.Error())
	}
	first.Disconnect(0)

	staleTok, _ := ctrlmsg.MakeToken(node, time.Now().Add(-5*time.Minute))
	futureTok, _ := ctrlmsg.MakeToken(node, time.Now().Add(5*time.Minute))
	strangerTok, _ := ctrlmsg.MakeToken(stranger, time.Now())
	otherTok, _ := ctrlmsg.MakeToken(other, time.Now())
	cases := []struct {
		name           string
		client, user   string
		pass           string
		willTopic      string
		wantRefusedInc bool
	}{
		{"garbage token", node.ID(), node.ID(), "hunter2", "", true},
		{"no password", node.ID(), node.ID(), "", "", true},
		{"stale token", node.ID(), node.ID(), staleTok, "", true},
		{"future token", node.ID(), node.ID(), futureTok, "", true},
		{"replayed token", node.ID(), node.ID(), usedTok, "", true},
		{"another node's ID with own token", other.ID(), other.ID(), func() string { t, _ := ctrlmsg.MakeToken(node, time.Now()); return t }(), "", true},
		{"client ID of another node", other.ID(), node.ID(), func() string { t, _ := ctrlmsg.MakeToken(node, time.Now()); return t }(), "", true},
		{"unknown node", stranger.ID(), stranger.ID(), strangerTok, "", true},
		{"will on another node's topic", other.ID(), other.ID(), otherTok, ctrlmsg.Topic(node.ID(), ctrlmsg.LeafStatus), true},
		{"admin bad password", "x", "castd", "wrong", "", true},
		{"anonymous", "anon", "", "", "", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := b.Stats().AuthRefused
			// Protocol pinned: otherwise paho retries a refusal with MQTT 3.1.
			po := paho.NewClientOptions().AddBroker(url).SetClientID(c.client).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second).SetProtocolVersion(4)
			if c.user != "" {
				po.SetUsername(c.user).SetPassword(c.pass)
			}
			if c.willTopic != "" {
				po.SetWill(c.willTopic, "offline", 1, true)
			}
			cl := paho.NewClient(po)
			tok := cl.Connect()
			if !tok.WaitTimeout(5 * time.Second) {
				t.Fatal("connect hung")
			}
			if tok.Error() == nil {
				cl.Disconnect(0)
				t.Fatal("login accepted")
			}
			if got := b.Stats().AuthRefused; got != before+1 {
				t.Fatalf("AuthRefused %d → %d", before, got)
			}
		})
	}
	// And the right ones get in.
	mustConnect(t, url, other, func(o *paho.ClientOptions) {
		o.SetWill(ctrlmsg.Topic(other.ID(), ctrlmsg.LeafStatus), "offline", 1, true)
	})
	admin := paho.NewClient(paho.NewClientOptions().AddBroker(url).SetClientID("ops").SetUsername("castd").SetPassword("s3cret"))
	if tok := admin.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal("admin login:", tok.Error())
	}
	admin.Disconnect(0)
}

func TestACL(t *testing.T) {
	a, victim := newKey(t), newKey(t)
	b := startBroker(t, Options{})
	url := "tcp://" + b.Addr()
	rec := newRecorder()
	bus := b.Bus()
	defer bus.Close()
	if err := bus.Subscribe("blockcast/#", rec.fn); err != nil {
		t.Fatal(err)
	}
	ca := mustConnect(t, url, a)
	cv := mustConnect(t, url, victim)
	victimCmd := make(chan string, 8)
	if tok := cv.Subscribe(ctrlmsg.Topic(victim.ID(), ctrlmsg.LeafCmd), 1, func(_ paho.Client, m paho.Message) {
		victimCmd <- string(m.Payload())
	}); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}

	// Subscriptions to anything but one's own cmd topic are refused.
	for _, filter := range []string{
		ctrlmsg.Topic(victim.ID(), ctrlmsg.LeafCmd),
		ctrlmsg.Filter(ctrlmsg.LeafCmd),
		ctrlmsg.Topic(victim.ID(), ctrlmsg.LeafHealth),
		"#",
		"$SYS/#",
		"$share/g/" + ctrlmsg.Topic(victim.ID(), ctrlmsg.LeafCmd),
	} {
		before := b.Stats().ACLDenied
		tok := ca.Subscribe(filter, 1, func(paho.Client, paho.Message) { t.Errorf("received on %s", filter) })
		if !tok.WaitTimeout(5 * time.Second) {
			t.Fatal("subscribe hung")
		}
		// (paho keys the result by the filter without a $share prefix.)
		res := tok.(*paho.SubscribeToken).Result()
		if len(res) != 1 {
			t.Errorf("subscribe %q: result %v", filter, res)
		}
		for _, q := range res {
			if q != 0x80 {
				t.Errorf("subscribe %q granted qos %#x", filter, q)
			}
		}
		if b.Stats().ACLDenied != before+1 {
			t.Errorf("subscribe %q not counted as denied", filter)
		}
	}

	// Publishing outside one's own subtree, or to one's own cmd topic, is
	// dropped (QoS 0: silently).
	forbidden := []string{
		ctrlmsg.Topic(victim.ID(), ctrlmsg.LeafHealth),
		ctrlmsg.Topic(victim.ID(), ctrlmsg.LeafStatus),
		ctrlmsg.Topic(victim.ID(), ctrlmsg.LeafCmd),
		ctrlmsg.Topic(a.ID(), ctrlmsg.LeafCmd),
		"blockcast/v1/node/" + a.ID() + "/health/deeper",
		"blockcast/v1/other",
	}
	before := b.Stats().ACLDenied
	for _, topic := range forbidden {
		if err := publish(t, ca, topic, 0, false, "forged "+topic); err != nil {
			t.Fatal(err)
		}
	}
	// A permitted publish after them: once castd sees it, it would have
	// seen the forbidden ones (same connection, in order).
	if err := publish(t, ca, ctrlmsg.Topic(a.ID(), ctrlmsg.LeafHealth), 0, false, "barrier"); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, "barrier")
	for _, m := range rec.all() {
		if strings.Contains(m, "forged") {
			t.Errorf("castd received %q", m)
		}
	}
	if got := b.Stats().ACLDenied - before; got != uint64(len(forbidden)) {
		t.Errorf("ACLDenied grew by %d, want %d", got, len(forbidden))
	}
	select {
	case s := <-victimCmd:
		t.Fatalf("victim received a command from another node: %q", s)
	default:
	}

	// A QoS 1 publish to a forbidden topic costs an MQTT 3.1.1 client its
	// connection; still nothing arrives.
	_ = publish(t, ca, ctrlmsg.Topic(victim.ID(), ctrlmsg.LeafHealth), 1, false, "forged qos1")
	deadline := time.Now().Add(5 * time.Second)
	for ca.IsConnectionOpen() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if ca.IsConnectionOpen() {
		t.Error("client still connected after a forbidden QoS 1 publish")
	}
	for _, m := range rec.all() {
		if strings.Contains(m, "forged") {
			t.Errorf("castd received %q", m)
		}
	}
}

func TestRetainOnlyStatus(t *testing.T) {
	node := newKey(t)
	b := startBroker(t, Options{})
	c := mustConnect(t, "tcp://"+b.Addr(), node)
	for _, leaf := range []ctrlmsg.Leaf{ctrlmsg.LeafStatus, ctrlmsg.LeafHealth, ctrlmsg.LeafResult} {
		if err := publish(t, c, ctrlmsg.Topic(node.ID(), leaf), 1, true, "retained "+string(leaf)); err != nil {
			t.Fatal(err)
		}
	}
	rec := newRecorder()
	bus := b.Bus()
	defer bus.Close()
	if err := bus.Subscribe("blockcast/#", rec.fn); err != nil {
		t.Fatal(err)
	}
	got := rec.all()
	if len(got) != 1 || !strings.Contains(got[0], "retained status") {
		t.Fatalf("retained store holds %q, want only the status", got)
	}
}

func TestRateLimit(t *testing.T) {
	node := newKey(t)
	b := startBroker(t, Options{PublishRate: 0.001, PublishBurst: 3})
	rec := newRecorder()
	bus := b.Bus()
	defer bus.Close()
	if err := bus.Subscribe("blockcast/#", rec.fn); err != nil {
		t.Fatal(err)
	}
	c := mustConnect(t, "tcp://"+b.Addr(), node)
	for i := 0; i < 10; i++ {
		// QoS 1 proves the dropped ones are still acknowledged.
		if err := publish(t, c, ctrlmsg.Topic(node.ID(), ctrlmsg.LeafHealth), 1, false, "flood"); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(rec.all()); n != 3 {
		t.Fatalf("castd received %d, want the burst of 3", n)
	}
	if st := b.Stats(); st.RateLimited != 7 {
		t.Fatalf("RateLimited %d, want 7", st.RateLimited)
	}
}

func TestPacketSizeBound(t *testing.T) {
	node := newKey(t)
	b := startBroker(t, Options{MaxPacketSize: 4096})
	rec := newRecorder()
	bus := b.Bus()
	defer bus.Close()
	if err := bus.Subscribe("blockcast/#", rec.fn); err != nil {
		t.Fatal(err)
	}
	c := mustConnect(t, "tcp://"+b.Addr(), node)
	_ = publish(t, c, ctrlmsg.Topic(node.ID(), ctrlmsg.LeafHealth), 0, false, strings.Repeat("x", 8192))
	deadline := time.Now().Add(5 * time.Second)
	for c.IsConnectionOpen() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if c.IsConnectionOpen() {
		t.Fatal("oversized packet did not cost the connection")
	}
	if n := len(rec.all()); n != 0 {
		t.Fatalf("castd received %d messages", n)
	}
}

func TestHandshakeBounds(t *testing.T) {
	b := startBroker(t, Options{MaxHandshakes: 2, HandshakeTimeout: 300 * time.Millisecond})
	var silent []net.Conn
	for i := 0; i < 2; i++ {
		c, err := net.Dial("tcp", b.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		silent = append(silent, c)
	}
	// Wait until both hold their slots (accept runs asynchronously).
	deadline := time.Now().Add(2 * time.Second)
	var extra net.Conn
	for {
		c, err := net.Dial("tcp", b.Addr())
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		_, err = c.Read(make([]byte, 1))
		if err == io.EOF {
			c.Close()
			break // shed
		}
		extra = c
		if time.Now().After(deadline) {
			t.Fatal("third handshake was not shed")
		}
	}
	if extra != nil {
		extra.Close()
	}
	if b.Stats().Shed == 0 {
		t.Fatal("Shed not counted")
	}
	// The silent ones are cut at the handshake timeout.
	for _, c := range silent {
		_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Fatal("silent connection got data")
		} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatal("silent connection was not closed by the broker")
		}
	}
	// Slots are free again: a real node gets in.
	node := newKey(t)
	mustConnect(t, "tcp://"+b.Addr(), node)
}

func TestAdminKeyLogin(t *testing.T) {
	cast := newKey(t)
	b := startBroker(t, Options{AdminKey: cast.Public()})
	url := "tcp://" + b.Addr()
	ext, err := DialExternal(context.Background(), ExternalOptions{
		URL: url, Logger: testLogger(t),
		Credentials: func() (string, string) {
			tok, _ := ctrlmsg.MakeToken(cast, time.Now())
			return cast.ID(), tok
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ext.Close()
	node := newKey(t)
	rec := newRecorder()
	if err := ext.Subscribe(ctrlmsg.Filter(ctrlmsg.LeafHealth), rec.fn); err != nil {
		t.Fatal(err)
	}
	c := mustConnect(t, url, node)
	if err := publish(t, c, ctrlmsg.Topic(node.ID(), ctrlmsg.LeafHealth), 1, false, "hello"); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, "hello")
}

func TestNewRefusesBadOptions(t *testing.T) {
	id := newKey(t).ID()
	for _, o := range []Options{
		{AdminUser: "x"},
		{AdminUser: id, AdminPassword: "p"},
		{TLSCertFile: "a"},
		{TLSCertFile: "/nonexistent", TLSKeyFile: "/nonexistent"},
	} {
		if _, err := New(o); err == nil {
			t.Errorf("New(%+v) accepted", o)
		}
	}
	b := startBroker(t, Options{})
	if _, err := New(Options{Addr: b.Addr(), Logger: testLogger(t)}); err != nil {
		t.Fatal(err) // New does not bind
	}
	b2, _ := New(Options{Addr: b.Addr(), Logger: testLogger(t)})
	if err := b2.Start(context.Background()); err == nil {
		b2.Close()
		t.Fatal("second broker on a busy port started")
	}
	b2.Close()
}

// TestExternalBus runs the external Bus against a real Mosquitto: round
// trip, then a broker restart after which it reconnects and re-subscribes
// by itself.
func TestExternalBus(t *testing.T) {
	m := brokertest.StartMosquitto(t)
	ext, err := DialExternal(context.Background(), ExternalOptions{URL: m.URL(), Logger: testLogger(t), KeepAlive: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer ext.Close()
	rec := newRecorder()
	if err := ext.Subscribe("blockcast/#", rec.fn); err != nil {
		t.Fatal(err)
	}
	if err := ext.Publish("blockcast/v1/x", []byte("one"), false); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, "one")

	m.Stop()
	m.Start()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := ext.Publish("blockcast/v1/x", []byte("two"), false)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no reconnect:", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The subscription may lag the reconnect by a moment; publish until
	// it has been made again.
	deadline = time.Now().Add(10 * time.Second)
	for !strings.Contains(strings.Join(rec.all(), "\n"), "three") {
		if time.Now().After(deadline) {
			t.Fatalf("not re-subscribed; got %q", rec.all())
		}
		_ = ext.Publish("blockcast/v1/x", []byte("three"), false)
		time.Sleep(100 * time.Millisecond)
	}
}

func TestDialExternalErrors(t *testing.T) {
	for _, u := range []string{"http://127.0.0.1:1", "tcp://", "::"} {
		if _, err := DialExternal(context.Background(), ExternalOptions{URL: u}); err == nil {
			t.Errorf("DialExternal(%q) accepted", u)
		}
	}
	// Nothing listens: gives up when ctx ends.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	port := brokertest.FreePort(t)
	if _, err := DialExternal(ctx, ExternalOptions{URL: "tcp://127.0.0.1:" + strconv.Itoa(port), Logger: testLogger(t)}); err == nil {
		t.Fatal("connected to nothing")
	}
}

// TestTLS serves the embedded broker over TLS and connects a node and an
// external Bus (admin login) with tls:// URLs.
func TestTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, pool := writeCert(t, dir)
	b := startBroker(t, Options{TLSCertFile: certFile, TLSKeyFile: keyFile, AdminUser: "castd", AdminPassword: "pw"})
	url := "tls://" + b.Addr()
	conf := &tls.Config{RootCAs: pool, ServerName: "localhost"}
	ext, err := DialExternal(context.Background(), ExternalOptions{URL: url, Username: "castd", Password: "pw", TLSConfig: conf, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer ext.Close()
	rec := newRecorder()
	if err := ext.Subscribe(ctrlmsg.Filter(ctrlmsg.LeafHealth), rec.fn); err != nil {
		t.Fatal(err)
	}
	node := newKey(t)
	c := mustConnect(t, url, node, func(o *paho.ClientOptions) { o.SetTLSConfig(conf) })
	if err := publish(t, c, ctrlmsg.Topic(node.ID(), ctrlmsg.LeafHealth), 1, false, "over tls"); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, "over tls")
	// A plain-TCP client does not get through a TLS listener.
	if _, err := connectNode(t, "tcp://"+b.Addr(), newKey(t)); err == nil {
		t.Fatal("plain TCP accepted on the TLS listener")
	}
}

func writeCert(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:         true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// TestSlowHousekeeping fails when a mochi upgrade moves the tickers that
// slowHousekeeping resets (the broker would still work, at a higher idle
// cost with many clients).
func TestSlowHousekeeping(t *testing.T) {
	srv := mqtt.New(&mqtt.Options{Logger: testLogger(t)})
	if !slowHousekeeping(srv, time.Minute) {
		t.Fatal("mochi's housekeeping tickers not found")
	}
}
