package main

import (
	"strings"
	"testing"

	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/soltx"
)

// TestCompleteTx: the owner's signature comes back as a PUBKEY=SIGNATURE
// pair or as the whole signed transaction; a signature by another key, or
// a "signed" transaction whose message differs, is refused.
func TestCompleteTx(t *testing.T) {
	node, _ := identity.Generate()
	owner, _ := identity.Generate()
	other, _ := identity.Generate()
	build := func() *soltx.Transaction {
		tx, err := soltx.NewMemo(node, owner.Public(), soltx.Hash{7}, []byte("blockcast:reg:v1:x"))
		if err != nil {
			t.Fatal(err)
		}
		return tx
	}
	msg, _ := build().Message.MarshalBinary()
	pair := owner.ID() + "=" + identity.EncodeBase58(owner.Sign(msg))
	if tx := build(); completeTx(tx, pair, "") != nil || tx.Verify() != nil {
		t.Fatal("owner's pair refused")
	}
	if err := completeTx(build(), other.ID()+"="+identity.EncodeBase58(other.Sign(msg)), ""); err == nil {
		t.Fatal("another key's pair accepted")
	}
	if err := completeTx(build(), owner.ID()+"="+identity.EncodeBase58(other.Sign(msg)), ""); err == nil {
		t.Fatal("a wrong signature accepted")
	}
	signed := build()
	signed.Sign(owner)
	b58, _ := signed.Base58()
	if tx := build(); completeTx(tx, "", b58) != nil || tx.Verify() != nil {
		t.Fatal("wallet-signed transaction refused")
	}
	// The wallet changed the memo and signed that: not the node's message.
	evil, _ := soltx.NewMemo(node, owner.Public(), soltx.Hash{7}, []byte("blockcast:reg:v1:y"))
	evil.Sign(owner)
	b64, _ := evil.Base64()
	if err := completeTx(build(), "", b64); err == nil {
		t.Fatal("a different message accepted")
	}
	if err := completeTx(build(), "", "not a transaction"); err == nil {
		t.Fatal("garbage accepted")
	}
	if err := completeTx(build(), "", ""); err == nil {
		t.Fatal("incomplete transaction accepted")
	}
}

func TestRegisterUsage(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"register"}, 2, "--onchain"},
		{[]string{"register", "--onchain"}, 2, "--solana-rpc URL is required"},
		{[]string{"register", "--onchain", "--solana-rpc", "127.0.0.1:8899"}, 2, "http://"},
		{[]string{"register", "--onchain", "--solana-rpc", "http://127.0.0.1:1", "--state-dir", dir}, 1, "wallet.json"},
		{[]string{"verify-cast", "--solana-rpc", "http://127.0.0.1:1"}, 2, "--cast-sig SIG or --cast-url URL"},
		{[]string{"verify-cast", "--solana-rpc", "http://127.0.0.1:1", "--cast-sig", "x", "--state-dir", dir}, 1, "no pinned CAST key"},
	} {
		var out, errb strings.Builder
		if code := run(tc.args, &out, &errb); code != tc.code || !strings.Contains(errb.String(), tc.want) {
			t.Errorf("%q: %d %q, want %d and %q", tc.args, code, errb.String(), tc.code, tc.want)
		}
	}
}
