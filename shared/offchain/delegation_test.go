package offchain

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"strings"
	"testing"
	"time"

	solana "github.com/gagliardetto/solana-go"

	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/protocol"
)

var update = flag.Bool("update", false, "rewrite testdata golden files")

var t0 = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

// Fixed test keys: seeds 0x01..0x20 (owner) and 0x21..0x40 (node).
func testKeys(t testing.TB) (owner, node *identity.Keypair) {
	t.Helper()
	seed := make([]byte, 64)
	for i := range seed {
		seed[i] = byte(i + 1)
	}
	owner, err := identity.FromSeed(seed[:32])
	if err != nil {
		t.Fatal(err)
	}
	node, err = identity.FromSeed(seed[32:])
	if err != nil {
		t.Fatal(err)
	}
	return owner, node
}

// cliSign signs text as `solana sign-offchain-message` does in the given
// layout: Agave 3.x (v0, zero domain, signer = the key) or older (legacy).
func cliSign(t testing.TB, k *identity.Keypair, layout Layout, text string) (raw []byte, sig string) {
	t.Helper()
	var signers []identity.PublicKey
	if layout == LayoutV0 {
		signers = []identity.PublicKey{k.Public()}
	}
	m, err := NewMessage(layout, []byte(text), signers...)
	if err != nil {
		t.Fatal(err)
	}
	raw = mustEncode(t, m)
	return raw, identity.EncodeBase58(k.Sign(raw))
}

func delegationOf(k identity.PublicKey, raw []byte, sig string) protocol.Delegation {
	return protocol.Delegation{Owner: k.String(), Message: base64.StdEncoding.EncodeToString(raw), Signature: sig}
}

func TestDelegationText(t *testing.T) {
	owner, node := testKeys(t)
	issued := time.Date(2025, 6, 1, 14, 30, 15, 999_000_000, time.FixedZone("CEST", 2*3600))
	text := DelegationText(owner.Public(), node.Public(), issued)
	want := "Blockcast node delegation v1; owner: " + owner.ID() + "; node: " + node.ID() + "; issued: 2025-06-01T12:30:15Z"
	if text != want {
		t.Fatalf("DelegationText = %q\nwant %q", text, want)
	}
	m, err := NewMessage(LayoutV0, []byte(text), owner.Public())
	if err != nil {
		t.Fatal(err)
	}
	if m.Format != FormatRestrictedASCII {
		t.Errorf("delegation text is format %d, want 0 (shown in full on a Ledger)", m.Format)
	}
	o, n, at, err := ParseDelegationText(text)
	if err != nil {
		t.Fatal(err)
	}
	if o != owner.Public() || n != node.Public() || !at.Equal(issued.Truncate(time.Second)) || at.Location() != time.UTC {
		t.Errorf("ParseDelegationText = %s, %s, %s", o, n, at)
	}

	bad := map[string]string{
		"empty":          "",
		"other title":    strings.Replace(text, "Blockcast node delegation v1", "Blockcast node delegation v2", 1),
		"lower case":     strings.ToLower(text),
		"trailing space": text + " ",
		"newline":        text + "\n",
		"reordered":      strings.Replace(strings.Replace(text, "owner: ", "node: X", 1), "; node: ", "; owner: ", 1),
		"missing field":  text[:strings.Index(text, "; issued")],
		"extra field":    text + "; expires: 2026-01-01T00:00:00Z",
		"colon spacing":  strings.Replace(text, "owner: ", "owner:", 1),
		"bad owner":      strings.Replace(text, owner.ID(), "0"+owner.ID()[1:], 1),
		"bad node":       strings.Replace(text, node.ID(), node.ID()[:10], 1),
		"offset time":    strings.Replace(text, "12:30:15Z", "14:30:15+02:00", 1),
		"fraction":       strings.Replace(text, "12:30:15Z", "12:30:15.5Z", 1),
		"date only":      strings.Replace(text, "2025-06-01T12:30:15Z", "2025-06-01", 1),
		"lowercase z":    strings.Replace(text, "15Z", "15z", 1),
	}
	for name, s := range bad {
		if _, _, _, err := ParseDelegationText(s); !errors.Is(err, ErrBadDelegation) {
			t.Errorf("%s: error = %v, want ErrBadDelegation", name, err)
		}
	}
}

// golden holds the delegation vectors in testdata/delegation.json.
type goldenDelegation struct {
	Comment   string `json:"comment"`
	OwnerSeed string `json:"owner_seed_hex"`
	NodeSeed  string `json:"node_seed_hex"`
	Owner     string `json:"owner"`
	Node      string `json:"node"`
	Issued    string `json:"issued"`
	Text      string `json:"text"`
	Layouts   []struct {
		Layout    string `json:"layout"`
		Signed    string `json:"signed_hex"`
		Signature string `json:"signature_base58"`
		SigHex    string `json:"signature_hex"`
	} `json:"layouts"`
}

