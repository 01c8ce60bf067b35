package receipt

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/blockcast/beacon/shared/identity"
)

var update = flag.Bool("update", false, "rewrite testdata golden files")

// refRoot is RFC 9162's recursive definition, to check Root against.
func refRoot(l []Hash) Hash {
	switch len(l) {
	case 0:
		return sha256.Sum256(nil)
	case 1:
		return l[0]
	}
	k := split(len(l))
	return nodeHash(refRoot(l[:k]), refRoot(l[k:]))
}

func leaves(n int) []Hash {
	out := make([]Hash, n)
	for i := range out {
		out[i] = Record{TS: int64(1000 + i), Key: HexHash(KeyHash(fmt.Sprint("/o/", i))), Bytes: uint64(i), Status: 200}.LeafHash()
	}
	return out
}

func TestMerkleProofs(t *testing.T) {
	for n := 1; n <= 33; n++ {
		l := leaves(n)
		root := Root(l)
		if root != refRoot(l) {
			t.Fatalf("n=%d: root differs from RFC 9162's definition", n)
		}
		for i := range n {
			p, err := Proof(l, i)
			if err != nil {
				t.Fatal(err)
			}
			if err := VerifyInclusion(l[i], uint64(i), uint64(n), p, root); err != nil {
				t.Fatalf("n=%d i=%d: %v", n, i, err)
			}
			// A proof must not verify for another leaf, index, size or root.
			other := l[(i+1)%n]
			if n > 1 && VerifyInclusion(other, uint64(i), uint64(n), p, root) == nil {
				t.Fatalf("n=%d i=%d: proof verifies another leaf", n, i)
			}
			if n > 1 && VerifyInclusion(l[i], uint64((i+1)%n), uint64(n), p, root) == nil {
				t.Fatalf("n=%d i=%d: proof verifies at another index", n, i)
			}
			if len(p) > 0 {
				p[0][0] ^= 1
				if VerifyInclusion(l[i], uint64(i), uint64(n), p, root) == nil {
					t.Fatalf("n=%d i=%d: tampered proof verifies", n, i)
				}
			}
		}
	}
	if _, err := Proof(leaves(3), 3); err == nil {
		t.Fatal("proof of a leaf past the end")
	}
}

