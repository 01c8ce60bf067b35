package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/blockcast/beacon/cloud/broker/brokertest"
	"github.com/blockcast/beacon/cloud/contracts"
	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/offchain"
	"github.com/blockcast/beacon/shared/onchain"
	"github.com/blockcast/beacon/shared/protocol"
	"github.com/blockcast/beacon/shared/receipt"
	"github.com/blockcast/beacon/shared/solrpc"
	"github.com/blockcast/beacon/test/harness"
	"github.com/blockcast/beacon/test/solana/solanatest"
)

func castdCmd(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(bins.Castd, args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("castd %v: %v", args, err)
	}
	return o.String(), e.String(), code
}

// TestWholeDay compresses a day of the network into one run, against the
// LiteSVM endpoint and Mosquitto: the beacon records its registration on
// chain and castd --require-onchain accepts it; end users are redirected
// to it; receipts flow through a broker outage and a castd restart with
// none lost; the day (8 s long here) closes and castd anchors its root;
// `castd receipts prove` gives a receipt's proof and `beacon receipts
// check` proves it against the chain; and forged proofs (another receipt,
// a root not anchored, an anchor by another key) are refused.
func TestWholeDay(t *testing.T) {
	_, err := os.Stat(brokertest.MosquittoPath)
	need(t, "mosquitto", err)
	chain := solanatest.Start(t)
	m := brokertest.StartMosquitto(t)
	sys := newSystem(t, "--admin-token", "op-secret", "--mqtt-listen", "", "--mqtt-broker", "tcp://"+m.Addr(),
		"--solana-rpc", chain.URL, "--require-onchain", "--receipt-anchor", "daily", "--receipt-day", "8s", "--history-interval", "200ms")
	cast, err := identity.CreateFile(filepath.Join(sys.Dir, "castd", "cast-key.json"))
	if err != nil {
		t.Fatal(err)
	}
	node, err := identity.CreateFile(filepath.Join(sys.Dir, "beacon", "wallet.json"))
	if err != nil {
		t.Fatal(err)
	}
	fundKey(t, chain, cast.ID())
	fundKey(t, chain, node.ID())
	// The node's owner delegates to it (beacon delegate), so that it can
	// offer the node's capacity.
	state := filepath.Join(sys.Dir, "beacon")
	owner, _ := identity.Generate()
	if _, errs, code := beaconCmd(t, nil, "delegate", "--state-dir", state, "--owner", owner.ID()); code != 0 {
		t.Fatal(errs)
	}
	text, err := os.ReadFile(filepath.Join(state, "delegation-request.txt"))
	if err != nil {
		t.Fatal(err)
	}
	_, dsig, _ := offchain.SignText(owner, string(text))
	if _, errs, code := beaconCmd(t, nil, "delegate", "--state-dir", state, "--signature", dsig); code != 0 {
		t.Fatal(errs)
	}
	if err := sys.StartCastd(); err != nil {
		t.Fatal(err)
	}

	// Morning: registration on chain.
	sys.BeaconArgs = append([]string{"--solana-rpc", chain.URL, "--onchain-register", "--require-onchain"}, receiptArgs...)
	if err := sys.StartBeacon(); err != nil {
		t.Fatal(err)
	}
	if err := harness.WaitRegistered(sys.AdminAddr, 30*time.Second); err != nil {
		t.Fatalf("%v\n%s\n%s", err, sys.Beacon.Tail(4000), sys.Castd.Tail(4000))
	}
	raw, err := os.ReadFile(filepath.Join(sys.Dir, "beacon", "onchain-registration.json"))
	if err != nil {
		t.Fatal(err)
	}
	var reg struct{ Signature string }
	json.Unmarshal(raw, &reg)
	compareSelfPaid(t, chain.URL, reg.Signature, node.Public())

	// The owner signs in with the wallet and offers the node's capacity
	// for the day; the CAST countersigns it (a contract).
	tok := apiSignIn(t, sys.CastdURL(), owner)
	start := time.Now().UTC().Truncate(time.Second)
	offer := contracts.Offer{Owner: owner.Public(), Node: node.Public(), Cast: cast.Public(), BandwidthMbps: 1, AvailabilityHours: 1, StorageGB: 1,
		Start: start, End: start.Add(2 * time.Hour)}
	omsg, osig, _ := offchain.SignText(owner, offer.Text())
	st, body := apiCall(t, http.MethodPost, sys.CastdURL()+protocol.PathContracts, tok, protocol.CapacityOffer{Owner: owner.ID(), Text: offer.Text(), Message: omsg, Signature: osig})
	if st != http.StatusCreated {
		t.Fatalf("offer: %d %s", st, body)
	}
	var contract contracts.Contract
	json.Unmarshal(body, &contract)

	// Traffic through the router, a broker outage, a castd restart:
	// every request ends on a receipt castd accepted, once.
	receiptsAcrossOutage(t, sys, m.Stop, func() {
		m.Start()
		if err := sys.Castd.Stop(10 * time.Second); err != nil {
			t.Fatal(err)
		}
		if err := sys.StartCastd(); err != nil {
			t.Fatal(err)
		}
	}, false)

	// The contract, measured over the day so far (outage and restart
	// included): online more than half of it, serving.
	time.Sleep(1200 * time.Millisecond) // a history sample after the last report
	upTo := time.Now().UTC().Truncate(time.Second)
	time.Sleep(time.Second)
	tok = apiSignIn(t, sys.CastdURL(), owner) // sessions do not outlive castd
	st, body = apiCall(t, http.MethodGet, sys.CastdURL()+protocol.PathContracts+"/"+contract.ID+"?from="+start.Format(time.RFC3339)+"&to="+upTo.Format(time.RFC3339), tok, nil)
	var view struct {
		Evaluation contracts.Evaluation `json:"evaluation"`
	}
	if st != http.StatusOK || json.Unmarshal(body, &view) != nil || view.Evaluation.Verdict != contracts.VerdictMet {
		t.Fatalf("contract: %d %s", st, body)
	}

	// The contract is anchored on chain by the CAST key (once, across the
	// restart), and anyone checks it with `castd contracts verify`; a
	// tampered copy is refused.
	var anchored struct {
		Anchor struct {
			Memo      string `json:"memo"`
			Signature string `json:"signature"`
			Confirmed bool   `json:"confirmed"`
		} `json:"anchor"`
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		st, body = apiCall(t, http.MethodGet, sys.CastdURL()+protocol.PathContracts+"/"+contract.ID, tok, nil)
		if st == http.StatusOK && json.Unmarshal(body, &anchored) == nil && anchored.Anchor.Confirmed {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("contract not anchored: %d %s\n%s", st, body, sys.Castd.Tail(3000))
		}
	}
	if anchored.Anchor.Memo != onchain.ContractPrefix+contract.ID {
		t.Fatalf("anchor memo %q", anchored.Anchor.Memo)
	}
	verify := func(args ...string) (string, int) {
		out, errs, code := castdCmd(t, append([]string{"contracts", "verify", "--solana-rpc", chain.URL, "--cast-key", cast.ID()}, args...)...)
		return out + errs, code
	}
	if out, code := verify("--url", sys.CastdURL(), "--token", tok, contract.ID); code != 0 || !strings.Contains(out, anchored.Anchor.Signature) {
		t.Fatalf("contracts verify: exit %d: %s", code, out)
	}
	var saved map[string]json.RawMessage
	json.Unmarshal(body, &saved)
	saved["contract"] = bytes.Replace(saved["contract"], []byte(`"availability_hours": 1`), []byte(`"availability_hours": 2`), 1)
	saved["contract"] = bytes.Replace(saved["contract"], []byte(`"availability_hours":1`), []byte(`"availability_hours":2`), 1)
	tamperedFile := filepath.Join(t.TempDir(), "tampered.json")
	raw, _ = json.Marshal(saved)
	os.WriteFile(tamperedFile, raw, 0o600)
	if out, code := verify("--file", tamperedFile); code != 1 || !strings.Contains(out, "REFUSED") || !strings.Contains(out, "does not verify") {
		t.Fatalf("tampered contract: exit %d: %s", code, out)
	}

	// Evening: the day closes and its root is anchored; the first
	// receipt's proof is given by castd and checked by the beacon.
	prove := func(seq uint64) (string, string, int) {
		return castdCmd(t, "receipts", "prove", "--url", sys.CastdURL(), "--admin-token", "op-secret",
			"--node", node.ID(), "--seq", strconv.FormatUint(seq, 10))
	}
	// Receipts are numbered from the beacon's clock: take castd's last
	// and the one before it.
	last := uint64(num(receiptsOf(t, sys, node.ID()), "last_seq"))
	var proofJSON string
	if !harness.WaitFor(30*time.Second, func() bool {
		out, _, code := prove(last)
		proofJSON = out
		return code == 0
	}) {
		_, errs, _ := prove(last)
		t.Fatalf("no anchored proof: %s\n%s", errs, sys.Castd.Tail(4000))
	}
	// The proof can be served a moment before the log line is written.
	if !harness.WaitFor(5*time.Second, func() bool { return strings.Contains(sys.Castd.Tail(200000), "daily anchor published") }) {
		t.Fatalf("castd did not say it anchored:\n%s", sys.Castd.Tail(4000))
	}
	dir := t.TempDir()
	check := func(name string, p *onchain.DayProof, key string) (string, string, int) {
		t.Helper()
		b, _ := json.Marshal(p)
		f := filepath.Join(dir, name+".json")
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return beaconCmd(t, nil, "receipts", "check", f, "--solana-rpc", chain.URL, "--cast-key", key)
	}
	good, err := onchain.DecodeDayProof([]byte(proofJSON))
	if err != nil {
		t.Fatal(err)
	}
	out, errs, code := check("good", good, cast.ID())
	if code != 0 || !strings.Contains(out, "receipt "+strconv.FormatUint(last, 10)+" of node "+node.ID()) {
		t.Fatalf("beacon receipts check: %d %s %s", code, out, errs)
	}

	// Forgeries.
	fresh := func() *onchain.DayProof {
		p, _ := onchain.DecodeDayProof([]byte(proofJSON))
		return p
	}
	var other *onchain.DayProof
	for seq := last - 1; seq > last-10 && other == nil; seq-- {
		if o, _, code := prove(seq); code == 0 {
			other, _ = onchain.DecodeDayProof([]byte(o))
		}
	}
	if other == nil {
		t.Fatal("no second anchored receipt")
	}
	mallory, _ := identity.Generate()
	fundKey(t, chain, mallory.ID())
	rpc, _ := solrpc.New(chain.URL)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	malSig, _, err := onchain.Submit(ctx, rpc, mallory, good.Memo(), onchain.SubmitOptions{Poll: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	forgeries := map[string]func(p *onchain.DayProof){
		"another receipt": func(p *onchain.DayProof) { p.Receipt = other.Receipt },
		// A valid path to a root no anchor names: the receipt's leaf next
		// to a made-up sibling (a one-leaf day's root is the leaf itself,
		// which the day's anchor does name).
		"a root not anchored": func(p *onchain.DayProof) {
			leaves := []receipt.Hash{receipt.Hash(p.Leaf), receipt.Hash(sha256.Sum256([]byte("made up")))}
			path, _ := receipt.Proof(leaves, 0)
			p.Root, p.Index, p.N, p.Proof = receipt.HexHash(receipt.Root(leaves)), 0, 2, nil
			for _, h := range path {
				p.Proof = append(p.Proof, receipt.HexHash(h))
			}
		},
		"an anchor by another key": func(p *onchain.DayProof) {
			p.Anchor = &onchain.Anchor{Signature: malSig.String(), Memo: p.Memo(), CastKey: mallory.ID()}
		},
	}
	for name, forge := range forgeries {
		p := fresh()
		forge(p)
		if out, errs, code := check(strings.ReplaceAll(name, " ", "-"), p, cast.ID()); code == 0 || !strings.Contains(errs, "NOT proved") {
			t.Errorf("%s: accepted: %d %s %s", name, code, out, errs)
		}
	}
	// The receipt really is the beacon's, and the anchor the CAST key's.
	s, _ := receipt.Decode(good.Receipt)
	if s.Receipt.Node != node.ID() || good.Anchor.CastKey != cast.ID() {
		t.Fatalf("proof of %s anchored by %s", s.Receipt.Node, good.Anchor.CastKey)
	}
}
