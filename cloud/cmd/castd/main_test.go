package main

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// TestOptionErrorsNameFlags: castd's library errors name Options fields;
// the command names the flag the operator set instead.
func TestOptionErrorsNameFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--state-dir", t.TempDir()}, "castd: --origin: required"},
		{[]string{"--state-dir", t.TempDir(), "--origin", "ftp://o"}, "castd: --origin: "},
		{[]string{"--state-dir", t.TempDir(), "--origin", "http://o", "--sign-window", "-1s"}, "castd: --sign-window: must not be negative"},
	} {
		var out, errb bytes.Buffer
		if code := run(append(tc.args, "--mqtt-listen", "", "--amt-listen", "", "--listen", "127.0.0.1:0"), &out, &errb); code != 2 || !strings.Contains(errb.String(), tc.want) || strings.Contains(errb.String(), "Options.") {
			t.Errorf("%q: exit %d, stderr %q; want 2 and %q", tc.args, code, errb.String(), tc.want)
		}
	}
}

// TestOffAtZero: the flags keep "0: off", which Options spell negative.
func TestOffAtZero(t *testing.T) {
	for in, want := range map[time.Duration]time.Duration{0: -1, time.Second: time.Second, -time.Second: -time.Second} {
		d := in
		if offAtZero(&d); d != want {
			t.Errorf("offAtZero(%v) = %v, want %v", in, d, want)
		}
	}
}
