package onchain_test

import (
	"crypto/sha256"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/onchain"
	"github.com/blockcast/beacon/shared/protocol"
	"github.com/blockcast/beacon/shared/soltx"
)

var update = flag.Bool("update", false, "rewrite testdata golden files")

func key(t testing.TB, name string) *identity.Keypair {
	t.Helper()
	seed := sha256.Sum256([]byte(name))
	k, err := identity.FromSeed(seed[:])
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func baseReg(t testing.TB) protocol.Registration {
	return protocol.Registration{
		Role: protocol.RoleBeacon, LANURL: "http://192.168.1.1:8081", Version: "1.2.3",
		Capabilities: []string{"http-cache"},
		Delegation:   &protocol.Delegation{Owner: key(t, "owner").ID(), Message: "bWVzc2FnZQ==", Signature: "5sig"},
	}
}

// TestRegistrationGolden pins the canonical bytes and the memo: they are
// a wire format (castd and anyone reading the chain recompute them).
func TestRegistrationGolden(t *testing.T) {
	node := key(t, "node")
	reg := baseReg(t)
	reg.CIDRs = []string{"203.0.113.0/24", "<&>\"quoted\""}
	got := string(onchain.RegistrationBytes(node.Public(), reg)) + "\n" + onchain.RegistrationMemo(node.Public(), reg) + "\n"
	path := filepath.Join("testdata", "registration-v1.golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Fatalf("canonical registration changed:\n got %s\nwant %s", got, want)
	}
}

// TestRegistrationMemoCovers: what the commitment covers changes the memo;
// what it leaves out (LAN URL, version, the reference itself) does not.
func TestRegistrationMemoCovers(t *testing.T) {
	node := key(t, "node")
	base := onchain.RegistrationMemo(node.Public(), baseReg(t))
	if !strings.HasPrefix(base, onchain.RegistrationPrefix) || len(base) > len(onchain.RegistrationPrefix)+44 {
		t.Fatalf("memo %q", base)
	}
	for _, tc := range []struct {
		name    string
		change  func(*protocol.Registration)
		node    string
		changes bool
	}{
		{"LAN URL", func(r *protocol.Registration) { r.LANURL = "http://10.0.0.2:8081" }, "node", false},
		{"version", func(r *protocol.Registration) { r.Version = "9" }, "node", false},
		{"reference", func(r *protocol.Registration) { r.OnchainSig = "abc" }, "node", false},
		{"node", func(r *protocol.Registration) {}, "other", true},
		{"role", func(r *protocol.Registration) { r.Role = protocol.RoleRelay }, "node", true},
		{"capabilities", func(r *protocol.Registration) { r.Capabilities = nil }, "node", true},
		{"cidrs", func(r *protocol.Registration) { r.CIDRs = []string{"192.0.2.0/24"} }, "node", true},
		{"owner", func(r *protocol.Registration) {
			r.Delegation = &protocol.Delegation{Owner: key(t, "thief").ID(), Signature: "5sig"}
		}, "node", true},
		{"delegation signature", func(r *protocol.Registration) { d := *r.Delegation; d.Signature = "6sig"; r.Delegation = &d }, "node", true},
		{"no delegation", func(r *protocol.Registration) { r.Delegation = nil }, "node", true},
		// Field boundaries cannot be moved: JSON quoting keeps them apart.
		{"capability split", func(r *protocol.Registration) { r.Capabilities = []string{"http", "-cache"} }, "node", true},
	} {
		reg := baseReg(t)
		tc.change(&reg)
		got := onchain.RegistrationMemo(key(t, tc.node).Public(), reg)
		if (got != base) != tc.changes {
			t.Errorf("%s: memo changed=%v, want %v", tc.name, got != base, tc.changes)
		}
	}
}

func TestCastKeyMemo(t *testing.T) {
	k := key(t, "cast")
	if got := onchain.CastKeyMemo(k.Public()); got != "blockcast:cast:v1:"+k.ID() {
		t.Fatal(got)
	}
}

func TestParseSignature(t *testing.T) {
	var sig soltx.Signature
	sig[0] = 7
	if got, err := onchain.ParseSignature(sig.String()); err != nil || got != sig {
		t.Fatalf("%v %v", got, err)
	}
	for _, bad := range []string{"", "0OIl", strings.Repeat("2", 89), identity.EncodeBase58(make([]byte, 63))} {
		if _, err := onchain.ParseSignature(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// TestCheckMemoTx: each way a transaction can fail to record the memo.
func TestCheckMemoTx(t *testing.T) {
	node, other, owner := key(t, "node"), key(t, "other"), key(t, "owner")
	const memo = "blockcast:reg:v1:abc"
	bh := soltx.Hash{1}
	build := func(signer *identity.Keypair, payer identity.PublicKey, text string) *soltx.Transaction {
		tx, err := soltx.NewMemo(signer, payer, bh, []byte(text))
		if err != nil {
			t.Fatal(err)
		}
		return tx
	}
	ownerPaid := build(node, owner.Public(), memo)
	if err := ownerPaid.Sign(owner); err != nil {
		t.Fatal(err)
	}
	// The node pays but the memo instruction names no signer: the memo
	// is not the node's statement.
	ix := soltx.Instruction{ProgramID: soltx.MemoProgramID, Data: []byte(memo)}
	m, _ := soltx.NewMessage(node.Public(), bh, ix)
	unsignedMemo, _ := soltx.New(m)
	unsignedMemo.Sign(node)
	tampered := build(node, node.Public(), memo)
	tampered.Message.Instructions[0].Data = []byte(memo + "x")
	tampered.Message.Instructions[0].Data = tampered.Message.Instructions[0].Data[:len(memo)]
	tampered.Message.RecentBlockhash[0] ^= 1

	for _, tc := range []struct {
		name string
		tx   *soltx.Transaction
		want error
	}{
		{"node pays", build(node, node.Public(), memo), nil},
		{"owner pays", ownerPaid, nil},
		{"wrong signer", build(other, other.Public(), memo), onchain.ErrNotSigned},
		{"wrong memo", build(node, node.Public(), memo+"x"), onchain.ErrMemoMismatch},
		{"memo not signed by the node", unsignedMemo, onchain.ErrMemoMismatch},
		{"tampered", tampered, onchain.ErrNotSigned},
		{"owner signature missing", build(node, owner.Public(), memo), onchain.ErrNotSigned},
	} {
		err := onchain.CheckMemoTx(tc.tx, node.Public(), memo)
		if (tc.want == nil) != (err == nil) || (tc.want != nil && !errors.Is(err, tc.want)) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
}
