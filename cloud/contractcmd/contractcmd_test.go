package contractcmd

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/blockcast/beacon/cloud/contracts"
	cloudon "github.com/blockcast/beacon/cloud/onchain"
	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/offchain"
	"github.com/blockcast/beacon/shared/onchain"
	"github.com/blockcast/beacon/test/solana/solanatest"
)

// TestVerify runs `castd contracts verify` against the LiteSVM front: the
// anchored contract passes; a tampered one, a memo signed by another key,
// and the wrong CAST key are refused.
func TestVerify(t *testing.T) {
	ch := solanatest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cast, _ := identity.Generate()
	other, _ := identity.Generate()
	for _, k := range []*identity.Keypair{cast, other} {
		if err := ch.Call(ctx, "requestAirdrop", []any{k.ID(), 1_000_000_000}, nil); err != nil {
			t.Fatal(err)
		}
	}
	owner, _ := identity.Generate()
	node, _ := identity.Generate()
	now := time.Now().UTC().Truncate(time.Second)
	o := contracts.Offer{Owner: owner.Public(), Node: node.Public(), Cast: cast.Public(), BandwidthMbps: 10, AvailabilityHours: 20,
		StorageGB: 1, Start: now, End: now.Add(24 * time.Hour)}
	m, s, _ := offchain.SignText(owner, o.Text())
	c, err := contracts.Accept(cast, owner.Public(), o.Text(), m, s, now)
	if err != nil {
		t.Fatal(err)
	}
	memo, _ := onchain.ContractMemo(c.ID)
	pub := func(k *identity.Keypair) string {
		sig, _, err := cloudon.Publish(ctx, cloudon.NewRPC(ch.URL), k, memo, cloudon.PublishOptions{Poll: 20 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		return sig.String()
	}
	good, forged := pub(cast), pub(other)
	dir := t.TempDir()
	write := func(name string, c contracts.Contract, sig string) string {
		v := map[string]any{"contract": c, "evaluation": map[string]any{}, "anchor": map[string]any{"memo": memo, "signature": sig, "confirmed": true}}
		b, _ := json.Marshal(v)
		p := filepath.Join(dir, name)
		os.WriteFile(p, b, 0o600)
		return p
	}
	tampered := c
	tampered.Offer.StorageGB = 1000
	run := func(args ...string) (int, string) {
		var out, errb bytes.Buffer
		code := Run(append([]string{"verify", "--solana-rpc", ch.URL}, args...), &out, &errb, func(string) string { return "" })
		return code, out.String() + errb.String()
	}
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"anchored", []string{"--cast-key", cast.ID(), "--file", write("good.json", c, good)}, ExitOK, "anchored: transaction " + good},
		{"tampered", []string{"--cast-key", cast.ID(), "--file", write("tampered.json", tampered, good)}, ExitFail, "does not verify"},
		{"other key's memo", []string{"--cast-key", cast.ID(), "--file", write("forged.json", c, forged)}, ExitFail, "not signed by the key"},
		{"other key's memo by flag", []string{"--cast-key", cast.ID(), "--file", write("good2.json", c, good), "--signature", forged}, ExitFail, "not signed by the key"},
		{"wrong CAST key", []string{"--cast-key", other.ID(), "--file", write("good3.json", c, good)}, ExitFail, "not by the CAST key"},
		{"not anchored", []string{"--cast-key", cast.ID(), "--file", write("none.json", c, "")}, ExitFail, "not anchored"},
		{"no cast key", []string{"--file", write("good4.json", c, good)}, ExitUsage, "--cast-key"},
		{"not a view", []string{"--cast-key", cast.ID(), "--file", filepath.Join(dir, "missing.json")}, ExitFail, "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out := run(tc.args...)
			if code != tc.code || !strings.Contains(out, tc.want) {
				t.Fatalf("exit %d, want %d; output %q, want %q", code, tc.code, out, tc.want)
			}
		})
	}
}

func FuzzDecodeView(f *testing.F) {
	b, _ := os.ReadFile("../contracts/testdata/contract.json")
	f.Add([]byte(`{"contract":` + string(b) + `,"anchor":{"signature":"x"}}`))
	f.Add([]byte(`{"contract":{"id":"a"}}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"contract":{"id":"a"}} {}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := DecodeView(b)
		if err != nil {
			return
		}
		if v.Contract.ID == "" || len(b) > MaxView {
			t.Fatalf("accepted %q", b)
		}
		// What decodes is only checked, never trusted: CheckAnchor refuses
		// it unless it verifies (no endpoint needed for that).
		_ = v.Contract.Verify()
	})
}
