package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	solana "github.com/gagliardetto/solana-go"
	"github.com/gagliardetto/solana-go/rpc"

	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/offchain"
	"github.com/blockcast/beacon/shared/onchain"
	"github.com/blockcast/beacon/shared/protocol"
	"github.com/blockcast/beacon/shared/soltx"
	"github.com/blockcast/beacon/test/harness"
	"github.com/blockcast/beacon/test/solana/solanatest"
)

func fundKey(t *testing.T, c *solanatest.Chain, k string) {
	t.Helper()
	if err := c.Call(context.Background(), "requestAirdrop", []any{k, 1_000_000_000}, nil); err != nil {
		t.Fatal(err)
	}
}

// onchainSystem: castd with --solana-rpc --require-onchain whose CAST key
// is funded (so it records itself at start), and a beacon wallet made.
func onchainSystem(t *testing.T, chain *solanatest.Chain) (*harness.System, *identity.Keypair) {
	t.Helper()
	sys := newSystem(t, "--solana-rpc", chain.URL, "--require-onchain")
	cast, err := identity.CreateFile(filepath.Join(sys.Dir, "castd", "cast-key.json"))
	if err != nil {
		t.Fatal(err)
	}
	fundKey(t, chain, cast.ID())
	node, err := identity.CreateFile(filepath.Join(sys.Dir, "beacon", "wallet.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := sys.StartCastd(); err != nil {
		t.Fatal(err)
	}
	if !harness.WaitFor(20*time.Second, func() bool {
		resp, err := http.Get(sys.CastdURL() + protocol.PathCastRecord)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}) {
		t.Fatal("castd did not record its CAST key on chain")
	}
	return sys, node
}

// TestOnchainOwnerPays walks the owner-paid registration with the real
// binaries and the LiteSVM endpoint: the beacon prints the partially
// signed transaction, the owner's wallet (solana-go) signs it, the beacon
// sends it; castd --require-onchain then accepts the beacon, and the
// beacon --require-onchain accepts castd's CAST key after checking its
// record on chain (and `beacon verify-cast` agrees).
func TestOnchainOwnerPays(t *testing.T) {
	chain := solanatest.Start(t)
	sys, node := onchainSystem(t, chain)
	owner, _ := identity.Generate()
	fundKey(t, chain, owner.ID()) // the node key has no lamports
	state := filepath.Join(sys.Dir, "beacon")

	// Without a record castd refuses the beacon, with the reason.
	sys.BeaconArgs = []string{"--solana-rpc", chain.URL, "--require-onchain"}
	if err := sys.StartBeacon(); err != nil {
		t.Fatal(err)
	}
	if !harness.WaitFor(15*time.Second, func() bool {
		return strings.Contains(sys.Beacon.Tail(20000), "requires the registration on chain")
	}) {
		t.Fatalf("beacon not told why:\n%s", sys.Beacon.Tail(4000))
	}
	if err := sys.Beacon.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}

	out, errs, code := beaconCmd(t, nil, "register", "--onchain", "--solana-rpc", chain.URL, "--state-dir", state, "--fee-payer", owner.ID())
	if code != 0 {
		t.Fatalf("step 1: %d %s", code, errs)
	}
	m := regexp.MustCompile(`(?m)^Transaction \(base58\): (\S+)$`).FindStringSubmatch(out)
	if m == nil || !strings.Contains(out, "Absent Signers (Pubkey):\n  "+owner.ID()) {
		t.Fatalf("step 1 printed:\n%s", out)
	}
	// The wallet: solana-go decodes what was printed and signs as owner.
	stx, err := solana.TransactionFromBase58(m[1])
	if err != nil {
		t.Fatal(err)
	}
	opk := solana.PrivateKey(owner.PrivateKey())
	if _, err := stx.PartialSign(func(k solana.PublicKey) *solana.PrivateKey {
		if k == opk.PublicKey() {
			return &opk
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	signed, _ := stx.ToBase64()
	out, errs, code = beaconCmd(t, nil, "register", "--onchain", "--solana-rpc", chain.URL, "--state-dir", state, "--signed-tx", signed)
	if code != 0 {
		t.Fatalf("step 2: %d %s", code, errs)
	}
	sig := strings.TrimSpace(out)
	if sig != stx.Signatures[0].String() {
		t.Fatalf("recorded %q, want the owner's (fee payer's) signature %s", sig, stx.Signatures[0])
	}
	compareOnChain(t, chain.URL, sig, node.Public(), owner.Public())

	if err := sys.StartBeacon(); err != nil {
		t.Fatal(err)
	}
	if err := harness.WaitRegistered(sys.AdminAddr, 20*time.Second); err != nil {
		t.Fatalf("%v\n%s", err, sys.Beacon.Tail(4000))
	}
	if !strings.Contains(sys.Beacon.Tail(50000), "CAST key verified on chain") {
		t.Fatalf("the beacon did not check the CAST key:\n%s", sys.Beacon.Tail(4000))
	}
	out, errs, code = beaconCmd(t, nil, "verify-cast", "--solana-rpc", chain.URL, "--cast-url", sys.CastdURL(), "--state-dir", state)
	if code != 0 || !strings.Contains(out, "is recorded on chain") {
		t.Fatalf("verify-cast: %d %s %s", code, out, errs)
	}
}

// compareOnChain decodes the beacon-built transaction from the chain with
// solana-go and checks it field by field against what it must be.
func compareOnChain(t *testing.T, url, sig string, node, payer identity.PublicKey) {
	t.Helper()
	s := solana.MustSignatureFromBase58(sig)
	zero := uint64(0)
	res, err := rpc.New(url).GetTransaction(context.Background(), s, &rpc.GetTransactionOpts{
		Encoding: solana.EncodingBase64, Commitment: rpc.CommitmentConfirmed, MaxSupportedTransactionVersion: &zero})
	if err != nil {
		t.Fatal(err)
	}
	stx, err := solana.TransactionFromBytes(res.Transaction.GetBinary())
	if err != nil {
		t.Fatal(err)
	}
	ours, err := soltx.Decode(res.Transaction.GetBinary())
	if err != nil {
		t.Fatal(err)
	}
	msg := stx.Message
	want := []solana.PublicKey{solana.PublicKey(payer), solana.PublicKey(node), solana.MemoProgramID}
	if stx.VerifySignatures() != nil || msg.IsVersioned() || len(stx.Signatures) != 2 || stx.Signatures[0] != s ||
		msg.Header.NumRequiredSignatures != 2 || msg.Header.NumReadonlySignedAccounts != 1 || msg.Header.NumReadonlyUnsignedAccounts != 1 ||
		len(msg.AccountKeys) != 3 || msg.RecentBlockhash != solana.Hash(ours.Message.RecentBlockhash) || len(msg.Instructions) != 1 {
		t.Fatalf("solana-go reads %s", stx)
	}
	for i, k := range want {
		if msg.AccountKeys[i] != k || solana.PublicKey(ours.Message.AccountKeys[i]) != k {
			t.Fatalf("account %d: %s, want %s", i, msg.AccountKeys[i], k)
		}
	}
	ix := msg.Instructions[0]
	if ix.ProgramIDIndex != 2 || len(ix.Accounts) != 1 || ix.Accounts[0] != 1 || !strings.HasPrefix(string(ix.Data), onchain.RegistrationPrefix) ||
		!bytes.Equal(ix.Data, ours.Message.Instructions[0].Data) {
		t.Fatalf("memo instruction %+v %q", ix, ix.Data)
	}
}

// TestOnchainRegisterAtStart: with --onchain-register the beacon records
// its registration itself (its key pays) and castd --require-onchain
// accepts it.
func TestOnchainRegisterAtStart(t *testing.T) {
	chain := solanatest.Start(t)
	sys, node := onchainSystem(t, chain)
	fundKey(t, chain, node.ID())
	sys.BeaconArgs = []string{"--solana-rpc", chain.URL, "--onchain-register"}
	if err := sys.StartBeacon(); err != nil {
		t.Fatal(err)
	}
	if err := harness.WaitRegistered(sys.AdminAddr, 20*time.Second); err != nil {
		t.Fatalf("%v\n%s", err, sys.Beacon.Tail(4000))
	}
	raw, err := os.ReadFile(filepath.Join(sys.Dir, "beacon", "onchain-registration.json"))
	if err != nil {
		t.Fatal(err)
	}
	var rec struct{ Signature string }
	json.Unmarshal(raw, &rec)
	compareSelfPaid(t, chain.URL, rec.Signature, node.Public())
}

func compareSelfPaid(t *testing.T, url, sig string, node identity.PublicKey) {
	t.Helper()
	stx, err := rpc.New(url).GetTransaction(context.Background(), solana.MustSignatureFromBase58(sig), &rpc.GetTransactionOpts{
		Encoding: solana.EncodingBase64, Commitment: rpc.CommitmentConfirmed})
	if err != nil {
		t.Fatal(err)
	}
	tx, err := stx.Transaction.GetTransaction()
	if err != nil || tx.VerifySignatures() != nil || len(tx.Message.AccountKeys) != 2 || tx.Message.AccountKeys[0] != solana.PublicKey(node) ||
		tx.Message.AccountKeys[1] != solana.MemoProgramID || tx.Message.Header.NumRequiredSignatures != 1 ||
		len(tx.Message.Instructions) != 1 || tx.Message.Instructions[0].Accounts[0] != 0 {
		t.Fatalf("self-paid transaction %v: %s", err, tx)
	}
}

// TestBeaconRefusesUnrecordedCastKey: a beacon with --require-onchain
// whose pinned CAST key has no record on chain does not start, and says
// why; without a record castd presents, it does not register.
func TestBeaconRefusesUnrecordedCastKey(t *testing.T) {
	chain := solanatest.Start(t)
	sys := newSystem(t) // castd without --solana-rpc: it records nothing
	if err := sys.StartCastd(); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(sys.Dir, "beacon")
	os.MkdirAll(state, 0o700)
	// First contact: castd presents a key with no record.
	sys.BeaconArgs = []string{"--solana-rpc", chain.URL, "--require-onchain"}
	if err := sys.StartBeacon(); err != nil {
		t.Fatal(err)
	}
	if !harness.WaitFor(15*time.Second, func() bool {
		return strings.Contains(sys.Beacon.Tail(20000), "not trusting castd's CAST key")
	}) {
		t.Fatalf("no refusal logged:\n%s", sys.Beacon.Tail(4000))
	}
	if st, _ := harness.BeaconStatus(sys.AdminAddr); st["registered"] == true {
		t.Fatal("registered with an unrecorded CAST key")
	}
	if _, err := os.Stat(filepath.Join(state, "cast-key.txt")); err == nil {
		t.Fatal("pinned an unrecorded CAST key")
	}
	sys.Beacon.Stop(10 * time.Second)

	// A pinned (or configured) key with no record: no start at all.
	impostor, _ := identity.Generate()
	os.WriteFile(filepath.Join(state, "cast-key.txt"), []byte(impostor.ID()+"\n"), 0o600)
	p, err := harness.Start("beacon2", filepath.Join(sys.Dir, "beacon2.log"), bins.Beacon, "run", "--cast-url", sys.CastdURL(),
		"--listen", "127.0.0.1:0", "--admin-listen", "", "--state-dir", state, "--solana-rpc", chain.URL, "--require-onchain")
	if err != nil {
		t.Fatal(err)
	}
	if !harness.WaitFor(15*time.Second, p.Exited) {
		p.Kill()
		t.Fatalf("the beacon started with an unrecorded CAST key:\n%s", p.Tail(4000))
	}
	if tail := p.Tail(4000); !strings.Contains(tail, "refusing CAST key "+impostor.ID()) {
		t.Fatalf("no clear reason:\n%s", tail)
	}
	_, errs, code := beaconCmd(t, nil, "verify-cast", "--solana-rpc", chain.URL, "--cast-url", sys.CastdURL(), "--state-dir", state)
	if code == 0 || !strings.Contains(errs, "NOT verified") {
		t.Fatalf("verify-cast: %d %s", code, errs)
	}
}

// TestOnchainNewOwnerNeedsNewRecord: the record commits to the owner. A
// beacon recorded without an owner that then sends a delegation (a new
// owner claims the node) is refused by castd --require-onchain until the
// new registration is recorded too; the beacon says why.
func TestOnchainNewOwnerNeedsNewRecord(t *testing.T) {
	chain := solanatest.Start(t)
	sys, node := onchainSystem(t, chain)
	fundKey(t, chain, node.ID())
	state := filepath.Join(sys.Dir, "beacon")
	if _, errs, code := beaconCmd(t, nil, "register", "--onchain", "--solana-rpc", chain.URL, "--state-dir", state); code != 0 {
		t.Fatalf("register: %s", errs)
	}
	owner, _ := identity.Generate()
	d, err := offchain.SignDelegation(owner, node.Public(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(d)
	os.WriteFile(filepath.Join(state, "delegation.json"), raw, 0o600)
	sys.BeaconArgs = []string{"--solana-rpc", chain.URL}
	if err := sys.StartBeacon(); err != nil {
		t.Fatal(err)
	}
	if !harness.WaitFor(15*time.Second, func() bool {
		tail := sys.Beacon.Tail(50000)
		return strings.Contains(tail, "is for another registration") && strings.Contains(tail, "requires the registration on chain")
	}) {
		t.Fatalf("no refusal with its reason:\n%s", sys.Beacon.Tail(4000))
	}
	if st, _ := harness.BeaconStatus(sys.AdminAddr); st["registered"] == true {
		t.Fatal("registered with a record of another registration")
	}
	if _, errs, code := beaconCmd(t, nil, "register", "--onchain", "--solana-rpc", chain.URL, "--state-dir", state); code != 0 {
		t.Fatalf("register again: %s", errs)
	}
	if err := harness.WaitRegistered(sys.AdminAddr, 30*time.Second); err != nil {
		t.Fatalf("%v\n%s", err, sys.Beacon.Tail(4000))
	}
	if st, _ := harness.BeaconStatus(sys.AdminAddr); st["owner"] != owner.ID() {
		t.Fatalf("owner %v, want %s", st["owner"], owner.ID())
	}
}
