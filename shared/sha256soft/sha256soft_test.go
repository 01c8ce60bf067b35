package sha256soft

import (
	"crypto/sha256"
	"math/rand/v2"
	"testing"
)

// TestMatchesCryptoSHA256: every length around the block and padding
// boundaries, the FIPS 180-4 examples, and a symbol written in two parts
// (header, payload) as manifest.SymbolDigest does.
func TestMatchesCryptoSHA256(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	data := make([]byte, 3000)
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	for n := 0; n <= 300; n++ {
		if got, want := Sum256(data[:n]), sha256.Sum256(data[:n]); got != want {
			t.Fatalf("%d bytes: %x, want %x", n, got, want)
		}
	}
	for _, tc := range []struct {
		in   string
		want string
	}{
		{"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
		{"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
		{"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
	} {
		got := Sum256([]byte(tc.in))
		if hex := hexOf(got[:]); hex != tc.want {
			t.Errorf("%q: %s, want %s", tc.in, hex, tc.want)
		}
	}
	for _, split := range []int{0, 1, 15, 63, 64, 65, 1344} {
		var d Digest
		d.Reset()
		d.Write(data[:split])
		d.Write(data[split : split+1359])
		if got, want := d.Sum256(), sha256.Sum256(data[:split+1359]); got != want {
			t.Fatalf("split at %d: %x, want %x", split, got, want)
		}
	}
}

func hexOf(b []byte) string {
	const digits = "0123456789abcdef"
	s := make([]byte, 0, 2*len(b))
	for _, c := range b {
		s = append(s, digits[c>>4], digits[c&15])
	}
	return string(s)
}

// FuzzSum256: any input, split anywhere, hashes as crypto/sha256 does.
func FuzzSum256(f *testing.F) {
	f.Add([]byte("abc"), uint16(1))
	f.Add(make([]byte, 1359), uint16(15))
	f.Add(make([]byte, 119), uint16(64))
	f.Fuzz(func(t *testing.T, data []byte, split uint16) {
		s := int(split) % (len(data) + 1)
		var d Digest
		d.Reset()
		d.Write(data[:s])
		d.Write(data[s:])
		if got, want := d.Sum256(), sha256.Sum256(data); got != want {
			t.Fatalf("%x", data)
		}
	})
}

func BenchmarkSum256(b *testing.B) {
	data := make([]byte, 1359)
	b.SetBytes(int64(len(data)))
	for range b.N {
		Sum256(data)
	}
}
