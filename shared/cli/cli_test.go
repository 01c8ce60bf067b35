package cli

import (
	"bytes"
	"flag"
	"strings"
	"testing"
	"time"
)

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		err  bool
	}{
		{"1048576", 1 << 20, false},
		{"64MiB", 64 << 20, false},
		{"64M", 64 << 20, false},
		{"64mb", 64 << 20, false},
		{"1G", 1 << 30, false},
		{"500k", 500 << 10, false},
		{" 2 TiB ", 2 << 40, false},
		{"", 0, true},
		{"MiB", 0, true},
		{"12 parsecs", 0, true},
		{"-5M", 0, true},
		{"99999999999999999999", 0, true},
		{"9999999999T", 0, true},
	}
	for _, tc := range tests {
		got, err := ParseSize(tc.in)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d, err %v", tc.in, got, err, tc.want, tc.err)
		}
	}
}

func TestFormat(t *testing.T) {
	if got := FormatSize(64 << 20); got != "64MiB" {
		t.Errorf("FormatSize = %q", got)
	}
	if got := FormatSize(1000); got != "1000B" {
		t.Errorf("FormatSize = %q", got)
	}
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1536: "1.5 KiB", 5 << 30: "5.0 GiB"} {
		if got := FormatBytes(n); got != want {
			t.Errorf("FormatBytes(%d) = %q want %q", n, got, want)
		}
	}
}

func TestApplyEnv(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	listen := fs.String("listen", ":1", "")
	castURL := fs.String("cast-url", "", "")
	var size Size
	fs.Var(&size, "cache-size", "")
	every := fs.Duration("check-interval", time.Second, "")
	if err := fs.Parse([]string{"--listen", ":9"}); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"BEACON_LISTEN":         ":7", // the command line wins
		"BEACON_CAST_URL":       "http://c",
		"BEACON_CACHE_SIZE":     "16MiB",
		"BEACON_CHECK_INTERVAL": "5s",
	}
	if err := ApplyEnv(fs, "BEACON", func(k string) string { return env[k] }); err != nil {
		t.Fatal(err)
	}
	if *listen != ":9" || *castURL != "http://c" || size != 16<<20 || *every != 5*time.Second {
		t.Fatalf("got %s %s %d %s", *listen, *castURL, size, *every)
	}
	env["BEACON_CHECK_INTERVAL"] = "soon"
	fs2 := flag.NewFlagSet("y", flag.ContinueOnError)
	fs2.Duration("check-interval", time.Second, "")
	err := ApplyEnv(fs2, "BEACON", func(k string) string { return env[k] })
	if err == nil || !strings.Contains(err.Error(), "BEACON_CHECK_INTERVAL") {
		t.Fatalf("bad env value: %v", err)
	}
}

func TestUsageNamesEnv(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	var out bytes.Buffer
	fs.SetOutput(&out)
	fs.String("cast-url", "", "base URL of castd")
	fs.Usage = Usage(fs, "BEACON", "intro\n")
	fs.Usage()
	if !strings.Contains(out.String(), "--cast-url") || !strings.Contains(out.String(), "$BEACON_CAST_URL") {
		t.Fatalf("usage:\n%s", out.String())
	}
}

func TestLogger(t *testing.T) {
	var buf bytes.Buffer
	l, err := LogOptions{Format: "json", Level: "warn"}.NewLogger(&buf)
	if err != nil {
		t.Fatal(err)
	}
	l.Info("hidden")
	l.Warn("shown")
	if strings.Contains(buf.String(), "hidden") || !strings.Contains(buf.String(), `"msg":"shown"`) {
		t.Fatalf("log: %s", buf.String())
	}
	if _, err := (LogOptions{Format: "xml"}).NewLogger(&buf); err == nil {
		t.Fatal("xml format accepted")
	}
	if _, err := (LogOptions{Level: "loud"}).NewLogger(&buf); err == nil {
		t.Fatal("bad level accepted")
	}
}
