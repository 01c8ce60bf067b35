package cli

import (
	"bytes"
	"flag"
	"io"
	"strings"
	"testing"
)

func TestParseVerb(t *testing.T) {
	tests := []struct {
		args     []string
		env      map[string]string
		verb     string
		code     int
		ok       bool
		x        string
		stderrIs string
	}{
		{args: []string{"prove", "--x", "1"}, verb: "prove", ok: true, x: "1"},
		{args: []string{"prove"}, env: map[string]string{"CASTD_X": "e"}, verb: "prove", ok: true, x: "e"},
		{args: nil, code: 2, stderrIs: "want a command: prove, check"},
		{args: []string{"--x", "1"}, code: 2, stderrIs: "want a command"},
		{args: []string{"--help"}, code: 0},
		{args: []string{"prove", "--nope"}, code: 2},
		{args: []string{"drop"}, code: 2, stderrIs: `unknown command "drop"`},
	}
	for _, tc := range tests {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		x := fs.String("x", "", "")
		var stderr bytes.Buffer
		verb, code, ok := ParseVerb(fs, tc.args, "castd receipts", "CASTD", func(k string) string { return tc.env[k] }, &stderr, "prove", "check")
		if verb != tc.verb || code != tc.code || ok != tc.ok || (ok && *x != tc.x) {
			t.Errorf("%q: got %q %d %v x=%q", tc.args, verb, code, ok, *x)
		}
		if !strings.Contains(stderr.String(), tc.stderrIs) {
			t.Errorf("%q: stderr %q, want %q", tc.args, stderr.String(), tc.stderrIs)
		}
	}
}