func testKey(t testing.TB, b byte) *identity.Keypair {
	kp, err := identity.FromSeed(bytes.Repeat([]byte{b}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

func testRecords() []Record {
	return []Record{
		{TS: 1700000000100, Key: HexHash(KeyHash("/video/a.mp4")), Bytes: 1000, Status: 200, Path: PathFill},
		{TS: 1700000000200, Key: HexHash(KeyHash("/video/a.mp4")), Bytes: 1000, Status: 200, Path: PathHit},
		{TS: 1700000000300, Key: HexHash(KeyHash("/video/b.mp4")), Bytes: 500, Status: 206, Path: PathMulticast},
	}
}

func testReceipt(t testing.TB) *Signed {
	kp := testKey(t, 7)
	r := Summarize(kp.ID(), 1, 1700000000000, 1700000600000, testRecords(), Overflow{Requests: 2, ByPath: PathBytes{Hit: 10}})
	s, err := Sign(kp, r)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSignOpen(t *testing.T) {
	s := testReceipt(t)
	kp := testKey(t, 7)
	got, err := Open(s.Marshal(), kp.Public())
	if err != nil {
		t.Fatal(err)
	}
	r := got.Receipt
	if r.Requests != 5 || r.Bytes != 2510 || r.Records != 3 || r.Objects != 2 || r.ByPath != (PathBytes{Hit: 1010, Fill: 1000, Multicast: 500}) {
		t.Fatalf("receipt %+v", r)
	}
	if r.Other.Requests != 2 || r.Other.Bytes != 10 || len(r.Top) != 2 || r.Top[0].Bytes != 2000 {
		t.Fatalf("objects %+v other %+v", r.Top, r.Other)
	}
	if got.Hash() != s.Hash() {
		t.Fatal("hash changed in a round trip")
	}
}

// TestForgeries: every change to a signed receipt, and every receipt that
// is not the node's own, is refused.
func TestForgeries(t *testing.T) {
	s := testReceipt(t)
	node := testKey(t, 7).Public()
	wire := s.Marshal()
	raise := bytes.Replace(wire, []byte(`"requests":5`), []byte(`"requests":6`), 1) // also breaks the sums
	inflate := bytes.Replace(wire, []byte(`"seq":1,`), []byte(`"seq":2,`), 1)       // consistent, but not what was signed
	other := testKey(t, 8)
	r := s.Receipt
	r.Node = other.ID()
	byOther, err := Sign(other, r)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		wire []byte
		key  identity.PublicKey
		want error
	}{
		{"changed count", raise, node, ErrMalformed},
		{"changed seq", inflate, node, ErrBadSig},
		{"another node's receipt", byOther.Marshal(), node, ErrWrongNode},
		{"sent by another node", wire, other.Public(), ErrWrongNode},
		{"trailing data", append(append([]byte{}, wire...), '{', '}'), node, ErrMalformed},
		{"unknown field", bytes.Replace(wire, []byte(`{"sig"`), []byte(`{"x":1,"sig"`), 1), node, ErrMalformed},
		{"not JSON", []byte("hello"), node, ErrMalformed},
	} {
		if _, err := Open(c.wire, c.key); !errors.Is(err, c.want) {
			t.Errorf("%s: err %v, want %v", c.name, err, c.want)
		}
	}
	if _, err := Sign(other, s.Receipt); err == nil {
		t.Error("signed a receipt for another node")
	}
}

func TestValidate(t *testing.T) {
	base := testReceipt(t).Receipt
	for _, c := range []struct {
		name string
		mut  func(*Receipt)
	}{
		{"version", func(r *Receipt) { r.V = 2 }},
		{"seq 0", func(r *Receipt) { r.Seq = 0 }},
		{"end before start", func(r *Receipt) { r.End = r.Start }},
		{"too long", func(r *Receipt) { r.End = r.Start + MaxInterval.Milliseconds() + 1 }},
		{"path sum", func(r *Receipt) { r.ByPath.Hit++ }},
		{"records over requests", func(r *Receipt) { r.Records = r.Requests + 1 }},
		{"object sum", func(r *Receipt) { r.Top[0].Bytes++ }},
		{"object twice", func(r *Receipt) { r.Top[1].Key = r.Top[0].Key }},
		{"huge", func(r *Receipt) { r.Requests = 1 << 60 }},
		{"bad node", func(r *Receipt) { r.Node = "x" }},
	} {
		r := base
		r.Top = append([]Object(nil), base.Top...)
		c.mut(&r)
		if err := r.Validate(); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v", c.name, err)
		}
	}
}

func TestArgs(t *testing.T) {
	for _, bad := range []string{"", "0", "01", "1,,2", "-1", "1 ", "99999999999999999", strings.Repeat("1,", MaxAckSeqs) + "1"} {
		if _, err := ParseAck(bad); err == nil {
			t.Errorf("ParseAck(%q) accepted", bad)
		}
	}
	if s, err := ParseAck(FormatAck([]uint64{1, 22, 333})); err != nil || len(s) != 3 || s[2] != 333 {
		t.Fatalf("ParseAck: %v %v", s, err)
	}
	for _, bad := range []string{"", "1", "1:", ":1", "0:1", "1:1,1", "1:x"} {
		if _, _, err := ParseAudit(bad); err == nil {
			t.Errorf("ParseAudit(%q) accepted", bad)
		}
	}
	if seq, idx, err := ParseAudit(FormatAudit(9, []uint64{0, 4})); err != nil || seq != 9 || len(idx) != 2 {
		t.Fatalf("ParseAudit: %v %v %v", seq, idx, err)
	}
}

func testRecordsReply(t testing.TB) *Records {
	recs := testRecords()
	l := make([]Hash, len(recs))
	for i, r := range recs {
		l[i] = r.LeafHash()
	}
	out := &Records{Seq: 1, Root: HexHash(Root(l)), N: uint64(len(l))}
	for _, i := range []int{0, 2} {
		p, _ := Proof(l, i)
		it := Item{I: uint64(i), Record: recs[i]}
		for _, h := range p {
			it.Proof = append(it.Proof, HexHash(h))
		}
		out.Items = append(out.Items, it)
	}
	return out
}

func TestRecordsReply(t *testing.T) {
	rs := testRecordsReply(t)
	raw, err := marshal(rs)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeRecords(raw)
	if err != nil {
		t.Fatal(err)
	}
	root := Hash(rs.Root)
	if err := got.Verify(root, 3); err != nil {
		t.Fatal(err)
	}
	// A record changed after the fact (more bytes claimed) fails its proof.
	got.Items[1].Record.Bytes++
	if err := got.Verify(root, 3); !errors.Is(err, ErrBadProof) {
		t.Fatalf("changed record: %v", err)
	}
	got.Items[1].Record.Bytes--
	if err := got.Verify(root, 4); !errors.Is(err, ErrBadProof) {
		t.Fatalf("other size: %v", err)
	}
}

// TestGolden pins the wire forms: a signed receipt (its signature is
// deterministic: ed25519), an audit reply, and the command arguments.
func TestGolden(t *testing.T) {
	rs, _ := marshal(testRecordsReply(t))
	for _, c := range []struct {
		file string
		b    []byte
	}{
		{"receipt.golden", append(testReceipt(t).Marshal(), '\n')},
		{"records.golden", append(rs, '\n')},
		{"args.golden", []byte(FormatAck([]uint64{1, 2, 3}) + "\n" + FormatAudit(7, []uint64{0, 5}) + "\n")},
	} {
		path := filepath.Join("testdata", c.file)
		if *update {
			if err := os.WriteFile(path, c.b, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(c.b, want) {
			t.Errorf("%s changed:\n got %s\nwant %s", c.file, c.b, want)
		}
	}
	// And the golden receipt still opens.
	raw, _ := os.ReadFile(filepath.Join("testdata", "receipt.golden"))
	if _, err := Open(bytes.TrimSpace(raw), testKey(t, 7).Public()); err != nil {
		t.Fatal(err)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(testReceipt(f).Marshal())
	f.Add([]byte(`{"sig":"","receipt":{}}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := Decode(b)
		if err != nil {
			return
		}
		if err := s.Receipt.Validate(); err != nil {
			t.Fatalf("Decode returned an invalid receipt: %v", err)
		}
		// What decodes, re-encodes to something that decodes the same.
		again, err := Decode(s.Marshal())
		if err != nil || again.Hash() != s.Hash() {
			t.Fatalf("re-decode: %v", err)
		}
	})
}

func FuzzDecodeRecords(f *testing.F) {
	raw, _ := marshal(testRecordsReply(f))
	f.Add(raw)
	f.Add([]byte(`{"seq":1,"root":"` + strings.Repeat("0", 64) + `","n":0,"error":"gone"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		rs, err := DecodeRecords(b)
		if err != nil {
			return
		}
		for _, it := range rs.Items {
			if it.I >= rs.N || it.Record.Validate() != nil {
				t.Fatalf("DecodeRecords let through %+v", it)
			}
		}
		rs.Verify(Hash(rs.Root), rs.N) // must not panic
	})
}

func FuzzParseArgs(f *testing.F) {
	f.Add("1,2,3")
	f.Add("7:0,5")
	f.Add("18446744073709551616")
	f.Fuzz(func(t *testing.T, s string) {
		if seqs, err := ParseAck(s); err == nil {
			if FormatAck(seqs) != s {
				t.Fatalf("ack %q reads as %v", s, seqs)
			}
		}
		if seq, idx, err := ParseAudit(s); err == nil {
			if FormatAudit(seq, idx) != s {
				t.Fatalf("audit %q reads as %d %v", s, seq, idx)
			}
		}
	})
}

func FuzzParseRecord(f *testing.F) {
	f.Add(testRecords()[0].AppendBinary(nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseRecord(b)
		if err != nil {
			return
		}
		if !bytes.Equal(r.AppendBinary(nil), b) {
			t.Fatal("record does not round-trip")
		}
	})
}
