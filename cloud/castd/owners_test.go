package castd

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/blockcast/beacon/cloud/contracts"
	"github.com/blockcast/beacon/cloud/ownerauth"
	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/offchain"
	"github.com/blockcast/beacon/shared/protocol"
)

const ownersAdmin = "owners-test-admin-token-0123456789"

// call sends a request with an optional bearer token and JSON body and
// returns the status and the body.
func call(t *testing.T, method, url, token string, body any) (int, []byte) {
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

// ownedNode registers a fresh node delegated to owner.
func ownedNode(t *testing.T, base string, owner *identity.Keypair) *identity.Keypair {
	t.Helper()
	node, _ := identity.Generate()
	d, err := offchain.SignDelegation(owner, node.Public(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(protocol.Registration{Role: protocol.RoleBeacon, LANURL: "http://192.168.1.1:8081", Version: "v", Delegation: &d})
	if st, _, msg := register(t, base, node, body, ""); st != http.StatusOK {
		t.Fatalf("register: %d %s", st, msg)
	}
	return node
}

// challenge asks for a sign-in challenge for owner.
func challenge(t *testing.T, base string, owner identity.PublicKey) string {
	t.Helper()
	st, b := call(t, http.MethodPost, base+protocol.PathOwnerChallenge, "", protocol.OwnerChallengeRequest{Owner: owner.String()})
	if st != http.StatusOK {
		t.Fatalf("challenge: %d %s", st, b)
	}
	var c protocol.OwnerChallenge
	json.Unmarshal(b, &c)
	return c.Text
}

// answer signs text with signer (the wallet) and posts it as owner.
func answer(t *testing.T, base string, owner identity.PublicKey, signer *identity.Keypair, text string) (int, protocol.OwnerSession, string) {
	t.Helper()
	msg, sig, err := offchain.SignText(signer, text)
	if err != nil {
		t.Fatal(err)
	}
	st, b := call(t, http.MethodPost, base+protocol.PathOwnerSession, "", protocol.OwnerSignIn{Owner: owner.String(), Text: text, Message: msg, Signature: sig})
	var s protocol.OwnerSession
	json.Unmarshal(b, &s)
	return st, s, string(b)
}

func signIn(t *testing.T, base string, owner *identity.Keypair) string {
	t.Helper()
	st, s, b := answer(t, base, owner.Public(), owner, challenge(t, base, owner.Public()))
	if st != http.StatusOK || !strings.HasPrefix(s.Token, "bco_") {
		t.Fatalf("sign-in: %d %s", st, b)
	}
	return s.Token
}

// TestOwnerSignInAttacks: each way to sign in without the owner's fresh
// signature for this castd is refused and yields no token.
func TestOwnerSignInAttacks(t *testing.T) {
	s, srv := newTestServer(t, func(o *Options) { o.AdminToken = ownersAdmin })
	_, other := newTestServer(t, nil)
	clk := &struct{ t time.Time }{time.Now()}
	s.owners.auth = ownerauth.New(ownerauth.Options{Cast: s.key.Public(), Now: func() time.Time { return clk.t }})
	owner, _ := identity.Generate()
	thief, _ := identity.Generate()

	text := challenge(t, srv.URL, owner.Public())
	if st, _, b := answer(t, srv.URL, owner.Public(), owner, text); st != http.StatusOK {
		t.Fatalf("genuine sign-in: %d %s", st, b)
	}
	for _, tc := range []struct {
		name string
		run  func() (int, protocol.OwnerSession, string)
		want string
	}{
		{"replayed challenge", func() (int, protocol.OwnerSession, string) {
			return answer(t, srv.URL, owner.Public(), owner, text)
		}, "unknown or already used"},
		{"expired challenge", func() (int, protocol.OwnerSession, string) {
			text := challenge(t, srv.URL, owner.Public())
			clk.t = clk.t.Add(ownerauth.DefaultChallengeTTL + time.Second)
			defer func() { clk.t = time.Now() }()
			return answer(t, srv.URL, owner.Public(), owner, text)
		}, "expired"},
		{"signed by another key", func() (int, protocol.OwnerSession, string) {
			return answer(t, srv.URL, owner.Public(), thief, challenge(t, srv.URL, owner.Public()))
		}, "does not verify"},
		{"challenge for another castd", func() (int, protocol.OwnerSession, string) {
			return answer(t, srv.URL, owner.Public(), owner, challenge(t, other.URL, owner.Public()))
		}, "another castd"},
		{"owner's challenge answered by another wallet as itself", func() (int, protocol.OwnerSession, string) {
			return answer(t, srv.URL, thief.Public(), thief, challenge(t, srv.URL, owner.Public()))
		}, "another owner"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, sess, b := tc.run()
			if st != http.StatusForbidden || sess.Token != "" || !strings.Contains(b, tc.want) {
				t.Fatalf("got %d %s, want 403 %q and no token", st, b, tc.want)
			}
		})
	}
	if _, n := s.owners.auth.Len(); n != 1 {
		t.Fatalf("%d sessions, want only the genuine one", n)
	}
}

// TestOwnerScope: owner A's session shows A's nodes and contracts only;
// with it, B's node, B's contract, the operator's API and an offer for B's
// node are all refused.
func TestOwnerScope(t *testing.T) {
	s, srv := newTestServer(t, func(o *Options) { o.AdminToken = ownersAdmin })
	a, _ := identity.Generate()
	b, _ := identity.Generate()
	nodeA, nodeB := ownedNode(t, srv.URL, a), ownedNode(t, srv.URL, b)
	tokA, tokB := signIn(t, srv.URL, a), signIn(t, srv.URL, b)

	st, body := call(t, http.MethodGet, srv.URL+protocol.PathOwnerNodes, tokA, nil)
	if st != http.StatusOK || !strings.Contains(string(body), nodeA.ID()) || strings.Contains(string(body), nodeB.ID()) {
		t.Fatalf("A's node list: %d %s", st, body)
	}
	for _, path := range []string{
		protocol.PathOwnerNodes + "/" + nodeB.ID(),
		protocol.PathNodes,
		protocol.PathNodes + "/" + nodeB.ID(),
		protocol.PathRelayNodes,
	} {
		st, body := call(t, http.MethodGet, srv.URL+path, tokA, nil)
		// (The refusal may quote the ID A asked for; nothing of B's record.)
		if st == http.StatusOK || strings.Contains(string(body), b.ID()) || strings.Contains(string(body), "lan_url") {
			t.Errorf("A's token on %s: %d %s", path, st, body)
		}
	}
	if st, _ := call(t, http.MethodGet, srv.URL+protocol.PathOwnerNodes+"/"+nodeA.ID(), tokA, nil); st != http.StatusOK {
		t.Errorf("A's own node: %d", st)
	}

	offer := func(owner, signer *identity.Keypair, node identity.PublicKey, start time.Time) protocol.CapacityOffer {
		o := contracts.Offer{Owner: owner.Public(), Node: node, Cast: s.key.Public(), BandwidthMbps: 50, AvailabilityHours: 20, StorageGB: 32,
			Start: start.UTC().Truncate(time.Second), End: start.UTC().Truncate(time.Second).Add(24 * time.Hour)}
		msg, sig, _ := offchain.SignText(signer, o.Text())
		return protocol.CapacityOffer{Owner: owner.ID(), Text: o.Text(), Message: msg, Signature: sig}
	}
	now := time.Now()
	st, body = call(t, http.MethodPost, srv.URL+protocol.PathContracts, tokA, offer(a, a, nodeA.Public(), now))
	if st != http.StatusCreated {
		t.Fatalf("A's offer: %d %s", st, body)
	}
	var cA contracts.Contract
	json.Unmarshal(body, &cA)
	if err := cA.Verify(); err != nil || cA.Offer.Cast != s.key.Public() {
		t.Fatalf("returned contract: %v", err)
	}
	st, body = call(t, http.MethodPost, srv.URL+protocol.PathContracts, tokB, offer(b, b, nodeB.Public(), now))
	if st != http.StatusCreated {
		t.Fatalf("B's offer: %d %s", st, body)
	}
	var cB contracts.Contract
	json.Unmarshal(body, &cB)
	for _, tc := range []struct {
		name  string
		token string
		offer protocol.CapacityOffer
		want  int
	}{
		{"A offers B's node", tokA, offer(a, a, nodeB.Public(), now.Add(48*time.Hour)), http.StatusForbidden},
		{"A posts an offer in B's name", tokA, offer(b, b, nodeB.Public(), now.Add(48*time.Hour)), http.StatusForbidden},
		{"B's offer signed by A", tokB, offer(b, a, nodeB.Public(), now.Add(48*time.Hour)), http.StatusForbidden},
		{"overlapping period", tokA, offer(a, a, nodeA.Public(), now.Add(time.Hour)), http.StatusConflict},
		{"no token", "", offer(a, a, nodeA.Public(), now.Add(48*time.Hour)), http.StatusUnauthorized},
	} {
		if st, body := call(t, http.MethodPost, srv.URL+protocol.PathContracts, tc.token, tc.offer); st != tc.want {
			t.Errorf("%s: %d %s, want %d", tc.name, st, body, tc.want)
		}
	}
	st, body = call(t, http.MethodGet, srv.URL+protocol.PathContracts, tokA, nil)
	if st != http.StatusOK || !strings.Contains(string(body), cA.ID) || strings.Contains(string(body), cB.ID) {
		t.Fatalf("A's contracts: %d %s", st, body)
	}
	if st, _ := call(t, http.MethodGet, srv.URL+protocol.PathContracts+"/"+cB.ID, tokA, nil); st != http.StatusNotFound {
		t.Errorf("A reads B's contract: %d", st)
	}
	q := "?from=" + now.Add(-time.Hour).UTC().Format(time.RFC3339) + "&to=" + now.Add(48*time.Hour).UTC().Format(time.RFC3339)
	st, body = call(t, http.MethodGet, srv.URL+protocol.PathReport+q, tokA, nil)
	if st != http.StatusOK || strings.Contains(string(body), nodeB.ID()) || strings.Contains(string(body), b.ID()) || !strings.Contains(string(body), cA.ID) {
		t.Fatalf("A's report: %d %s", st, body)
	}
	st, body = call(t, http.MethodGet, srv.URL+protocol.PathReport+q+"&format=csv", ownersAdmin, nil)
	recs, err := csv.NewReader(bytes.NewReader(body)).ReadAll()
	if st != http.StatusOK || err != nil {
		t.Fatalf("operator's report: %d %v %s", st, err, body)
	}
	kinds := map[string]int{}
	for _, r := range recs[1:] {
		kinds[r[0]]++
	}
	if kinds["node"] != 2 || kinds["owner"] != 2 || kinds["contract"] != 2 {
		t.Fatalf("operator's report rows %v:\n%s", kinds, body)
	}
	// Sign-out ends the session.
	if st, _ := call(t, http.MethodDelete, srv.URL+protocol.PathOwnerSession, tokA, nil); st != http.StatusNoContent {
		t.Fatalf("sign-out: %d", st)
	}
	if st, _ := call(t, http.MethodGet, srv.URL+protocol.PathOwnerNodes, tokA, nil); st != http.StatusUnauthorized {
		t.Fatalf("after sign-out: %d", st)
	}
}

// TestOwnerChallengeFlood: one address cannot fill castd's challenge
// table.
func TestOwnerChallengeFlood(t *testing.T) {
	s, srv := newTestServer(t, nil)
	owner, _ := identity.Generate()
	var limited int
	for range 50 {
		st, _ := call(t, http.MethodPost, srv.URL+protocol.PathOwnerChallenge, "", protocol.OwnerChallengeRequest{Owner: owner.ID()})
		if st == http.StatusTooManyRequests {
			limited++
		}
	}
	if c, _ := s.owners.auth.Len(); c != challengeBurst || limited != 50-challengeBurst {
		t.Fatalf("%d challenges kept, %d refused; want %d and %d", c, limited, challengeBurst, 50-challengeBurst)
	}
	for _, body := range []string{`{"owner":"not-a-key"}`, `{"owner":"` + owner.ID() + `","x":1}`, `{"owner":"` + owner.ID() + `"} {}`} {
		resp, err := http.Post(srv.URL+protocol.PathOwnerChallenge, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s: %d", body, resp.StatusCode)
		}
	}
}
