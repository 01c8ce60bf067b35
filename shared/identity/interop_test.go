package identity

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"

	solana "github.com/gagliardetto/solana-go"
)

// Our key files load in solana-go (which reads solana-keygen files) with the
// same public key, and our signatures verify there.
func TestInteropOurFileInSolanaGo(t *testing.T) {
	dir := t.TempDir()
	for i := 0; i < 5; i++ {
		path := filepath.Join(dir, "k"+string(rune('a'+i))+".json")
		k, err := CreateFile(path)
		if err != nil {
			t.Fatal(err)
		}
		priv, err := solana.PrivateKeyFromSolanaKeygenFile(path)
		if err != nil {
			t.Fatal(err)
		}
		pub := priv.PublicKey()
		if pub.String() != k.ID() {
			t.Fatalf("solana-go reads %s, we wrote %s", pub, k.ID())
		}
		msg := []byte("interop")
		var sig solana.Signature
		copy(sig[:], k.Sign(msg))
		if !pub.Verify(msg, sig) {
			t.Fatal("solana-go does not verify our signature")
		}
		theirs, err := priv.Sign(msg)
		if err != nil {
			t.Fatal(err)
		}
		if !k.Public().Verify(msg, theirs[:]) {
			t.Fatal("we do not verify solana-go's signature")
		}
		if p, err := ParsePublicKey(pub.String()); err != nil || p != k.Public() {
			t.Fatalf("ParsePublicKey(solana-go's base58) = %v, %v", p, err)
		}
	}
}

// A key made by solana-go, written as solana-keygen writes it (serde_json's
// compact array), loads here with the same public key.
func TestInteropSolanaGoKeyLoadsHere(t *testing.T) {
	dir := t.TempDir()
	for i := 0; i < 5; i++ {
		priv, err := solana.NewRandomPrivateKey()
		if err != nil {
			t.Fatal(err)
		}
		nums := make([]int, len(priv))
		for j, b := range priv {
			nums[j] = int(b)
		}
		data, err := json.Marshal(nums)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, "solana-keygen.json")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		k, err := LoadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if k.ID() != priv.PublicKey().String() {
			t.Fatalf("loaded %s, solana-go says %s", k.ID(), priv.PublicKey())
		}
		if string(k.MarshalSolana()) != string(data) {
			t.Fatalf("we would write %s, solana-keygen style is %s", k.MarshalSolana(), data)
		}
	}
}

// solana-go's loader accepts a file whose halves do not match (the design
// notes this); we refuse it.
func TestInteropMismatchRefused(t *testing.T) {
	a, _ := Generate()
	b, _ := Generate()
	raw := append(a.PrivateKey()[:SeedSize:SeedSize], b.PrivateKey()[SeedSize:]...)
	path := filepath.Join(t.TempDir(), "mismatch.json")
	if err := os.WriteFile(path, []byte(solanaArray(raw)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadFile(path); !errors.Is(err, ErrKeyMismatch) {
		t.Fatalf("LoadFile error = %v, want ErrKeyMismatch", err)
	}
	if _, err := solana.PrivateKeyFromSolanaKeygenFile(path); err == nil {
		t.Logf("solana-go accepts the mismatched file (as documented)")
	}
}
