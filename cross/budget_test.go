package cross

import (
	"bytes"
	"context"
	"debug/buildinfo"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// pkgVersionRE is what opkg, apk and dpkg all order the same way.
var pkgVersionRE = regexp.MustCompile(`^[0-9]+(\.[0-9]+)*$`)

func TestCheckImports(t *testing.T) {
	tests := []struct {
		name string
		deps []string
		want []string
	}{
		{"clean", []string{"net/http", "go.etcd.io/bbolt", "github.com/blockcast/beacon/shared/identity"}, nil},
		{"solana-go subpackage", []string{"fmt", "github.com/gagliardetto/solana-go/rpc"}, []string{"github.com/gagliardetto/solana-go/rpc"}},
		{"exact path", []string{"go.uber.org/zap"}, []string{"go.uber.org/zap"}},
		{"prefix is not a path prefix", []string{"go.uber.org/zapper", "github.com/prometheusx/foo"}, nil},
		{"mochi broker", []string{"github.com/mochi-mqtt/server/v2/packets"}, []string{"github.com/mochi-mqtt/server/v2/packets"}},
		{"a cloud package", []string{"github.com/blockcast/beacon/cloud/registry"}, []string{"github.com/blockcast/beacon/cloud/registry"}},
		{"cloudy is not cloud", []string{"github.com/blockcast/beacon/cloudy"}, nil},
		{"several", []string{"github.com/klauspost/compress/zstd", "net", "github.com/miekg/dns", "google.golang.org/grpc/codes"},
			[]string{"github.com/klauspost/compress/zstd", "github.com/miekg/dns", "google.golang.org/grpc/codes"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := CheckImports(tt.deps, ForbiddenImports); !slices.Equal(got, tt.want) {
				t.Errorf("CheckImports = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestForbiddenImports guards the beacon's dependency list, the way
// tailscale's depaware does: each forbidden package costs megabytes of a
// router's flash, or belongs to castd.
func TestForbiddenImports(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, name := range []string{"mipsle", "arm64"} {
		tg, err := Lookup(name)
		if err != nil {
			t.Fatal(err)
		}
		deps, err := ListDeps(ctx, root(t), BeaconPkg, tg)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(deps, "github.com/blockcast/beacon/firmware/cmd/beacon") {
			t.Fatalf("%s: go list -deps did not list the beacon itself: %v", name, deps)
		}
		if bad := CheckImports(deps, ForbiddenImports); len(bad) > 0 {
			t.Errorf("%s: the beacon links forbidden packages: %v", name, bad)
		}
	}
}

// TestDepsBuildWithGo123 checks that every module the beacon links declares
// go 1.23 or older: the OpenWrt 24.10 feed builds it with Go 1.23 and
// GOTOOLCHAIN=local, which refuses anything newer.
func TestDepsBuildWithGo123(t *testing.T) {
	tg, err := Lookup("mipsle")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "list", "-deps", "-f", "{{with .Module}}{{.Path}} {{.GoVersion}}{{end}}", BeaconPkg)
	cmd.Dir = root(t)
	cmd.Env = append(append(os.Environ(), "GOFLAGS=", "GOTOOLCHAIN=local"), tg.Env()...)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	seen := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || seen[f[0]] {
			continue
		}
		seen[f[0]] = true
		if len(f) == 2 && !goVersionAtMost(f[1], 1, 23) {
			t.Errorf("module %s declares go %s; the OpenWrt 24.10 feed builds with Go 1.23", f[0], f[1])
		}
	}
	if !seen["github.com/blockcast/beacon"] {
		t.Fatalf("the main module is missing from %q", out)
	}
}

func goVersionAtMost(v string, major, minor int) bool {
	var ma, mi int
	if _, err := fmt.Sscanf(v, "%d.%d", &ma, &mi); err != nil {
		return false
	}
	return ma < major || (ma == major && mi <= minor)
}

func TestGoVersionAtMost(t *testing.T) {
	tests := []struct {
		v    string
		want bool
	}{{"1.23.0", true}, {"1.23", true}, {"1.22.5", true}, {"1.18", true}, {"1.24", false}, {"1.25.1", false}, {"2.0", false}, {"x", false}}
	for _, tt := range tests {
		if got := goVersionAtMost(tt.v, 1, 23); got != tt.want {
			t.Errorf("goVersionAtMost(%q) = %v", tt.v, got)
		}
	}
}

func TestSizeReport(t *testing.T) {
	mipsle, err := Lookup("mipsle")
	if err != nil {
		t.Fatal(err)
	}
	arm64, err := Lookup("arm64")
	if err != nil {
		t.Fatal(err)
	}
	m := &Manifest{Artifacts: []Artifact{
		{Target: mipsle, Binary: "/x/mipsle/beacon", Size: 9_000_000},
		{Target: arm64, Binary: "/x/arm64/beacon", Size: 9_500_000},
	}}
	ok := []PackageFile{
		{Target: "mipsle", Format: "ipk", Size: 3_500_000, Path: "/p/a_mipsel_24kc.ipk"},
		{Target: "mipsle", Format: "apk", Size: 3_600_000, Path: "/p/a_mipsel_24kc.apk"},
		{Target: "arm64", Format: "deb", Size: 3_000_000, Path: "/p/a_arm64.deb"},
	}
	tests := []struct {
		name    string
		binary  int64
		pkgs    []PackageFile
		wantErr string
	}{
		{"within", 9_000_000, ok, ""},
		{"binary over", 10_000_001, ok, "mipsle binary is 10.00 MB"},
		{"ipk over", 9_000_000, append(slices.Clone(ok[1:]), PackageFile{Target: "mipsle", Format: "ipk", Size: 4_000_001, Path: "/p/big_mipsel_24kc.ipk"}), "big_mipsel_24kc.ipk is 4.00 MB"},
		{"apk missing", 9_000_000, []PackageFile{ok[0]}, "no mipsle .apk package"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m.Artifacts[0].Size = tt.binary
			var out bytes.Buffer
			err := SizeReport(&out, m, tt.pkgs, FlashBudget)
			if !strings.Contains(out.String(), "mipsle") || !strings.Contains(out.String(), "arm64") {
				t.Errorf("report lacks a target:\n%s", out.String())
			}
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if !strings.Contains(out.String(), "within budget") {
					t.Errorf("report:\n%s", out.String())
				}
				return
			}
			if !errors.Is(err, ErrOverBudget) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err %v, want ErrOverBudget with %q", err, tt.wantErr)
			}
		})
	}
}

func TestPackagesFor(t *testing.T) {
	dir := t.TempDir()
	names := []string{
		"blockcast-beacon_1.2.3-r1_mipsel_24kc.ipk",
		"blockcast-beacon-1.2.3-r1_mipsel_24kc.apk",
		"blockcast-beacon_1.2.3-r1_mips_24kc.ipk",
		"blockcast-beacon_1.2.3-1_arm64.deb",
		"blockcast-beacon_1.2.3-1_mipsel.deb", // mipsle gets no deb
		"notes.txt",
	}
	for _, n := range names {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(n), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var m Manifest
	for _, n := range []string{"mipsle", "mips", "arm64"} {
		tg, err := Lookup(n)
		if err != nil {
			t.Fatal(err)
		}
		m.Artifacts = append(m.Artifacts, Artifact{Target: tg})
	}
	got, err := PackagesFor(&m, dir)
	if err != nil {
		t.Fatal(err)
	}
	var summary []string
	for _, p := range got {
		summary = append(summary, p.Target+"/"+p.Format+"/"+filepath.Base(p.Path))
	}
	want := []string{
		"arm64/deb/blockcast-beacon_1.2.3-1_arm64.deb",
		"mips/ipk/blockcast-beacon_1.2.3-r1_mips_24kc.ipk",
		"mipsle/apk/blockcast-beacon-1.2.3-r1_mipsel_24kc.apk",
		"mipsle/ipk/blockcast-beacon_1.2.3-r1_mipsel_24kc.ipk",
	}
	if !slices.Equal(summary, want) {
		t.Errorf("PackagesFor = %v, want %v", summary, want)
	}
}

// TestFlashBudget builds the mipsle beacon as make cross does and holds it
// to the budget; the package half is in TestOpenWrtPackages.
func TestFlashBudget(t *testing.T) {
	a := built(t, FlashBudget.Target)
	t.Logf("%s beacon: %d bytes (budget %d)", a.Target.Name, a.Size, FlashBudget.MaxBinary)
	if a.Size > FlashBudget.MaxBinary {
		t.Errorf("%s beacon is %d bytes, over the %d-byte budget", a.Target.Name, a.Size, FlashBudget.MaxBinary)
	}
	checkELF(t, a)
}

// checkELF checks a is a stripped, static Linux executable for its target.
func checkELF(t *testing.T, a Artifact) {
	t.Helper()
	f, err := elf.Open(a.Binary)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	want := map[string]struct {
		machine elf.Machine
		order   binary.ByteOrder
	}{
		"mipsle": {elf.EM_MIPS, binary.LittleEndian},
		"mips":   {elf.EM_MIPS, binary.BigEndian},
		"armv5":  {elf.EM_ARM, binary.LittleEndian},
		"armv6":  {elf.EM_ARM, binary.LittleEndian},
		"armv7":  {elf.EM_ARM, binary.LittleEndian},
		"arm64":  {elf.EM_AARCH64, binary.LittleEndian},
		"amd64":  {elf.EM_X86_64, binary.LittleEndian},
	}[a.Target.Name]
	if f.Machine != want.machine || f.ByteOrder != want.order {
		t.Errorf("%s: ELF machine %v %v, want %v %v", a.Target.Name, f.Machine, f.ByteOrder, want.machine, want.order)
	}
	// Stripped (-s -w): no symbol table, no DWARF.
	for _, sec := range []string{".symtab", ".debug_info"} {
		if f.Section(sec) != nil {
			t.Errorf("%s: has %s: not stripped", a.Target.Name, sec)
		}
	}
	// mips: linked for 4 KiB pages (MIPSPageRound); others keep Go's default.
	for _, p := range f.Progs {
		mips := a.Target.GOARCH == "mips" || a.Target.GOARCH == "mipsle"
		if p.Type == elf.PT_LOAD && mips && p.Align != MIPSPageRound {
			t.Errorf("%s: segment aligned to %#x, want %#x", a.Target.Name, p.Align, MIPSPageRound)
		}
	}
	// CGO off: static, so it runs on musl (OpenWrt) and glibc alike.
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("%s: dynamically linked (has an ELF interpreter)", a.Target.Name)
		}
	}
	// The build settings Go records: the target's GOARCH/GOARM/GOMIPS, CGO
	// off, -trimpath (which also keeps -ldflags out of the record).
	bi, err := buildinfo.ReadFile(a.Binary)
	if err != nil {
		t.Fatal(err)
	}
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	want2 := map[string]string{"GOOS": "linux", "GOARCH": a.Target.GOARCH, "CGO_ENABLED": "0", "-trimpath": "true",
		"-tags": BeaconTags}
	if a.Target.GOARM != "" {
		want2["GOARM"] = a.Target.GOARM
	}
	if a.Target.GOMIPS != "" {
		want2["GOMIPS"] = a.Target.GOMIPS
	}
	for k, v := range want2 {
		if settings[k] != v {
			t.Errorf("%s: build setting %s = %q, want %q", a.Target.Name, k, settings[k], v)
		}
	}
	// -trimpath: no build-machine paths.
	b, err := os.ReadFile(a.Binary)
	if err != nil {
		t.Fatal(err)
	}
	if r := root(t); bytes.Contains(b, []byte(r+"/")) {
		t.Errorf("%s: contains the build path %s: not trimmed", a.Target.Name, r)
	}
}

// TestFeedBuildHasEveryFile guards the OpenWrt feed build, which copies only
// Go sources (.go, .c, .h, .s, .proto, go.mod, go.sum) and testdata into
// its GOPATH: a //go:embed of any other file in a package the beacon links
// needs GO_PKG_INSTALL_EXTRA in openwrt/net/blockcast-beacon/Makefile.
func TestFeedBuildHasEveryFile(t *testing.T) {
	tg, err := Lookup("mipsle")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "list", "-deps", "-f", "{{if .Module}}{{if .Module.Main}}{{.ImportPath}} {{join .EmbedFiles \",\"}}{{end}}{{end}}", BeaconPkg)
	cmd.Dir = root(t)
	cmd.Env = append(append(os.Environ(), "GOFLAGS=", "GOTOOLCHAIN=local"), tg.Env()...)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	mk, err := os.ReadFile(filepath.Join(root(t), "openwrt/net/blockcast-beacon/Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		pkg, embeds, _ := strings.Cut(line, " ")
		for _, f := range strings.Split(embeds, ",") {
			if f == "" || strings.HasSuffix(f, ".go") {
				continue
			}
			rel := strings.TrimPrefix(strings.TrimPrefix(pkg, "github.com/blockcast/beacon"), "/") + "/" + f
			if !regexp.MustCompile(`(?m)^GO_PKG_INSTALL_EXTRA[:+]?=.*\b` + regexp.QuoteMeta(rel) + `\b`).Match(mk) {
				t.Errorf("%s embeds %s, which the feed build does not copy: add %s to GO_PKG_INSTALL_EXTRA", pkg, f, rel)
			}
		}
	}
}

// TestFeedBuildFlags keeps the OpenWrt feed build on the flags make cross
// uses, so that the flash budget holds for what routers actually install.
func TestFeedBuildFlags(t *testing.T) {
	mk, err := os.ReadFile(filepath.Join(root(t), "openwrt/net/blockcast-beacon/Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"GO_PKG_TAGS:=" + BeaconTags + "\n",
		"ifneq ($(filter mips mipsel,$(ARCH)),)\n  GO_PKG_LDFLAGS:=-R " + fmt.Sprintf("%#x", MIPSPageRound) + "\n",
	} {
		if !bytes.Contains(mk, []byte(want)) {
			t.Errorf("the feed Makefile lacks %q", want)
		}
	}
	top, err := os.ReadFile(filepath.Join(root(t), "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(top, []byte("BEACON_TAGS := "+BeaconTags+"#")) {
		t.Errorf("the Makefile's BEACON_TAGS is not %q", BeaconTags)
	}
}
