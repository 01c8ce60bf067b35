package solrpc_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/solrpc"
	"github.com/blockcast/beacon/shared/soltx"
)

func memoTx(t testing.TB) *soltx.Transaction {
	seed := sha256.Sum256([]byte("node"))
	k, err := identity.FromSeed(seed[:])
	if err != nil {
		t.Fatal(err)
	}
	tx, err := soltx.NewMemo(k, k.Public(), soltx.Hash{9}, []byte("blockcast:reg:v1:x"))
	if err != nil {
		t.Fatal(err)
	}
	return tx
}

func txReply(t testing.TB, tx *soltx.Transaction) string {
	b64, err := tx.Base64()
	if err != nil {
		t.Fatal(err)
	}
	return `{"slot":12,"blockTime":1700000000,"transaction":["` + b64 + `","base64"],"meta":{"err":null,"fee":5000}}`
}

// server answers every call with result (a JSON value) or the raw body.
func server(t *testing.T, answer func(method string, id json.RawMessage) string) *solrpc.Client {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Method string          `json:"method"`
			ID     json.RawMessage `json:"id"`
		}
		json.NewDecoder(r.Body).Decode(&req)
		fmt.Fprint(w, answer(req.Method, req.ID))
	}))
	t.Cleanup(srv.Close)
	c, err := solrpc.New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestNewRefusesNonHTTP(t *testing.T) {
	for _, u := range []string{"", "ftp://x", "127.0.0.1:8899"} {
		if _, err := solrpc.New(u); err == nil {
			t.Errorf("%q accepted", u)
		}
	}
}

