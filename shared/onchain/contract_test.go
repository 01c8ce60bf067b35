package onchain

import (
	"errors"
	"strings"
	"testing"
)

func TestContractMemo(t *testing.T) {
	id := strings.Repeat("0123456789abcdef", 4)
	memo, err := ContractMemo(id)
	if err != nil || memo != "blockcast:contract:v1:"+id {
		t.Fatalf("ContractMemo: %q %v", memo, err)
	}
	if got, err := ParseContractMemo(memo); err != nil || got != id {
		t.Fatalf("ParseContractMemo: %q %v", got, err)
	}
	for _, bad := range []string{
		"",
		strings.ToUpper(id),               // one spelling only
		id[:63],                           // short
		id + "0",                          // long
		strings.Repeat("g", 64),           // not hex
		id[:62] + "\n0",                   // control byte
		"blockcast:contract:v1:" + id[:2], // a memo, not an ID
	} {
		if _, err := ContractMemo(bad); !errors.Is(err, ErrBadContractMemo) {
			t.Errorf("ContractMemo(%q): %v, want ErrBadContractMemo", bad, err)
		}
		if _, err := ParseContractMemo(ContractPrefix + bad); !errors.Is(err, ErrBadContractMemo) {
			t.Errorf("ParseContractMemo(%q): %v, want ErrBadContractMemo", bad, err)
		}
	}
	for _, bad := range []string{"blockcast:day:v1:" + id, "blockcast:contract:v2:" + id, " " + memo, memo + " "} {
		if _, err := ParseContractMemo(bad); !errors.Is(err, ErrBadContractMemo) {
			t.Errorf("ParseContractMemo(%q): %v, want ErrBadContractMemo", bad, err)
		}
	}
}

func FuzzParseContractMemo(f *testing.F) {
	f.Add("blockcast:contract:v1:" + strings.Repeat("ab", 32))
	f.Add("blockcast:contract:v1:")
	f.Add("blockcast:day:v1:2026-12-05:x:1")
	f.Add("blockcast:contract:v1:" + strings.Repeat("AB", 32))
	f.Fuzz(func(t *testing.T, memo string) {
		id, err := ParseContractMemo(memo)
		if err != nil {
			return
		}
		// What parses is the one canonical memo of its ID.
		again, err := ContractMemo(id)
		if err != nil || again != memo {
			t.Fatalf("%q parsed to %q, which makes %q (%v)", memo, id, again, err)
		}
	})
}
