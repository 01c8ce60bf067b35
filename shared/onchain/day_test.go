package onchain

import (
	"errors"
	"testing"
	"time"

	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/receipt"
)

func TestDayLabelAndMemo(t *testing.T) {
	d := time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC)
	if got := DayLabel(d, 24*time.Hour); got != "2026-12-04" {
		t.Fatalf("label %q", got)
	}
	if got := DayLabel(d.Add(1500*time.Millisecond), 500*time.Millisecond); got != "20261204T000001.500Z" || !validLabel(got) {
		t.Fatalf("short-day label %q", got)
	}
	var root receipt.Hash
	root[0] = 1
	if got := DayMemo("2026-12-04", root, 7); got != "blockcast:day:v1:2026-12-04:"+identity.EncodeBase58(root[:])+":7" {
		t.Fatalf("memo %q", got)
	}
}

// TestDecodeDayProofRefuses: a proof file that could make the checked memo
// say something else, or is not a proof, is refused before any lookup.
func TestDecodeDayProofRefuses(t *testing.T) {
	for _, in := range []string{
		``, `{}`, `[]`, `{"day":"2026-12-04:x","receipt":{}}`, `{"day":"","receipt":{}}`,
		`{"day":"2026-12-04","receipt":{},"extra":1}`, `{"day":"2026-12-04"}`, `{"day":"2026-12-04","receipt":{}} {}`,
	} {
		if _, err := DecodeDayProof([]byte(in)); !errors.Is(err, ErrBadDayProof) {
			t.Errorf("%q: %v", in, err)
		}
	}
}

// FuzzDecodeDayProof: any file decodes to a clear error or a proof whose
// Check answers without panicking.
func FuzzDecodeDayProof(f *testing.F) {
	kp, _ := identity.FromSeed(make([]byte, 32))
	rs := []receipt.Record{{TS: 1700000001000, Key: receipt.HexHash(receipt.KeyHash("/a")), Bytes: 10, Status: 200, Path: receipt.PathHit}}
	s, _ := receipt.Sign(kp, receipt.Summarize(kp.ID(), 1, 1700000000000, 1700000060000, rs, receipt.Overflow{}))
	leaf := DayLeaf(s.Hash())
	good := `{"day":"2026-12-04","index":0,"n":1,"leaf":"` + receipt.HexHash(leaf).String() + `","proof":[],"root":"` +
		receipt.HexHash(leaf).String() + `","receipt":` + string(s.Marshal()) + `,"anchor":{"signature":"1111","memo":"m","cast_key":"k"}}`
	if p, err := DecodeDayProof([]byte(good)); err != nil {
		f.Fatal(err)
	} else if _, err := p.Check(); err != nil {
		f.Fatal(err)
	}
	f.Add([]byte(good))
	f.Add([]byte(`{"day":"x","receipt":1,"proof":["00"]}`))
	f.Add([]byte(`{"day":"2026-12-04","index":5,"n":2,"receipt":{"r":1}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := DecodeDayProof(b)
		if err != nil {
			if !errors.Is(err, ErrBadDayProof) {
				t.Fatalf("error without ErrBadDayProof: %v", err)
			}
			return
		}
		if _, err := p.Check(); err != nil && !errors.Is(err, ErrBadDayProof) {
			t.Fatalf("check error without ErrBadDayProof: %v", err)
		}
		_ = p.Memo()
	})
}
