package e2e

import (
	"bytes"
	"encoding/base64"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/blockcast/beacon/cloud/contracts"
	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/offchain"
	"github.com/blockcast/beacon/shared/protocol"
	"github.com/blockcast/beacon/shared/signedreq"
	"github.com/blockcast/beacon/test/harness"
)

// fakeWallet stands in for a browser wallet's window.solana: it hands the
// bytes the page asks it to sign to the test, which signs them in Go with
// the owner's key and resolves the page's promise.
const fakeWallet = `window.solana = {
  publicKey: null,
  connect() { return Promise.resolve({ publicKey: { toString: () => window.__owner } }); },
  signMessage(bytes) {
    window.__toSign = Array.from(bytes);
    return new Promise((res) => { window.__resolve = (sig) => res({ signature: new Uint8Array(sig) }); });
  },
};`

// TestDashboardOwnerSignIn: a node owner signs in on the dashboard in
// headless Chromium, first by pasting what ` + "`solana sign-offchain-message`" + `
// prints, then with a browser wallet, and sees only their own node and
// contract; a bad signature is refused and nothing is kept.
func TestDashboardOwnerSignIn(t *testing.T) {
	_, err := harness.ChromiumPath()
	need(t, "chromium", err)
	sys, owner := startOwnedSystem(t)
	id := mustStatus(t, sys)["node_id"].(string)
	// Someone else's node on the same castd.
	stranger, _ := identity.Generate()
	other := registerOwned(t, sys.CastdURL(), stranger)

	br, err := harness.StartBrowser(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer br.Close()
	page, err := br.Open(sys.CastdURL() + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer page.Close()
	out := screenshotDir(t)
	text1 := func(id string) string {
		return page.EvalString(fmt.Sprintf(`(document.getElementById(%q)||{}).textContent||""`, id))
	}
	eval := func(js string) {
		t.Helper()
		if _, err := page.Eval(js); err != nil {
			t.Fatal(err)
		}
	}
	row := fmt.Sprintf(`(document.querySelector('#nodes tr[data-id=%q]')||{}).className||""`, id)
	if !harness.WaitFor(15*time.Second, func() bool { return text1("n-beacon") == "2" }) {
		t.Fatalf("no totals: %s", page.EvalString("document.body.innerText"))
	}
	getChallenge := func() string {
		t.Helper()
		eval(fmt.Sprintf(`document.getElementById("owner-cmd").textContent = ""; document.getElementById("owner-addr").value = %q; document.getElementById("owner-login").requestSubmit(); true`, owner.ID()))
		var cmd string
		if !harness.WaitFor(10*time.Second, func() bool { cmd = text1("owner-cmd"); return strings.Contains(cmd, "Blockcast owner sign-in v1") }) {
			t.Fatalf("no challenge shown: %q %q", cmd, text1("owner-err"))
		}
		_, text, _ := strings.Cut(cmd, "'")
		return strings.TrimSuffix(text, "'")
	}
	paste := func(sig string) {
		eval(fmt.Sprintf(`document.getElementById("owner-sig").value = %q; document.getElementById("owner-sig-form").requestSubmit(); true`, sig))
	}

	// A signature by another key: refused, nothing kept.
	ch := getChallenge()
	_, badSig, _ := offchain.SignText(stranger, ch)
	paste(badSig)
	if !harness.WaitFor(10*time.Second, func() bool { return strings.Contains(text1("owner-err"), "Sign-in refused") }) {
		t.Fatalf("no refusal shown: %q", text1("owner-err"))
	}
	if n := page.EvalString(`String(sessionStorage.length)`); n != "0" {
		t.Fatalf("sessionStorage has %s items after a refused sign-in", n)
	}

	// The CLI's way: the base58 signature of the challenge text, pasted.
	ch = getChallenge()
	_, goodSig, _ := offchain.SignText(owner, ch)
	paste(goodSig)
	if !harness.WaitFor(15*time.Second, func() bool { return page.EvalString(row) == "online" }) {
		t.Fatalf("the owner never saw their beacon: %s | %s", text1("owner-err"), page.EvalString("document.body.innerText"))
	}
	if html := page.EvalString(`document.documentElement.outerHTML`); strings.Contains(html, other.ID()) || strings.Contains(html, other.ID()[:6]) {
		t.Error("the owner's page shows another owner's node")
	}
	tok := page.EvalString(`sessionStorage.getItem("castd-owner-token")`)
	if !strings.HasPrefix(tok, "bco_") {
		t.Fatalf("owner token %q", tok)
	}

	// A capacity offer made on the page (its canonical text built by the
	// page's script), signed as the CLI does, pasted: castd countersigns it
	// and the page lists it with its verdict.
	if !harness.WaitFor(10*time.Second, func() bool {
		return page.EvalString(`String(document.getElementById("offer").hidden)`) == "false" &&
			page.EvalString(`document.getElementById("offer-node").value`) == id
	}) {
		t.Fatal("no offer form for the owner's node")
	}
	eval(`document.getElementById("offer").requestSubmit(); true`)
	var offerCmd string
	if !harness.WaitFor(10*time.Second, func() bool {
		offerCmd = text1("offer-cmd")
		return strings.Contains(offerCmd, "Blockcast capacity offer v1")
	}) {
		t.Fatalf("no offer text: %q", text1("offer-msg"))
	}
	_, offerText, _ := strings.Cut(offerCmd, "'")
	offerText = strings.TrimSuffix(offerText, "'")
	if _, err := contracts.ParseOffer(offerText); err != nil {
		t.Fatalf("the page's offer text: %v", err)
	}
	omsg, osig, _ := offchain.SignText(owner, offerText)
	eval(fmt.Sprintf(`document.getElementById("offer-sig").value = %q; document.getElementById("offer-sig-form").requestSubmit(); true`, osig))
	c := contracts.Contract{ID: contracts.ID(mustB64(t, omsg))}
	crow := fmt.Sprintf(`(document.querySelector('#contracts tr[data-id=%q]')||{}).textContent||""`, c.ID)
	if !harness.WaitFor(15*time.Second, func() bool { return strings.Contains(page.EvalString(crow), "not started") }) {
		t.Fatalf("contract row: %q", page.EvalString(crow))
	}
	if h := page.EvalString(`document.querySelector('#contracts thead').textContent`); !strings.Contains(h, "Source") {
		t.Errorf("the contracts table has no Source column: %q", h)
	}
	// castd runs without --solana-rpc here: the row says it does not
	// anchor, and shows the memo the owner may record with its wallet.
	chainCell := fmt.Sprintf(`(document.querySelector('#contracts tr[data-id=%q] td[data-label="On chain"]')||{}).textContent||""`, c.ID)
	if cell := page.EvalString(chainCell); cell != "off"+"blockcast:contract:v1:"+c.ID {
		t.Errorf("contract row's On chain cell: %q", cell)
	}
	if err := page.Screenshot(filepath.Join(out, "dashboard-owner.png")); err != nil {
		t.Fatal(err)
	}
	// The owner's token is not the operator's.
	if st, _ := apiCall(t, http.MethodGet, sys.CastdURL()+protocol.PathNodes+"/"+other.ID(), tok, nil); st != http.StatusUnauthorized {
		t.Errorf("owner token on the operator's node view: %d", st)
	}

	// Sign out: the session ends at castd too.
	eval(`document.getElementById("signout").click(); true`)
	if !harness.WaitFor(10*time.Second, func() bool {
		st, _ := apiCall(t, http.MethodGet, sys.CastdURL()+protocol.PathOwnerNodes, tok, nil)
		return st == http.StatusUnauthorized
	}) {
		t.Fatal("the session still works after sign-out")
	}

	// A browser wallet: the page builds the off-chain message, the wallet
	// (the test, with the owner's key) signs those bytes.
	if err := page.AddInitScript(fakeWallet + fmt.Sprintf("\nwindow.__owner = %q;", owner.ID())); err != nil {
		t.Fatal(err)
	}
	if err := page.Reload(); err != nil {
		t.Fatal(err)
	}
	if !harness.WaitFor(10*time.Second, func() bool {
		return page.EvalString(`String(document.getElementById("owner-wallet").hidden)`) == "false"
	}) {
		t.Fatalf("no wallet button with window.solana present: solana=%s owner-wallet=%s", page.EvalString(`typeof window.solana`), page.EvalString(`String(document.getElementById("owner-wallet"))`))
	}
	eval(`document.getElementById("owner-wallet").click(); true`)
	var raw []byte
	if !harness.WaitFor(10*time.Second, func() bool {
		v, err := page.Eval(`window.__toSign || null`)
		return err == nil && json.Unmarshal(v, &raw) == nil && len(raw) > 0
	}) {
		t.Fatalf("the page never asked the wallet to sign: %q", text1("owner-err"))
	}
	m, err := offchain.Decode(raw)
	if err != nil || m.Layout != offchain.LayoutV0 || !strings.HasPrefix(string(m.Body), "Blockcast owner sign-in v1") {
		t.Fatalf("the page asked the wallet to sign %q: %v", raw, err)
	}
	var ints []int
	for _, b := range owner.Sign(raw) {
		ints = append(ints, int(b))
	}
	wsig, _ := json.Marshal(ints)
	eval(fmt.Sprintf(`window.__resolve(%s); true`, wsig))
	if !harness.WaitFor(15*time.Second, func() bool { return page.EvalString(row) == "online" }) {
		t.Fatalf("wallet sign-in: %s", text1("owner-err"))
	}
	// And an offer for the next period, signed by the wallet.
	eval(`window.__toSign = null; document.getElementById("offer-start").value = "2031-01-01T00:00"; document.getElementById("offer-end").value = "2031-01-31T00:00"; document.getElementById("offer").requestSubmit(); true`)
	if !harness.WaitFor(10*time.Second, func() bool {
		return page.EvalString(`String(document.getElementById("offer-wallet").hidden)`) == "false" && strings.Contains(text1("offer-cmd"), "2031-01-01T00:00:00Z")
	}) {
		t.Fatalf("no wallet offer step: %q", text1("offer-msg"))
	}
	eval(`document.getElementById("offer-wallet").click(); true`)
	raw = nil
	if !harness.WaitFor(10*time.Second, func() bool {
		v, err := page.Eval(`window.__toSign || null`)
		return err == nil && json.Unmarshal(v, &raw) == nil && len(raw) > 0
	}) {
		t.Fatalf("the page never asked the wallet to sign the offer: %q", text1("offer-msg"))
	}
	ints = ints[:0]
	for _, b := range owner.Sign(raw) {
		ints = append(ints, int(b))
	}
	wsig, _ = json.Marshal(ints)
	eval(fmt.Sprintf(`window.__resolve(%s); true`, wsig))
	c2 := fmt.Sprintf(`(document.querySelector('#contracts tr[data-id=%q]')||{}).textContent||""`, contracts.ID(raw))
	if !harness.WaitFor(15*time.Second, func() bool { return strings.Contains(page.EvalString(c2), "2031-01-01") }) {
		t.Fatalf("wallet-signed offer not listed: %q", text1("offer-msg"))
	}
	if err := page.Screenshot(filepath.Join(out, "dashboard-owner-wallet.png")); err != nil {
		t.Fatal(err)
	}
}

const ownersAdminToken = "owners-e2e-admin-token-0123456789"

// startOwnedSystem starts castd and a beacon whose owner wallet delegated
// to it, as an operator does with ` + "`beacon delegate`" + `.
func startOwnedSystem(t *testing.T, beaconArgs ...string) (*harness.System, *identity.Keypair) {
	t.Helper()
	sys := newSystem(t, "--admin-token", ownersAdminToken, "--history-interval", "200ms")
	sys.BeaconArgs = beaconArgs
	state := filepath.Join(sys.Dir, "beacon")
	run := func(args ...string) {
		if out, err := exec.Command(bins.Beacon, args...).CombinedOutput(); err != nil {
			t.Fatalf("beacon %v: %v\n%s", args, err, out)
		}
	}
	owner, _ := identity.Generate()
	run("keygen", "--state-dir", state)
	run("delegate", "--state-dir", state, "--owner", owner.ID())
	text, err := os.ReadFile(filepath.Join(state, "delegation-request.txt"))
	if err != nil {
		t.Fatal(err)
	}
	_, sig, _ := offchain.SignText(owner, string(text))
	run("delegate", "--state-dir", state, "--signature", sig)
	if err := sys.Start(); err != nil {
		t.Fatal(err)
	}
	return sys, owner
}

// apiSignIn signs owner in through the API, as the dashboard does.
func apiSignIn(t *testing.T, base string, owner *identity.Keypair) string {
	t.Helper()
	st, b := apiCall(t, http.MethodPost, base+protocol.PathOwnerChallenge, "", protocol.OwnerChallengeRequest{Owner: owner.ID()})
	var c protocol.OwnerChallenge
	if st != http.StatusOK || json.Unmarshal(b, &c) != nil {
		t.Fatalf("challenge: %d %s", st, b)
	}
	_, sig, _ := offchain.SignText(owner, c.Text)
	st, b = apiCall(t, http.MethodPost, base+protocol.PathOwnerSession, "", protocol.OwnerSignIn{Owner: owner.ID(), Text: c.Text, Signature: sig})
	var s protocol.OwnerSession
	if st != http.StatusOK || json.Unmarshal(b, &s) != nil {
		t.Fatalf("session: %d %s", st, b)
	}
	return s.Token
}

// TestCapacityContractMeasured: a contract for the real beacon is met
// while it is online and serving (castd report, CSV), its bytes counted
// from the beacon's cross-checked receipts, and not met, with the reason,
// once it has been down for part of the window.
func TestCapacityContractMeasured(t *testing.T) {
	sys, owner := startOwnedSystem(t, receiptArgs...)
	id := mustStatus(t, sys)["node_id"].(string)
	tok := apiSignIn(t, sys.CastdURL(), owner)
	start := time.Now().UTC().Truncate(time.Second)
	o := contracts.Offer{Owner: owner.Public(), Node: mustKey(t, id), Cast: mustKey(t, castKey(t, sys)), BandwidthMbps: 1, AvailabilityHours: 1, StorageGB: 1,
		Start: start, End: start.Add(2 * time.Hour)} // online half the time
	msg, sig, _ := offchain.SignText(owner, o.Text())
	st, body := apiCall(t, http.MethodPost, sys.CastdURL()+protocol.PathContracts, tok, protocol.CapacityOffer{Owner: owner.ID(), Text: o.Text(), Message: msg, Signature: sig})
	if st != http.StatusCreated {
		t.Fatalf("offer: %d %s", st, body)
	}
	var c contracts.Contract
	json.Unmarshal(body, &c)
	// Traffic through the router to the beacon, then a few health reports.
	path := "/obj/1M/contract.bin"
	expectVia(t, sys, fetch(t, sys.CastdURL()+path), path, "MISS", 1<<20)
	expectVia(t, sys, fetch(t, sys.CastdURL()+path), path, "HIT", 1<<20)
	if !harness.WaitFor(20*time.Second, func() bool {
		_, b := apiCall(t, http.MethodGet, sys.CastdURL()+protocol.PathOwnerNodes+"/"+id, tok, nil)
		var n struct {
			BytesServed uint64 `json:"bytes_served"`
		}
		return json.Unmarshal(b, &n) == nil && n.BytesServed > 0
	}) {
		t.Fatal("the beacon never reported bytes served")
	}
	var seen struct {
		Receipts map[string]any `json:"receipts"`
	}
	if !harness.WaitFor(20*time.Second, func() bool {
		_, b := apiCall(t, http.MethodGet, sys.CastdURL()+protocol.PathOwnerNodes+"/"+id, tok, nil)
		return json.Unmarshal(b, &seen) == nil && num(seen.Receipts, "requests") == 2
	}) {
		t.Fatalf("castd's receipts of the two requests: %v", seen.Receipts)
	}
	time.Sleep(1500 * time.Millisecond) // a history sample after the report
	t1 := time.Now().UTC().Truncate(time.Second).Add(time.Second)
	time.Sleep(1500 * time.Millisecond)
	out, err := exec.Command(bins.Castd, "report", "--url", sys.CastdURL(), "--admin-token", ownersAdminToken,
		"--from", start.Add(-time.Minute).Format(time.RFC3339), "--to", t1.Format(time.RFC3339), "--format", "csv").CombinedOutput()
	if err != nil {
		t.Fatalf("castd report: %v\n%s", err, out)
	}
	recs, err := csv.NewReader(bytes.NewReader(out)).ReadAll()
	if err != nil {
		t.Fatalf("report is not CSV: %v\n%s", err, out)
	}
	col := map[string]int{}
	for i, h := range recs[0] {
		col[h] = i
	}
	rows := map[string][]string{}
	for _, r := range recs[1:] {
		rows[r[col["kind"]]+" "+r[col["id"]]] = r
	}
	node, contract, own := rows["node "+id], rows["contract "+c.ID], rows["owner "+owner.ID()]
	if node == nil || contract == nil || own == nil {
		t.Fatalf("report lacks the node, the contract or the owner:\n%s", out)
	}
	if node[col["online_hours"]] == "0.000" || node[col["bytes_served"]] == "0" || contract[col["verdict"]] != contracts.VerdictMet || own[col["contracts_met"]] != "1" {
		t.Fatalf("report while online and serving:\n%s", out)
	}
	// The served figures are the receipts': one MISS and one HIT of 1 MiB,
	// half of them cache hits.
	if node[col["source"]] != "receipts" || contract[col["source"]] != "receipts" || node[col["bytes_served"]] != strconv.Itoa(2<<20) || node[col["hit_ratio"]] != "0.500" {
		t.Fatalf("served figures not from the receipts:\n%s", out)
	}

	// The beacon goes down for part of the next window.
	if err := sys.Beacon.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if !harness.WaitFor(20*time.Second, func() bool {
		_, b := apiCall(t, http.MethodGet, sys.CastdURL()+protocol.PathOwnerNodes+"/"+id, tok, nil)
		return strings.Contains(string(b), `"state":"offline"`)
	}) {
		t.Fatal("castd never saw the beacon offline")
	}
	// Offline for longer than it was online: under half of the window.
	time.Sleep(time.Since(start) + 2*time.Second)
	t2 := time.Now().UTC().Truncate(time.Second)
	time.Sleep(time.Second)
	st, body = apiCall(t, http.MethodGet, sys.CastdURL()+protocol.PathContracts+"/"+c.ID+"?from="+start.Format(time.RFC3339)+"&to="+t2.Format(time.RFC3339), tok, nil)
	var view struct {
		Evaluation contracts.Evaluation `json:"evaluation"`
	}
	if st != http.StatusOK || json.Unmarshal(body, &view) != nil {
		t.Fatalf("contract view: %d %s", st, body)
	}
	if ev := view.Evaluation; ev.Verdict != contracts.VerdictNotMet || !strings.Contains(strings.Join(ev.Reasons, " "), "availability_hours") {
		t.Fatalf("after the outage: %+v", ev)
	}
}

func mustB64(t *testing.T, s string) []byte {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustKey(t *testing.T, s string) identity.PublicKey {
	t.Helper()
	k, err := identity.ParsePublicKey(strings.TrimSpace(s))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func castKey(t *testing.T, sys *harness.System) string {
	t.Helper()
	_, b := apiCall(t, http.MethodGet, sys.CastdURL()+protocol.PathCastKey, "", nil)
	return string(b)
}

func apiCall(t *testing.T, method, url, token string, body any) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, url, rd)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// registerOwned registers a fresh node, delegated to owner, from
// 127.0.0.1.
func registerOwned(t *testing.T, base string, owner *identity.Keypair) *identity.Keypair {
	t.Helper()
	node, _ := identity.Generate()
	d, err := offchain.SignDelegation(owner, node.Public(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(protocol.Registration{Role: protocol.RoleBeacon, LANURL: "http://192.168.7.7:8081", Version: "other", Delegation: &d})
	req, _ := http.NewRequest(http.MethodPost, base+protocol.PathRegister, bytes.NewReader(body))
	if err := signedreq.Sign(req, body, node, time.Now()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("register: %d %s", resp.StatusCode, b)
	}
	return node
}