func TestDelegationGolden(t *testing.T) {
	const path = "testdata/delegation.json"
	owner, node := testKeys(t)
	ownerPriv, nodePriv := owner.PrivateKey(), node.PrivateKey()
	g := goldenDelegation{
		Comment:   "Owner-to-node delegation signed as a Solana off-chain message in each accepted v0 layout. signed_hex is the exact message the owner signs (protocol.Delegation.Message is its base64).",
		OwnerSeed: hex.EncodeToString(ownerPriv[:32]),
		NodeSeed:  hex.EncodeToString(nodePriv[:32]),
		Owner:     owner.ID(),
		Node:      node.ID(),
		Issued:    t0.Format(time.RFC3339),
		Text:      DelegationText(owner.Public(), node.Public(), t0),
	}
	for _, layout := range []Layout{LayoutV0, LayoutLegacy} {
		raw, sig := cliSign(t, owner, layout, g.Text)
		sigBytes, _ := identity.DecodeBase58(sig)
		g.Layouts = append(g.Layouts, struct {
			Layout    string `json:"layout"`
			Signed    string `json:"signed_hex"`
			Signature string `json:"signature_base58"`
			SigHex    string `json:"signature_hex"`
		}{layout.String(), hex.EncodeToString(raw), sig, hex.EncodeToString(sigBytes)})
	}
	got, err := json.MarshalIndent(g, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("vectors changed (run with -update if intended):\ngot  %s\nwant %s", got, want)
	}

	// The golden bytes have the documented structure, checked field by field
	// rather than through Encode.
	text := []byte(g.Text)
	v0 := mustHex(t, g.Layouts[0].Signed)
	legacy := mustHex(t, g.Layouts[1].Signed)
	ownerPub := owner.Public()
	wantV0 := bytes.Join([][]byte{
		[]byte("\xffsolana offchain"), {0}, make([]byte, 32), {0, 1}, ownerPub[:],
		{byte(len(text)), byte(len(text) >> 8)}, text,
	}, nil)
	wantLegacy := bytes.Join([][]byte{
		[]byte("\xffsolana offchain"), {0, 0}, {byte(len(text)), byte(len(text) >> 8)}, text,
	}, nil)
	if !bytes.Equal(v0, wantV0) {
		t.Errorf("v0 bytes\n%x\nwant\n%x", v0, wantV0)
	}
	if !bytes.Equal(legacy, wantLegacy) {
		t.Errorf("legacy bytes\n%x\nwant\n%x", legacy, wantLegacy)
	}

	// The signatures verify with solana-go, and the delegations verify here.
	solOwner := solana.PublicKeyFromBytes(ownerPub[:])
	for _, l := range g.Layouts {
		raw := mustHex(t, l.Signed)
		sig, err := solana.SignatureFromBase58(l.Signature)
		if err != nil {
			t.Fatal(err)
		}
		if !solOwner.Verify(raw, sig) {
			t.Errorf("%s: solana-go does not verify the owner signature", l.Layout)
		}
		got, err := VerifyDelegation(delegationOf(ownerPub, raw, l.Signature), node.Public())
		if err != nil || got != ownerPub {
			t.Errorf("%s: VerifyDelegation = %s, %v", l.Layout, got, err)
		}
	}
}

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A wallet that signs with solana-go's ed25519 (as castd or a test client
// would) produces delegations this package accepts.
func TestDelegationSignedBySolanaGo(t *testing.T) {
	_, node := testKeys(t)
	priv, err := solana.NewRandomPrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	owner, err := identity.ParsePublicKey(priv.PublicKey().String())
	if err != nil {
		t.Fatal(err)
	}
	text := DelegationText(owner, node.Public(), t0)
	for _, layout := range []Layout{LayoutV0, LayoutLegacy} {
		var signers []identity.PublicKey
		if layout == LayoutV0 {
			signers = []identity.PublicKey{owner}
		}
		m, err := NewMessage(layout, []byte(text), signers...)
		if err != nil {
			t.Fatal(err)
		}
		raw := mustEncode(t, m)
		sig, err := priv.Sign(raw)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := VerifyDelegation(delegationOf(owner, raw, sig.String()), node.Public()); err != nil || got != owner {
			t.Errorf("%s: VerifyDelegation = %s, %v", layout, got, err)
		}
		// And the operator path: text and printed signature only.
		d, err := AssembleDelegation(owner, text, sig.String())
		if err != nil {
			t.Fatalf("%s: AssembleDelegation: %v", layout, err)
		}
		back, _ := base64.StdEncoding.DecodeString(d.Message)
		if !bytes.Equal(back, raw) {
			t.Errorf("%s: AssembleDelegation picked the wrong layout", layout)
		}
	}
}

