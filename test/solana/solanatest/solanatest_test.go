package solanatest_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/test/solana/solanatest"
)

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return c
}

func rpcErr(err error) *solanatest.RPCError {
	var re *solanatest.RPCError
	if errors.As(err, &re) {
		return re
	}
	return nil
}

// TestMalformedTransactionsDoNotKill: LiteSVM aborts its process on bytes
// it cannot deserialize, which would take the endpoint down for every test
// sharing it. The front must refuse each with -32602 and keep serving.
func TestMalformedTransactionsDoNotKill(t *testing.T) {
	c := solanatest.Start(t)
	cx := ctx(t)
	sig := make([]byte, 64)
	valid := func(tail ...byte) []byte {
		// One signature, a message with header 1/0/1, two keys, a
		// blockhash and one instruction.
		b := append([]byte{1}, sig...)
		b = append(b, 1, 0, 1, 2)
		b = append(b, bytes.Repeat([]byte{7}, 32)...)
		b = append(b, bytes.Repeat([]byte{9}, 32)...)
		b = append(b, bytes.Repeat([]byte{3}, 32)...)
		b = append(b, 1, 1, 1, 0, 1, 'x')
		return append(b, tail...)
	}
	cases := map[string][]byte{
		"short":                 {1, 2, 3},
		"empty":                 {},
		"signature count lie":   {0xff, 0x7f, 1, 2},
		"non-canonical length":  append([]byte{0x81, 0x00}, valid()[1:]...),
		"truncated":             valid()[:100],
		"trailing bytes":        valid(0, 0, 0),
		"versioned 5":           append(append([]byte{1}, sig...), 0x85, 1, 0, 1),
		"instruction overflows": append(valid()[:len(valid())-1], 0xff, 0xff, 0x03),
	}
	for name, b := range cases {
		for _, enc := range []string{"base64", "base58"} {
			s := base64.StdEncoding.EncodeToString(b)
			if enc == "base58" {
				s = identity.EncodeBase58(b)
			}
			err := c.Call(cx, "sendTransaction", []any{s, map[string]any{"encoding": enc}}, nil)
			if re := rpcErr(err); re == nil || re.Code != -32602 {
				t.Fatalf("%s (%s): %v, want -32602", name, enc, err)
			}
			if c.Exited() {
				t.Fatalf("%s (%s) killed the RPC front: %s", name, enc, c.Stderr())
			}
		}
	}
	var slot uint64
	if err := c.Call(cx, "getSlot", nil, &slot); err != nil || slot == 0 {
		t.Fatalf("front not serving after malformed input: %v", err)
	}
}

func TestRPCErrors(t *testing.T) {
	c := solanatest.Start(t)
	cx := ctx(t)
	for _, tc := range []struct {
		method string
		params []any
		code   int
	}{
		{"noSuchMethod", nil, -32601},
		{"sendTransaction", []any{strings.Repeat("A", 1648), map[string]any{"encoding": "base64"}}, -32602},
		{"sendTransaction", []any{strings.Repeat("2", 1700)}, -32602},
		{"sendTransaction", []any{"AAAA", map[string]any{"encoding": "hex"}}, -32602},
		{"sendTransaction", []any{42}, -32602},
		{"sendTransaction", []any{"AA=A", map[string]any{"encoding": "base64"}}, -32602},
		{"getBalance", []any{"not-a-key"}, -32602},
		{"requestAirdrop", []any{identity.PublicKey{1}.String(), -5}, -32602},
		{"getTransaction", []any{"x", map[string]any{"commitment": "processed"}}, -32602},
		{"getSignatureStatuses", []any{"x"}, -32602},
		{"litesvm_advanceSlots", []any{0}, -32602},
	} {
		err := c.Call(cx, tc.method, tc.params, nil)
		if re := rpcErr(err); re == nil || re.Code != tc.code {
			t.Errorf("%s %v: %v, want code %d", tc.method, tc.params, err, tc.code)
		}
	}
	// Unknown signatures: null status and null transaction, not errors.
	var st struct{ Value []*json.RawMessage }
	if err := c.Call(cx, "getSignatureStatuses", []any{[]string{"1111"}}, &st); err != nil || len(st.Value) != 1 || st.Value[0] != nil {
		t.Errorf("unknown signature status: %v %+v", err, st)
	}
	var tx *json.RawMessage
	if err := c.Call(cx, "getTransaction", []any{"1111", map[string]any{"commitment": "confirmed"}}, &tx); err != nil || tx != nil {
		t.Errorf("unknown transaction: %v %s", err, *tx)
	}

	post := func(body string) (int, string) {
		resp, err := http.Post(c.URL, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := post("{not json"); code != 200 || !strings.Contains(body, `"code":-32700`) {
		t.Errorf("bad JSON: %d %s", code, body)
	}
	if code, body := post(`{"jsonrpc":"1.0","method":"getSlot","id":1}`); !strings.Contains(body, `"code":-32600`) {
		t.Errorf("bad version: %d %s", code, body)
	}
	if code, body := post(`[{"jsonrpc":"2.0","method":"getSlot","id":1},{"jsonrpc":"2.0","method":"getHealth","id":2}]`); code != 200 || !strings.Contains(body, `"result":"ok"`) {
		t.Errorf("batch: %d %s", code, body)
	}
	if code, _ := post(`{"jsonrpc":"2.0","method":"getSlot","params":["` + strings.Repeat("x", 70<<10) + `"],"id":1}`); code != http.StatusRequestEntityTooLarge {
		t.Errorf("oversized body: HTTP %d, want 413", code)
	}
	resp, err := http.Get(c.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET: HTTP %d", resp.StatusCode)
	}
	if c.Exited() {
		t.Fatalf("front exited: %s", c.Stderr())
	}
}

// TestCloseLeavesNoProcess: Close ends the process, and so does the test
// binary's death (the front exits when its stdin closes).
func TestCloseLeavesNoProcess(t *testing.T) {
	c, err := solanatest.Launch(ctx(t))
	if errors.Is(err, solanatest.ErrNoNode) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	pid := c.Pid()
	start := time.Now()
	c.Close()
	if !c.Exited() {
		t.Fatal("still running after Close")
	}
	if time.Since(start) > 4*time.Second {
		t.Errorf("exit on stdin close took %v (it was killed, not closed)", time.Since(start))
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("pid %d still exists: %v", pid, err)
	}
}

func TestNoNodeIsErrNoNode(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	if err := solanatest.Install(ctx(t)); !errors.Is(err, solanatest.ErrNoNode) {
		t.Fatalf("Install without node: %v, want ErrNoNode", err)
	}
}

// FuzzSendTransaction: whatever bytes arrive, the front answers (a
// signature or a JSON-RPC error) and stays up.
func FuzzSendTransaction(f *testing.F) {
	c := solanatest.Start(f)
	f.Add([]byte{1, 2, 3})
	f.Add(append([]byte{1}, make([]byte, 64+3+1+64+32+1)...))
	f.Add([]byte{0x81, 0x00})
	f.Add(append(append([]byte{1}, make([]byte, 64)...), 0x80, 1, 0, 0))
	f.Fuzz(func(t *testing.T, b []byte) {
		cx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var sig string
		err := c.Call(cx, "sendTransaction", []any{base64.StdEncoding.EncodeToString(b), map[string]any{"encoding": "base64"}}, &sig)
		if err != nil && rpcErr(err) == nil {
			t.Fatalf("no JSON-RPC answer: %v", err)
		}
		if c.Exited() {
			t.Fatalf("%x killed the front: %s", b, c.Stderr())
		}
	})
}
