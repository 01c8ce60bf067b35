package castd

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/onchain"
	"github.com/blockcast/beacon/shared/protocol"
	"github.com/blockcast/beacon/shared/signedreq"
	"github.com/blockcast/beacon/shared/solrpc"
	"github.com/blockcast/beacon/test/harness"
	"github.com/blockcast/beacon/test/solana/solanatest"
)

// registerReg POSTs reg signed by kp and returns the status, the
// HeaderError and the message.
func registerReg(t *testing.T, base string, kp *identity.Keypair, reg protocol.Registration) (int, string, string) {
	t.Helper()
	body, _ := json.Marshal(reg)
	req, _ := http.NewRequest(http.MethodPost, base+protocol.PathRegister, bytes.NewReader(body))
	if err := signedreq.Sign(req, body, kp, time.Now()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e protocol.Error
	json.NewDecoder(resp.Body).Decode(&e)
	return resp.StatusCode, resp.Header.Get(protocol.HeaderError), e.Error
}

func airdrop(t *testing.T, c *solanatest.Chain, k identity.PublicKey) {
	t.Helper()
	if err := c.Call(context.Background(), "requestAirdrop", []any{k.String(), 1_000_000_000}, nil); err != nil {
		t.Fatal(err)
	}
}

func record(t *testing.T, url string, k *identity.Keypair, memo string) string {
	t.Helper()
	cl, _ := solrpc.New(url)
	sig, _, err := onchain.Submit(context.Background(), cl, k, memo, onchain.SubmitOptions{Poll: 10 * time.Millisecond, Timeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return sig.String()
}

// TestRequireOnchain: with --require-onchain castd registers a node only
// when the registration it is shown is the one the node recorded on
// chain; every other case is refused with its reason (HeaderError) and
// logged. A node that re-registers with new registration bytes (another
// role, another owner) needs a new transaction.
func TestRequireOnchain(t *testing.T) {
	chain := solanatest.Start(t)
	logs := &harness.LineBuffer{}
	_, srv := newTestServer(t, func(o *Options) {
		o.SolanaRPC, o.RequireOnchain = chain.URL, true
		o.Logger = slog.New(slog.NewTextHandler(logs, nil))
	})
	node, _ := identity.Generate()
	thief, _ := identity.Generate()
	airdrop(t, chain, node.Public())
	airdrop(t, chain, thief.Public())
	reg := protocol.Registration{Role: protocol.RoleBeacon, LANURL: "http://192.168.1.1:8081", Version: "v", Capabilities: []string{"http-cache"}}
	memo := onchain.RegistrationMemo(node.Public(), reg)

	if st, code, msg := registerReg(t, srv.URL, node, reg); st != http.StatusForbidden || code != protocol.ErrOnchainRequired || !strings.Contains(msg, memo) {
		t.Fatalf("no reference: %d %q %s", st, code, msg)
	}
	withSig := func(r protocol.Registration, sig string) protocol.Registration { r.OnchainSig = sig; return r }
	sig := record(t, chain.URL, node, memo)
	if st, code, msg := registerReg(t, srv.URL, node, withSig(reg, sig)); st != http.StatusOK {
		t.Fatalf("valid: %d %q %s", st, code, msg)
	}
	// The LAN URL and version are not committed: a new address needs no
	// new transaction.
	moved := withSig(reg, sig)
	moved.LANURL, moved.Version = "http://192.168.1.7:8081", "v2"
	if st, code, msg := registerReg(t, srv.URL, node, moved); st != http.StatusOK {
		t.Fatalf("moved: %d %q %s", st, code, msg)
	}
	// The role is: becoming a relay with the beacon's transaction is a
	// replay of another registration's record.
	relay := withSig(reg, sig)
	relay.Role, relay.LANURL = protocol.RoleRelay, ""
	if st, code, msg := registerReg(t, srv.URL, node, relay); st != http.StatusForbidden || code != protocol.ErrOnchainRefused || !strings.Contains(msg, "memo does not match") {
		t.Fatalf("replayed for another registration: %d %q %s", st, code, msg)
	}
	// Another node presenting the first node's transaction.
	if st, code, msg := registerReg(t, srv.URL, thief, withSig(reg, sig)); st != http.StatusForbidden || code != protocol.ErrOnchainRefused {
		t.Fatalf("thief with the node's transaction: %d %q %s", st, code, msg)
	}
	// The thief records the node's memo itself: signed by the wrong key.
	stolen := record(t, chain.URL, thief, memo)
	if st, code, msg := registerReg(t, srv.URL, node, withSig(reg, stolen)); st != http.StatusForbidden || code != protocol.ErrOnchainRefused || !strings.Contains(msg, "not signed by the node") {
		t.Fatalf("wrong signer: %d %q %s", st, code, msg)
	}
	if st, code, _ := registerReg(t, srv.URL, node, withSig(reg, "0OIl")); st != http.StatusBadRequest || code != protocol.ErrOnchainRefused {
		t.Fatalf("malformed reference: %d %q", st, code)
	}
	if !strings.Contains(logs.String(), "on-chain registration refused") {
		t.Fatalf("refusals not logged:\n%s", logs)
	}
	// The endpoint gone: a registration castd cannot check is 503, to be
	// retried, not refused for good.
	newReg := withSig(reg, sig)
	newReg.Capabilities = []string{"http-cache", "amt"}
	chain.Close()
	if st, code, _ := registerReg(t, srv.URL, node, newReg); st != http.StatusServiceUnavailable || code != protocol.ErrOnchainUnavailable {
		t.Fatalf("endpoint down: %d %q", st, code)
	}
	// What was verified is cached: the node re-registers without the endpoint.
	if st, code, msg := registerReg(t, srv.URL, node, withSig(reg, sig)); st != http.StatusOK {
		t.Fatalf("cached: %d %q %s", st, code, msg)
	}
}

// TestOnchainOptional: with --solana-rpc but not --require-onchain, a node
// without a reference registers, and one with a bad reference is refused.
func TestOnchainOptional(t *testing.T) {
	chain := solanatest.Start(t)
	_, srv := newTestServer(t, func(o *Options) { o.SolanaRPC = chain.URL })
	node, _ := identity.Generate()
	reg := protocol.Registration{Role: protocol.RoleBeacon, LANURL: "http://192.168.1.1:8081"}
	if st, _, msg := registerReg(t, srv.URL, node, reg); st != http.StatusOK {
		t.Fatalf("no reference: %d %s", st, msg)
	}
	reg.OnchainSig = identity.EncodeBase58(make([]byte, 64))
	if st, code, _ := registerReg(t, srv.URL, node, reg); st != http.StatusForbidden || code != protocol.ErrOnchainRefused {
		t.Fatalf("bad reference: %d %q", st, code)
	}
}

func TestOnchainOptionsRefused(t *testing.T) {
	for _, o := range []Options{
		{RequireOnchain: true},
		{SolanaRPC: "127.0.0.1:8899"},
	} {
		o.StateDir, o.Origin = t.TempDir(), "http://127.0.0.1:1"
		if _, err := New(o); err == nil {
			t.Errorf("%+v accepted", o)
		}
	}
}

// TestCastKeyRecord: castd records its CAST key at start and serves where;
// the record checks on chain with the beacon's client; a restart verifies
// the stored record instead of paying for another.
func TestCastKeyRecord(t *testing.T) {
	chain := solanatest.Start(t)
	dir := t.TempDir()
	key, err := identity.CreateFile(filepath.Join(dir, "cast-key.json"))
	if err != nil {
		t.Fatal(err)
	}
	airdrop(t, chain, key.Public())
	start := func() (string, func()) {
		s, err := New(Options{StateDir: dir, Origin: "http://127.0.0.1:1", SolanaRPC: chain.URL, OnchainPoll: 10 * time.Millisecond,
			AMTListen: "", Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- s.Serve(ctx, ln) }()
		return "http://" + ln.Addr().String(), func() { cancel(); <-done; s.Close() }
	}
	fetch := func(base string) (protocol.CastRecord, bool) {
		resp, err := http.Get(base + protocol.PathCastRecord)
		if err != nil {
			return protocol.CastRecord{}, false
		}
		defer resp.Body.Close()
		var rec protocol.CastRecord
		return rec, resp.StatusCode == http.StatusOK && json.NewDecoder(resp.Body).Decode(&rec) == nil
	}
	wait := func(base string) protocol.CastRecord {
		deadline := time.Now().Add(20 * time.Second)
		for time.Now().Before(deadline) {
			if rec, ok := fetch(base); ok {
				return rec
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatal("no CAST key record served")
		return protocol.CastRecord{}
	}
	base, stop := start()
	rec := wait(base)
	stop()
	cl, _ := solrpc.New(chain.URL)
	sig, err := onchain.ParseSignature(rec.Signature)
	if err != nil {
		t.Fatal(err)
	}
	if rec.CastKey != key.ID() || rec.Memo != onchain.CastKeyMemo(key.Public()) {
		t.Fatalf("record %+v", rec)
	}
	if _, err := onchain.Check(context.Background(), cl, sig, key.Public(), rec.Memo); err != nil {
		t.Fatal(err)
	}
	base, stop = start()
	defer stop()
	if again := wait(base); again.Signature != rec.Signature {
		t.Fatalf("restart published again: %s, was %s", again.Signature, rec.Signature)
	}
}

// TestOnchainLookupFlood: a registered node (which the registration limit
// lets through) re-registers with made-up transaction references as fast
// as it can. Each unverified reference costs castd a call to its RPC
// endpoint; they are limited per address, so the flood costs at most the
// burst, while the node's verified registration still goes through (from
// the cache). The old castd made one RPC call per request.
func TestOnchainLookupFlood(t *testing.T) {
	chain := solanatest.Start(t)
	var calls atomic.Int64
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if bytes.Contains(body, []byte(`"getTransaction"`)) {
			calls.Add(1)
		}
		resp, err := http.Post(chain.URL, "application/json", bytes.NewReader(body))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		io.Copy(w, resp.Body)
	}))
	defer proxy.Close()
	_, srv := newTestServer(t, func(o *Options) { o.SolanaRPC, o.RequireOnchain = proxy.URL, true })
	node, _ := identity.Generate()
	airdrop(t, chain, node.Public())
	reg := protocol.Registration{Role: protocol.RoleBeacon, LANURL: "http://192.168.1.1:8081"}
	good := reg
	good.OnchainSig = record(t, chain.URL, node, onchain.RegistrationMemo(node.Public(), reg))
	if st, code, msg := registerReg(t, srv.URL, node, good); st != http.StatusOK {
		t.Fatalf("valid: %d %q %s", st, code, msg)
	}
	base := calls.Load()
	const n = 60
	limited := 0
	for i := 0; i < n; i++ {
		bad := reg
		var sig [64]byte
		sig[0], sig[1] = byte(i), 1
		bad.OnchainSig = identity.EncodeBase58(sig[:])
		st, code, _ := registerReg(t, srv.URL, node, bad)
		switch {
		case st == http.StatusTooManyRequests && code == protocol.ErrOnchainLimited:
			limited++
		case st == http.StatusForbidden && code == protocol.ErrOnchainRefused:
		default:
			t.Fatalf("made-up reference %d: %d %q", i, st, code)
		}
	}
	if got := calls.Load() - base; got > lookupBurst+1 {
		t.Fatalf("%d made-up references cost %d RPC calls, want at most %d", n, got, lookupBurst+1)
	}
	if limited < n-lookupBurst-1 {
		t.Fatalf("only %d of %d limited", limited, n)
	}
	if st, code, msg := registerReg(t, srv.URL, node, good); st != http.StatusOK {
		t.Fatalf("verified registration during the flood: %d %q %s", st, code, msg)
	}
}