func TestSignDelegation(t *testing.T) {
	owner, node := testKeys(t)
	d, err := SignDelegation(owner, node.Public(), t0)
	if err != nil {
		t.Fatal(err)
	}
	raw, sig := cliSign(t, owner, LayoutV0, DelegationText(owner.Public(), node.Public(), t0))
	if want := delegationOf(owner.Public(), raw, sig); d != want {
		t.Errorf("SignDelegation = %+v\nwant (as the Agave 3 CLI) %+v", d, want)
	}
	if got, err := VerifyDelegation(d, node.Public()); err != nil || got != owner.Public() {
		t.Errorf("VerifyDelegation = %s, %v", got, err)
	}
}

func TestVerifyDelegationFailures(t *testing.T) {
	owner, node := testKeys(t)
	other, err := identity.FromSeed(bytes.Repeat([]byte{9}, 32))
	if err != nil {
		t.Fatal(err)
	}
	text := DelegationText(owner.Public(), node.Public(), t0)
	raw, sig := cliSign(t, owner, LayoutV0, text)
	good := delegationOf(owner.Public(), raw, sig)

	sign := func(k *identity.Keypair, m Message) protocol.Delegation {
		b := mustEncode(t, m)
		return delegationOf(k.Public(), b, identity.EncodeBase58(k.Sign(b)))
	}
	with := func(f func(*protocol.Delegation)) protocol.Delegation {
		d := good
		f(&d)
		return d
	}
	flipped := append([]byte(nil), raw...)
	flipped[len(flipped)-3] ^= 0x01 // still printable ASCII
	wrongSignerList := Message{Layout: LayoutV0, Format: 0, Signers: []identity.PublicKey{other.Public()}, Body: []byte(text)}
	otherDomain := Message{Layout: LayoutV0, Format: 0, AppDomain: [32]byte{7}, Signers: []identity.PublicKey{node.Public(), owner.Public()}, Body: []byte(text)}
	hello, _ := NewMessage(LayoutV0, []byte("hello"), owner.Public())
	otherText := DelegationText(other.Public(), node.Public(), t0)
	mOtherText, _ := NewMessage(LayoutV0, []byte(otherText), owner.Public())
	forOther := DelegationText(owner.Public(), other.Public(), t0)
	mForOther, _ := NewMessage(LayoutLegacy, []byte(forOther))

	tests := []struct {
		name string
		d    protocol.Delegation
		want error
	}{
		{"good", good, nil},
		{"another application domain and two signers", sign(owner, otherDomain), nil},
		{"for another node", sign(owner, mForOther), ErrWrongNode},
		{"text names another owner", sign(owner, mOtherText), ErrWrongOwner},
		{"owner not in signers", sign(owner, wrongSignerList), ErrNotSigner},
		{"not a delegation text", sign(owner, hello), ErrBadDelegation},
		{"signed by another key", with(func(d *protocol.Delegation) { d.Signature = identity.EncodeBase58(other.Sign(raw)) }), ErrBadSignature},
		{"claims another owner", with(func(d *protocol.Delegation) { d.Owner = other.ID() }), ErrBadSignature},
		{"tampered message", with(func(d *protocol.Delegation) { d.Message = base64.StdEncoding.EncodeToString(flipped) }), ErrBadSignature},
		{"raw text signature, no envelope", with(func(d *protocol.Delegation) {
			d.Message = base64.StdEncoding.EncodeToString([]byte(text))
			d.Signature = identity.EncodeBase58(owner.Sign([]byte(text)))
		}), ErrSigningDomain},
		{"empty", protocol.Delegation{}, ErrBadDelegation},
		{"owner not base58", with(func(d *protocol.Delegation) { d.Owner = "0" + d.Owner[1:] }), ErrBadDelegation},
		{"signature not base58", with(func(d *protocol.Delegation) { d.Signature = "0" + d.Signature[1:] }), ErrBadDelegation},
		{"signature short", with(func(d *protocol.Delegation) { d.Signature = identity.EncodeBase58(make([]byte, 63)) }), ErrBadDelegation},
		{"signature huge", with(func(d *protocol.Delegation) { d.Signature = strings.Repeat("z", 5000) }), ErrBadDelegation},
		{"message not base64", with(func(d *protocol.Delegation) { d.Message = "!!" + d.Message }), ErrBadDelegation},
		{"message base64url", with(func(d *protocol.Delegation) {
			d.Message = base64.URLEncoding.EncodeToString(append([]byte{0xfb, 0xff}, raw...))
		}), ErrBadDelegation},
		{"message unpadded", with(func(d *protocol.Delegation) { d.Message = base64.RawStdEncoding.EncodeToString(raw[:len(raw)-1]) }), ErrBadDelegation},
		{"message huge", with(func(d *protocol.Delegation) { d.Message = strings.Repeat("A", 100000) }), ErrTooLong},
		{"message truncated", with(func(d *protocol.Delegation) { d.Message = base64.StdEncoding.EncodeToString(raw[:len(raw)-1]) }), ErrMalformed},
		{"message version 1", with(func(d *protocol.Delegation) {
			c := append([]byte(nil), raw...)
			c[16] = 1
			d.Message = base64.StdEncoding.EncodeToString(c)
		}), ErrVersion},
	}
	for _, tt := range tests {
		got, err := VerifyDelegation(tt.d, node.Public())
		if !errors.Is(err, tt.want) {
			t.Errorf("%s: error = %v, want %v", tt.name, err, tt.want)
			continue
		}
		if err == nil && got != owner.Public() {
			t.Errorf("%s: owner %s", tt.name, got)
		}
		if err != nil && !got.IsZero() {
			t.Errorf("%s: returned an owner with an error", tt.name)
		}
	}
}