// TestHostileReplies: an endpoint that lies or breaks gets an error, never
// a transaction we did not ask for.
func TestHostileReplies(t *testing.T) {
	tx := memoTx(t)
	k2, _ := identity.Generate()
	other, _ := soltx.NewMemo(k2, k2.Public(), soltx.Hash{1}, []byte("m"))
	ctx := context.Background()
	for _, tc := range []struct {
		name  string
		reply func(id string) string
		call  func(c *solrpc.Client) error
		want  error
	}{
		{"wrong id", func(id string) string { return `{"jsonrpc":"2.0","id":999,"result":{"value":null}}` },
			func(c *solrpc.Client) error { _, err := c.LatestBlockhash(ctx); return err }, solrpc.ErrBadReply},
		{"not json", func(id string) string { return `<html>` },
			func(c *solrpc.Client) error { _, err := c.BlockHeight(ctx); return err }, solrpc.ErrBadReply},
		{"another transaction", func(id string) string { return `{"jsonrpc":"2.0","id":` + id + `,"result":` + txReply(t, other) + `}` },
			func(c *solrpc.Client) error { _, err := c.Transaction(ctx, tx.ID()); return err }, solrpc.ErrBadReply},
		{"null transaction", func(id string) string { return `{"jsonrpc":"2.0","id":` + id + `,"result":null}` },
			func(c *solrpc.Client) error { _, err := c.Transaction(ctx, tx.ID()); return err }, solrpc.ErrNotFound},
		{"send names another signature", func(id string) string {
			return `{"jsonrpc":"2.0","id":` + id + `,"result":"` + other.ID().String() + `"}`
		},
			func(c *solrpc.Client) error { _, err := c.SendTransaction(ctx, tx); return err }, solrpc.ErrBadReply},
		{"blockhash expired", func(id string) string {
			return `{"jsonrpc":"2.0","id":` + id + `,"error":{"code":-32002,"message":"Transaction simulation failed: Blockhash not found","data":{"err":"BlockhashNotFound"}}}`
		}, func(c *solrpc.Client) error { _, err := c.SendTransaction(ctx, tx); return err }, solrpc.ErrBlockhashNotFound},
		{"too many statuses", func(id string) string { return `{"jsonrpc":"2.0","id":` + id + `,"result":{"value":[null,null]}}` },
			func(c *solrpc.Client) error { _, err := c.SignatureStatuses(ctx, tx.ID()); return err }, solrpc.ErrBadReply},
		{"huge reply", func(id string) string {
			return `{"jsonrpc":"2.0","id":` + id + `,"result":"` + strings.Repeat("x", 2<<20) + `"}`
		},
			func(c *solrpc.Client) error { _, err := c.BlockHeight(ctx); return err }, solrpc.ErrBadReply},
	} {
		c := server(t, func(_ string, id json.RawMessage) string { return tc.reply(string(id)) })
		if err := tc.call(c); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	// An endpoint that is down is ErrUnavailable.
	c, _ := solrpc.New("http://127.0.0.1:1")
	if _, err := c.BlockHeight(ctx); !errors.Is(err, solrpc.ErrUnavailable) {
		t.Errorf("down: %v", err)
	}
	// Nothing incompletely signed is sent.
	tx.Signatures[0] = soltx.Signature{}
	if _, err := c.SendTransaction(ctx, tx); err == nil || errors.Is(err, solrpc.ErrUnavailable) {
		t.Errorf("unsigned sent: %v", err)
	}
}

func TestDecodeStatuses(t *testing.T) {
	raw := `{"context":{"slot":5},"value":[null,{"slot":4,"confirmations":1,"err":null,"status":{"Ok":null},"confirmationStatus":"confirmed"},{"slot":3,"confirmations":null,"err":{"InstructionError":[0,"InvalidArgument"]},"confirmationStatus":"finalized"}]}`
	st, err := solrpc.DecodeStatuses([]byte(raw), 3)
	if err != nil {
		t.Fatal(err)
	}
	if st[0] != nil || st[1].Slot != 4 || !st[1].Confirmed() || st[1].Err != nil || st[2].Err == nil || !st[2].Confirmed() {
		t.Fatalf("%+v %+v %+v", st[0], st[1], st[2])
	}
	for _, bad := range []string{`{"value":[{"confirmationStatus":"confirmed"}]}`, `{"value":[{"slot":1,"confirmationStatus":"rooted"}]}`, `{"value":{}}`, `[]`} {
		if _, err := solrpc.DecodeStatuses([]byte(bad), 1); !errors.Is(err, solrpc.ErrBadReply) {
			t.Errorf("%s: %v", bad, err)
		}
	}
}

func FuzzDecodeStatuses(f *testing.F) {
	f.Add([]byte(`{"context":{"slot":5},"value":[{"slot":4,"confirmations":1,"err":null,"confirmationStatus":"confirmed"}]}`), 1)
	f.Add([]byte(`{"value":[null]}`), 1)
	f.Add([]byte(`{"value":[{"slot":3,"err":{"InstructionError":[0,{"Custom":1}]},"confirmationStatus":"finalized"}]}`), 1)
	f.Add([]byte(`{"value":[]}`), 0)
	f.Fuzz(func(t *testing.T, raw []byte, n int) {
		if n < 0 || n > 256 {
			return
		}
		st, err := solrpc.DecodeStatuses(raw, n)
		if err != nil {
			if !errors.Is(err, solrpc.ErrBadReply) {
				t.Fatalf("error without ErrBadReply: %v", err)
			}
			return
		}
		if len(st) != n {
			t.Fatalf("%d statuses for %d", len(st), n)
		}
	})
}

func FuzzDecodeTransaction(f *testing.F) {
	tx := memoTx(f)
	f.Add([]byte(txReply(f, tx)))
	f.Add([]byte(`null`))
	f.Add([]byte(`{"slot":1,"transaction":["AAAA","base64"],"meta":{"err":null}}`))
	f.Add([]byte(`{"slot":1,"transaction":["` + base64.StdEncoding.EncodeToString([]byte{1, 2}) + `","base58"],"meta":{}}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		l, err := solrpc.DecodeTransaction(raw)
		if err != nil {
			if !errors.Is(err, solrpc.ErrBadReply) && !errors.Is(err, solrpc.ErrNotFound) {
				t.Fatalf("error without a sentinel: %v", err)
			}
			return
		}
		// What decodes is a well-formed transaction that encodes again.
		if _, err := l.Tx.MarshalBinary(); err != nil {
			t.Fatalf("decoded a transaction that does not encode: %v", err)
		}
	})
}

func FuzzDecodeBlockhash(f *testing.F) {
	f.Add([]byte(`{"context":{"slot":1},"value":{"blockhash":"` + soltx.Hash{3}.String() + `","lastValidBlockHeight":151}}`))
	f.Add([]byte(`{"value":{"blockhash":"x","lastValidBlockHeight":1}}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		if _, err := solrpc.DecodeBlockhash(raw); err != nil && !errors.Is(err, solrpc.ErrBadReply) {
			t.Fatalf("error without ErrBadReply: %v", err)
		}
	})
}
