package beacon

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/onchain"
	"github.com/blockcast/beacon/shared/protocol"
	"github.com/blockcast/beacon/shared/soltx"
	"github.com/blockcast/beacon/test/solana/solanatest"
)

func TestOnchainRecordFile(t *testing.T) {
	dir := t.TempDir()
	if rec, err := LoadOnchainRecord(dir); rec != nil || err != nil {
		t.Fatalf("missing file: %v %v", rec, err)
	}
	want := OnchainRecord{Memo: onchain.RegistrationPrefix + "abc", Signature: soltx.Signature{1}.String(), Slot: 7}
	if err := SaveOnchainRecord(dir, want); err != nil {
		t.Fatal(err)
	}
	if got, err := LoadOnchainRecord(dir); err != nil || *got != want {
		t.Fatalf("%+v %v", got, err)
	}
	for _, bad := range []string{`{`, `{"memo":"blockcast:reg:v1:x","signature":"x"}`, `{"memo":"other","signature":"` + soltx.Signature{1}.String() + `"}`} {
		os.WriteFile(filepath.Join(dir, OnchainFile), []byte(bad), 0o600)
		if _, err := LoadOnchainRecord(dir); err == nil || !strings.Contains(err.Error(), OnchainFile) {
			t.Errorf("%s: %v", bad, err)
		}
	}
}

func TestOnchainOptionsRefused(t *testing.T) {
	for _, o := range []Options{
		{OnchainRegister: true},
		{RequireOnchain: true},
		{SolanaRPC: "localhost:8899"},
		{SolanaRPC: "http://127.0.0.1:8899", CastSig: "nope"},
	} {
		o.CastURL, o.StateDir = "http://127.0.0.1:1", t.TempDir()
		o.ensureDefaults()
		if err := o.check(); err == nil {
			t.Errorf("%+v accepted", o)
		}
	}
}

func FuzzParseOnchainRecord(f *testing.F) {
	good, _ := json.Marshal(OnchainRecord{Memo: onchain.RegistrationPrefix + "abc", Signature: soltx.Signature{1}.String(), Slot: 7})
	f.Add(good)
	f.Add([]byte(`{"memo":"","signature":""}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		rec, err := parseOnchainRecord(raw)
		if err != nil {
			return
		}
		if _, err := onchain.ParseSignature(rec.Signature); err != nil || !strings.HasPrefix(rec.Memo, onchain.RegistrationPrefix) {
			t.Fatalf("accepted %+v", rec)
		}
	})
}

// TestCastKeyAtStart: a known CAST key without a record stops the start;
// an endpoint that cannot be reached now does not (it is no proof), and
// the key is checked again before a registration trusts it.
func TestCastKeyAtStart(t *testing.T) {
	chain := solanatest.Start(t)
	castKey, _ := identity.Generate()
	newBeacon := func(rpc, castSig string) *Beacon {
		b, err := New(Options{CastURL: "http://127.0.0.1:1", StateDir: t.TempDir(), AdminListen: "", SolanaRPC: rpc,
			RequireOnchain: true, CastKey: castKey.ID(), CastSig: castSig, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		return b
	}
	ctx := context.Background()
	none := soltx.Signature{9}.String()
	if err := newBeacon(chain.URL, none).checkCastKeyAtStart(ctx); !errors.Is(err, ErrNoCastRecord) {
		t.Fatalf("no record: %v", err)
	}
	// castd unreachable, nothing configured: cannot tell, so start.
	b := newBeacon(chain.URL, "")
	if err := b.checkCastKeyAtStart(ctx); err != nil {
		t.Fatalf("castd unreachable: %v", err)
	}
	if err := b.verifyCastKey(ctx, castKey.Public()); !errors.Is(err, ErrCastRecordUnavailable) {
		t.Fatalf("before registering: %v", err)
	}
	if err := newBeacon("http://127.0.0.1:1", none).checkCastKeyAtStart(ctx); err != nil {
		t.Fatalf("RPC unreachable: %v", err)
	}
}

// TestOnchainRecordBesideWallet: the record lives beside the wallet, not
// in the state directory (on a router the cache directory may be RAM, and
// a lost record would cost a new transaction at every boot); a record of
// another registration is not sent.
func TestOnchainRecordBesideWallet(t *testing.T) {
	walletDir, stateDir := t.TempDir(), t.TempDir()
	b, err := New(Options{CastURL: "http://127.0.0.1:1", StateDir: stateDir, KeyFile: filepath.Join(walletDir, "wallet.json"),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	reg := Registration("v", nil)
	rec := OnchainRecord{Memo: onchain.RegistrationMemo(b.key.Public(), reg), Signature: soltx.Signature{4}.String()}
	if err := SaveOnchainRecord(walletDir, rec); err != nil {
		t.Fatal(err)
	}
	reg.LANURL = "http://192.168.1.9:8081" // not committed
	if sig, err := b.onchainSig(context.Background(), reg); err != nil || sig != rec.Signature {
		t.Fatalf("%q %v, want %s", sig, err, rec.Signature)
	}
	reg.Role = protocol.RoleRelay
	if sig, err := b.onchainSig(context.Background(), reg); err != nil || sig != "" {
		t.Fatalf("another registration's record sent: %q %v", sig, err)
	}
}
