package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/blockcast/beacon/shared/identity"
)

// TestReceiptsCheckBadInput: a proof file that is not one, or a call
// without what the check needs, gets a clear error and no lookup.
func TestReceiptsCheckBadInput(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.json")
	os.WriteFile(bad, []byte(`{"day":"2026-12-04:evil","receipt":{}}`), 0o600)
	huge := filepath.Join(dir, "huge.json")
	os.WriteFile(huge, bytes.Repeat([]byte(" "), 2<<20), 0o600)
	k, _ := identity.Generate()
	rpc := "http://127.0.0.1:1"
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"receipts"}, 2, "Usage"},
		{[]string{"receipts", "check", "--solana-rpc", rpc, "--cast-key", k.ID()}, 2, "one proof file"},
		{[]string{"receipts", "check", bad, "--cast-key", k.ID()}, 2, "--solana-rpc"},
		{[]string{"receipts", "check", bad, "--solana-rpc", rpc, "--cast-key", "nope"}, 2, "CAST key"},
		{[]string{"receipts", "check", bad, "--solana-rpc", rpc, "--cast-key", k.ID()}, 1, "day proof does not hold"},
		{[]string{"receipts", "check", huge, "--solana-rpc", rpc, "--cast-key", k.ID()}, 1, "day proof does not hold"},
		{[]string{"receipts", "check", filepath.Join(dir, "missing.json"), "--solana-rpc", rpc, "--cast-key", k.ID()}, 1, "no such file"},
	} {
		var o, e bytes.Buffer
		if code := run(c.args, &o, &e); code != c.code || !strings.Contains(e.String(), c.want) {
			t.Errorf("%v: %d %q, want %d and %q", c.args, code, e.String(), c.code, c.want)
		}
	}
}
