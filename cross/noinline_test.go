package cross

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// matchPattern reports whether a go command package pattern (a path, or a
// path followed by /...) matches pkg.
func matchPattern(pattern, pkg string) bool {
	if base, ok := strings.CutSuffix(pattern, "/..."); ok {
		return pkg == base || strings.HasPrefix(pkg, base+"/")
	}
	return pkg == pattern
}

// TestNoInlineSpareTheDataPath keeps the per-packet and per-byte code
// inlined: a NoInline pattern that matched one of these would slow the
// receive path (and, for a package of small helpers, every caller).
func TestNoInlineSpareTheDataPath(t *testing.T) {
	hot := []string{
		"runtime", "sync", "sync/atomic", "internal/poll", "net", "syscall", "io", "bufio", "bytes",
		"time", "strconv", "encoding/binary", "compress/flate", "compress/gzip", "hash/crc32",
		"crypto/internal/fips140/aes", "crypto/internal/fips140/aes/gcm", "crypto/internal/fips140/sha256",
		"crypto/internal/fips140/edwards25519", "crypto/internal/fips140/edwards25519/field",
		"crypto/internal/fips140/bigmod", "crypto/internal/fips140/nistec/fiat",
		"vendor/golang.org/x/crypto/chacha20", "vendor/golang.org/x/crypto/chacha20poly1305",
		"vendor/golang.org/x/crypto/internal/poly1305",
		"crypto/sha256", "crypto/ed25519", "crypto/cipher", "crypto/aes",
		"github.com/pion/dtls/v2", "github.com/pion/dtls/v2/pkg/protocol/recordlayer", "github.com/pion/transport/v2/udp",
		"github.com/klauspost/reedsolomon", "golang.org/x/net/ipv4", "golang.org/x/sys/unix",
		Module + "/shared/objrecv", Module + "/shared/fec", Module + "/shared/alc", Module + "/shared/manifest",
		// Per request, not per packet, like net/http (already without
		// inlining): shared/httpcache and firmware/beacon are not here.
		Module + "/shared/objstore", Module + "/firmware/amtgw", Module + "/firmware/mcrecv",
	}
	for _, p := range NoInline {
		for _, h := range hot {
			if matchPattern(p, h) {
				t.Errorf("NoInline pattern %q matches %s, which the data path runs", p, h)
			}
		}
	}
}

// TestNoInlinePatternsMatch finds dead or misspelt NoInline patterns: each
// must match a package the mipsle beacon with the multicast path links (a
// pattern that matches nothing is silently ignored by the go command).
func TestNoInlinePatternsMatch(t *testing.T) {
	tg, err := Lookup("mipsle")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	deps, err := ListDeps(ctx, root(t), BeaconPkg, tg)
	if err != nil {
		t.Fatal(err)
	}
	// The packages the probe adds (sizeprobe.go.txt's imports).
	probe, err := ListDeps(ctx, root(t), "./shared/objrecv", tg)
	if err != nil {
		t.Fatal(err)
	}
	dtls, err := ListDeps(ctx, root(t), "./shared/dtlschan", tg)
	if err != nil {
		t.Fatal(err)
	}
	deps = append(append(deps, probe...), dtls...)
	for _, p := range NoInline {
		found := false
		for _, d := range deps {
			if matchPattern(p, d) {
				found = true
				break
			}
		}
		if !found {
			t.Errorf("NoInline pattern %q matches no package the beacon links", p)
		}
	}
	if got := GCFlags(); len(got) != len(NoInline) || got[0] != "-gcflags="+NoInline[0]+"=-l" {
		t.Errorf("GCFlags() = %q", got)
	}
}

// TestNoInlineInEveryBuild keeps the Makefile's and the OpenWrt feed's
// builds on cross.NoInline, so what routers install is what `make size`
// measured.
func TestNoInlineInEveryBuild(t *testing.T) {
	list := strings.Join(NoInline, " ")
	for _, c := range []struct{ file, want string }{
		{"Makefile", "BEACON_NOINLINE := " + list + "\n"},
		{"Makefile", "BEACON_GCFLAGS := $(foreach p,$(BEACON_NOINLINE),-gcflags=$(p)=-l)\n"},
		{"Makefile", "$(BEACON_GCFLAGS) -ldflags '$(LDFLAGS)' -o $(BIN)/ ./firmware/cmd/beacon\n"},
		{"openwrt/net/blockcast-beacon/Makefile", "BEACON_NOINLINE:=" + list + "\n"},
		{"openwrt/net/blockcast-beacon/Makefile", "\t$(call GoPackage/Build/Compile,$(foreach p,$(BEACON_NOINLINE),-gcflags '$(p)=-l $(strip $(GO_PKG_DEFAULT_GCFLAGS))'))\n"},
	} {
		b, err := os.ReadFile(filepath.Join(root(t), c.file))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(b, []byte(c.want)) {
			t.Errorf("%s lacks %q", c.file, c.want)
		}
	}
}
