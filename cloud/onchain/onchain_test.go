package onchain_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	solana "github.com/gagliardetto/solana-go"
	"github.com/gagliardetto/solana-go/rpc"

	cloudon "github.com/blockcast/beacon/cloud/onchain"
	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/onchain"
	"github.com/blockcast/beacon/shared/protocol"
	"github.com/blockcast/beacon/shared/solrpc"
	"github.com/blockcast/beacon/shared/soltx"
	"github.com/blockcast/beacon/test/solana/solanatest"
)

func key(t testing.TB, name string) *identity.Keypair {
	t.Helper()
	seed := sha256.Sum256([]byte(name))
	k, err := identity.FromSeed(seed[:])
	if err != nil {
		t.Fatal(err)
	}
	return k
}

type env struct {
	chain *solanatest.Chain
	rpc   *solrpc.Client
	v     *cloudon.Verifier
	ctx   context.Context
}

func setup(t *testing.T, funded ...*identity.Keypair) *env {
	t.Helper()
	c := solanatest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	for _, k := range funded {
		if err := c.Call(ctx, "requestAirdrop", []any{k.ID(), 1_000_000_000}, nil); err != nil {
			t.Fatal(err)
		}
	}
	cl, _ := solrpc.New(c.URL)
	v, err := cloudon.Open(c.URL, filepath.Join(t.TempDir(), "onchain.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	return &env{chain: c, rpc: cl, v: v, ctx: ctx}
}

func (e *env) send(t *testing.T, signer *identity.Keypair, memo string) soltx.Signature {
	t.Helper()
	sig, _, err := onchain.Submit(e.ctx, e.rpc, signer, memo, onchain.SubmitOptions{Poll: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return sig
}

var reg = protocol.Registration{Role: protocol.RoleBeacon, Capabilities: []string{"http-cache"}}

// TestVerifyForgeries: the registration castd is shown must be the one
// the node recorded. Each forgery is refused by the runtime or by the
// verifier with its own reason.
func TestVerifyForgeries(t *testing.T) {
	node, thief := key(t, "node"), key(t, "thief")
	e := setup(t, node, thief)
	memo := onchain.RegistrationMemo(node.Public(), reg)
	good := e.send(t, node, memo)

	relay := reg
	relay.Role = protocol.RoleRelay
	other := e.send(t, node, onchain.RegistrationMemo(node.Public(), relay)) // the node's record of another registration
	stolen := e.send(t, thief, memo)                                         // someone else records the node's memo
	junk := e.send(t, node, "hello")

	// Tampered: a recorded transaction with one byte changed is refused
	// by the runtime (its signature no longer verifies), so it never
	// lands and castd finds nothing.
	bh, _ := e.rpc.LatestBlockhash(e.ctx)
	tx, _ := soltx.NewMemo(node, node.Public(), bh.Hash, []byte(onchain.RegistrationMemo(node.Public(), relay)+"x"))
	tx.Message.Instructions[0].Data[len(tx.Message.Instructions[0].Data)-1] = 'y'
	if _, err := e.rpc.SendTransaction(e.ctx, tx); err == nil {
		t.Fatal("the runtime took a tampered transaction")
	}
	tx.Message.Instructions[0].Data[len(tx.Message.Instructions[0].Data)-1] = 'x'
	if err := tx.Verify(); err != nil {
		t.Fatal(err)
	}
	// Expired: signed with a blockhash that has since expired; the
	// runtime refuses it, so it never lands either.
	stale, _ := soltx.NewMemo(node, node.Public(), bh.Hash, []byte(memo+"stale"))
	if _, err := e.chain.ExpireBlockhash(e.ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := e.rpc.SendTransaction(e.ctx, stale); !errors.Is(err, solrpc.ErrBlockhashNotFound) {
		t.Fatalf("expired blockhash: %v", err)
	}

	for _, tc := range []struct {
		name string
		sig  string
		want error
	}{
		{"valid", good.String(), nil},
		{"replayed: a transaction for another registration", other.String(), cloudon.ErrMemoMismatch},
		{"wrong signer", stolen.String(), cloudon.ErrNotSigned},
		{"wrong memo", junk.String(), cloudon.ErrMemoMismatch},
		{"tampered (refused by the runtime)", tx.ID().String(), cloudon.ErrNotFound},
		{"expired blockhash (refused by the runtime)", stale.ID().String(), cloudon.ErrNotFound},
		{"never sent", soltx.Signature{1, 2, 3}.String(), cloudon.ErrNotFound},
		{"malformed", "not-base58!", cloudon.ErrBadReference},
	} {
		_, err := e.v.Verify(e.ctx, tc.sig, node.Public(), memo)
		if (tc.want == nil) != (err == nil) || (tc.want != nil && !errors.Is(err, tc.want)) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
}

// TestVerifyCaches: a verified record is answered from the bbolt cache
// (the endpoint is gone), and only the exact (signature, signer, memo);
// anything else needs the endpoint, whose absence is ErrUnavailable.
func TestVerifyCaches(t *testing.T) {
	node := key(t, "node")
	e := setup(t, node)
	memo := onchain.RegistrationMemo(node.Public(), reg)
	sig := e.send(t, node, memo)
	if _, err := e.v.Verify(e.ctx, sig.String(), node.Public(), memo); err != nil {
		t.Fatal(err)
	}
	e.chain.Close()
	if _, err := e.v.Verify(e.ctx, sig.String(), node.Public(), memo); err != nil {
		t.Fatalf("cached: %v", err)
	}
	if _, err := e.v.Verify(e.ctx, sig.String(), node.Public(), memo+"x"); !errors.Is(err, cloudon.ErrUnavailable) {
		t.Fatalf("other memo with the endpoint down: %v", err)
	}
}

// TestPublishAndVerify: castd's solana-go publisher records the CAST key;
// the beacon's stdlib client reads and checks the same transaction.
func TestPublishAndVerify(t *testing.T) {
	cast := key(t, "cast")
	e := setup(t, cast)
	memo := onchain.CastKeyMemo(cast.Public())
	sig, slot, err := cloudon.Publish(e.ctx, rpc.New(e.chain.URL), cast, memo, cloudon.PublishOptions{Poll: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	rec, err := onchain.Check(e.ctx, e.rpc, soltx.Signature(sig), cast.Public(), memo)
	if err != nil || rec.Slot != slot {
		t.Fatalf("%+v %v", rec, err)
	}
	// The memo is the text itself, with no length byte before it.
	l, err := e.rpc.Transaction(e.ctx, soltx.Signature(sig))
	if err != nil || string(l.Tx.Message.Memos()[0]) != memo {
		t.Fatalf("memo on chain: %v %q", err, l.Tx.Message.Memos())
	}
	if _, err := e.v.Verify(e.ctx, solana.Signature(sig).String(), cast.Public(), memo); err != nil {
		t.Fatal(err)
	}
	// Unfunded: a clear refusal, not a hang.
	if _, _, err := cloudon.Publish(e.ctx, rpc.New(e.chain.URL), key(t, "poor"), memo, cloudon.PublishOptions{Poll: 10 * time.Millisecond, Timeout: 10 * time.Second}); err == nil {
		t.Fatal("unfunded key published")
	}
}

// TestHugeReply: an RPC endpoint (or whoever sits between castd and a
// plain-http one) answers with an endless transaction. castd stops reading
// at the reply limit instead of buffering it all; solana-go's own client
// reads everything (for up to five minutes).
func TestHugeReply(t *testing.T) {
	var written atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"jsonrpc":"2.0","id":1,"result":{"slot":1,"meta":{"err":null},"transaction":["`)
		chunk := bytes.Repeat([]byte("A"), 64<<10)
		for i := 0; i < 1024; i++ { // 64 MiB
			n, err := w.Write(chunk)
			written.Add(int64(n))
			if err != nil {
				return
			}
		}
		io.WriteString(w, `","base64"]}}`)
	}))
	defer srv.Close()
	v, err := cloudon.Open(srv.URL, filepath.Join(t.TempDir(), "onchain.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	node := key(t, "node")
	_, err = v.Verify(context.Background(), soltx.Signature{1}.String(), node.Public(), "m")
	if !errors.Is(err, cloudon.ErrUnavailable) {
		t.Fatalf("huge reply: %v, want ErrUnavailable", err)
	}
	srv.CloseClientConnections()
	if n := written.Load(); n > 16<<20 {
		t.Fatalf("castd read %d MiB of one reply", n>>20)
	}
}

// TestPublishRetriesExpiredBlockhash: the blockhash castd got expires
// before its transaction arrives; Publish builds it again and it lands.
func TestPublishRetriesExpiredBlockhash(t *testing.T) {
	cast := key(t, "cast")
	e := setup(t, cast)
	var asked atomic.Int32
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		resp, err := http.Post(e.chain.URL, "application/json", bytes.NewReader(body))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		if bytes.Contains(body, []byte(`"getLatestBlockhash"`)) && asked.Add(1) == 1 {
			e.chain.ExpireBlockhash(r.Context())
		}
		w.Write(out)
	}))
	defer proxy.Close()
	memo := onchain.CastKeyMemo(cast.Public())
	sig, _, err := cloudon.Publish(e.ctx, cloudon.NewRPC(proxy.URL), cast, memo, cloudon.PublishOptions{Poll: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if asked.Load() != 2 {
		t.Fatalf("%d blockhashes asked for, want 2", asked.Load())
	}
	if _, err := onchain.Check(e.ctx, e.rpc, soltx.Signature(sig), cast.Public(), memo); err != nil {
		t.Fatal(err)
	}
}
