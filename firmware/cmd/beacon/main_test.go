package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestOptionErrorsNameFlags: the beacon library's errors name Options
// fields; the command names the flag the owner set instead.
func TestOptionErrorsNameFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--state-dir", t.TempDir()}, "beacon: --cast-url: required"},
		{[]string{"--state-dir", t.TempDir(), "--cast-url", "http://127.0.0.1:1", "--amt-join", "192.0.2.1@239.1.1.1"}, "beacon: --amt-join: "},
		{[]string{"--state-dir", t.TempDir(), "--cast-url", "http://127.0.0.1:1", "--allow-host", "*"}, "beacon: --allow-host: "},
	} {
		var out, errb bytes.Buffer
		if code := run(append(tc.args, "--listen", "127.0.0.1:0", "--admin-listen", ""), &out, &errb); code != 2 || !strings.Contains(errb.String(), tc.want) || strings.Contains(errb.String(), "Options.") {
			t.Errorf("%q: exit %d, stderr %q; want 2 and %q", tc.args, code, errb.String(), tc.want)
		}
	}
}