func TestAssembleDelegation(t *testing.T) {
	owner, node := testKeys(t)
	other, _ := identity.FromSeed(bytes.Repeat([]byte{9}, 32))
	text := DelegationText(owner.Public(), node.Public(), t0)
	for _, layout := range []Layout{LayoutV0, LayoutLegacy} {
		raw, sig := cliSign(t, owner, layout, text)
		d, err := AssembleDelegation(owner.Public(), text, sig)
		if err != nil {
			t.Fatalf("%s: %v", layout, err)
		}
		if want := delegationOf(owner.Public(), raw, sig); d != want {
			t.Errorf("%s: AssembleDelegation = %+v, want %+v", layout, d, want)
		}
		if _, err := VerifyDelegation(d, node.Public()); err != nil {
			t.Errorf("%s: VerifyDelegation: %v", layout, err)
		}
	}
	_, sig := cliSign(t, owner, LayoutV0, text)
	for _, tt := range []struct {
		name      string
		owner     identity.PublicKey
		text, sig string
		want      error
	}{
		{"signature of another text", owner.Public(), DelegationText(owner.Public(), node.Public(), t0.Add(time.Second)), sig, ErrBadSignature},
		{"other signer", other.Public(), DelegationText(other.Public(), node.Public(), t0), sig, ErrBadSignature},
		{"text of another owner", other.Public(), text, sig, ErrWrongOwner},
		{"not a delegation", owner.Public(), "hello", sig, ErrBadDelegation},
		{"signature garbage", owner.Public(), text, "not base58!", ErrBadDelegation},
	} {
		if _, err := AssembleDelegation(tt.owner, tt.text, tt.sig); !errors.Is(err, tt.want) {
			t.Errorf("%s: error = %v, want %v", tt.name, err, tt.want)
		}
	}
}

func FuzzVerifyDelegation(f *testing.F) {
	owner, node := testKeys(f)
	raw, sig := cliSign(f, owner, LayoutLegacy, DelegationText(owner.Public(), node.Public(), t0))
	good := delegationOf(owner.Public(), raw, sig)
	f.Add(good.Owner, good.Message, good.Signature)
	f.Add("", "", "")
	f.Add(owner.ID(), base64.StdEncoding.EncodeToString([]byte(SigningDomain+"\x00")), sig)
	f.Fuzz(func(t *testing.T, o, msg, s string) {
		d := protocol.Delegation{Owner: o, Message: msg, Signature: s}
		got, err := VerifyDelegation(d, node.Public())
		if err != nil {
			return
		}
		// Accepted: the owner signed exactly these bytes, which name the node.
		b, _ := base64.StdEncoding.DecodeString(msg)
		sigBytes, _ := identity.DecodeBase58(s)
		m, derr := Decode(b)
		if got.String() != o || !got.Verify(b, sigBytes) || derr != nil ||
			!strings.Contains(string(m.Body), "; node: "+node.ID()+";") {
			t.Fatalf("accepted an invalid delegation %+v", d)
		}
	})
}

func BenchmarkVerifyDelegation(b *testing.B) {
	owner, node := testKeys(b)
	d, err := SignDelegation(owner, node.Public(), t0)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := VerifyDelegation(d, node.Public()); err != nil {
			b.Fatal(err)
		}
	}
}
