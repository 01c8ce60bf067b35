package cross

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// BeaconPkg is the package every target builds.
const BeaconPkg = "./firmware/cmd/beacon"

// ManifestName is the build manifest's file name inside the output directory.
const ManifestName = "manifest.json"

// BuildOptions say where and how to build.
type BuildOptions struct {
	Root    string       // module root (the directory holding go.mod)
	OutDir  string       // binaries go to OutDir/<target>/beacon
	Version string       // stamped into main.version
	Go      string       // go command; "go" when empty
	Log     *slog.Logger // nil: slog.Default()
}

// Artifact is one built binary.
type Artifact struct {
	Target Target `json:"target"`
	Binary string `json:"binary"` // absolute path
	Size   int64  `json:"size"`   // bytes, stripped
}

// Manifest describes one `make cross` run; cross/pkgtool packages from it, so
// the packagers never keep a target list of their own.
type Manifest struct {
	Version        string     `json:"version"`         // build version (main.version)
	PackageVersion string     `json:"package_version"` // PackageVersion(Version)
	Artifacts      []Artifact `json:"artifacts"`
}

// LDFlags are the linker flags of a release build: stripped (-s -w) and
// version-stamped.
func LDFlags(version string) string {
	return "-s -w -X main.version=" + version
}

// BeaconTags are the build tags of every beacon build. nethttpomithttp2
// leaves net/http's bundled HTTP/2 out (~590 KB of the mipsle binary), which
// the beacon never speaks: it serves end users over plain HTTP/1.1, and
// castclient's Transport has its own DialContext without ForceAttemptHTTP2,
// so it negotiates HTTP/1.1 with castd even over TLS. A beacon feature that
// needs HTTP/2 must drop this tag (and pay for it in the flash budget).
const BeaconTags = "nethttpomithttp2"

// MIPSPageRound is the segment alignment the mips and mipsle beacons are
// linked with (-ldflags -R): the 4 KiB pages of OpenWrt's MIPS kernels,
// instead of Go's default of 64 KiB, which pads each of the three segments in
// the file (~100 KB in all).
const MIPSPageRound = 0x1000

// NoInline are the packages built without inlining (-gcflags=P=-l) in every
// beacon build: code a router runs per connection, per handshake or per
// request, never per packet or per byte. Inlining there buys little speed and
// costs flash twice, in the copied bodies and in the inline trees the runtime
// keeps for tracebacks (go:func.* and .gopclntab): measured on the mipsle
// beacon with the multicast packages linked, 10,277,057 bytes stripped with
// inlining everywhere, 9,666,753 with this list (-610,304). The data path keeps
// inlining: runtime, sync, net, syscall, io, bufio, bytes, time, strconv,
// encoding/binary, compress, the ciphers and hashes (AES-GCM, ChaCha20-
// Poly1305, SHA-256, Ed25519), pion/dtls, reedsolomon and all of ours.
// A pattern here also stops other packages inlining its functions, so a
// package whose small helpers a hot loop calls (encoding/binary) must not be
// added. Keep in step with the Makefile's BEACON_NOINLINE and the OpenWrt
// feed Makefile (TestFeedBuildFlags).
var NoInline = []string{
	"crypto/tls", "crypto/x509/...", "vendor/golang.org/x/crypto/cryptobyte/...",
	"crypto/ecdsa", "crypto/rsa", "crypto/ecdh", "crypto/elliptic", "crypto/hpke", "crypto/mlkem",
	"crypto/internal/fips140/nistec", "crypto/internal/fips140/ecdsa",
	"crypto/internal/fips140/rsa", "crypto/internal/fips140/mlkem", "crypto/internal/fips140/ecdh",
	"math/big", "encoding/json", "encoding/asn1", "encoding/gob", "encoding/pem",
	"reflect", "fmt", "internal/fmtsort", "sort", "log/...", "flag",
	"net/http/...", "net/url", "net/textproto", "mime/...",
	"vendor/golang.org/x/text/...", "vendor/golang.org/x/net/...",
	"golang.org/x/net/proxy", "golang.org/x/net/internal/socks",
	"go.etcd.io/bbolt/...", "github.com/eclipse/...", "github.com/gorilla/...",
	// Ours that run per request, command, registration, report or
	// receipt (the request path's bytes move in objstore and the kernel).
	"github.com/blockcast/beacon/shared/ctrlmsg",
	"github.com/blockcast/beacon/shared/offchain",
	"github.com/blockcast/beacon/shared/cli",
	"github.com/blockcast/beacon/shared/metrics",
	"github.com/blockcast/beacon/shared/signedreq",
	"github.com/blockcast/beacon/shared/receipt",
	"github.com/blockcast/beacon/shared/onchain",
	"github.com/blockcast/beacon/shared/solrpc",
	"github.com/blockcast/beacon/shared/soltx",
	"github.com/blockcast/beacon/firmware/agent",
	"github.com/blockcast/beacon/firmware/driad",
	"github.com/blockcast/beacon/firmware/castclient",
	"github.com/blockcast/beacon/firmware/receipts",
	"github.com/blockcast/beacon/firmware/cmd/beacon",
	"github.com/blockcast/beacon/shared/protocol",
	"github.com/blockcast/beacon/shared/connguard",
	"github.com/blockcast/beacon/shared/identity",
	"github.com/blockcast/beacon/firmware/beacon",
	"github.com/blockcast/beacon/shared/mcproto",
	"github.com/blockcast/beacon/shared/httpcache",
}

// GCFlags are the compiler flags of every beacon build: one -gcflags per
// NoInline pattern (the go command applies each to the packages it matches).
func GCFlags() []string {
	out := make([]string, 0, len(NoInline))
	for _, p := range NoInline {
		out = append(out, "-gcflags="+p+"=-l")
	}
	return out
}

// ldflags are t's linker flags: LDFlags, and MIPSPageRound on mips.
func ldflags(t Target, version string) string {
	f := LDFlags(version)
	if t.GOARCH == "mips" || t.GOARCH == "mipsle" {
		f += fmt.Sprintf(" -R %#x", MIPSPageRound)
	}
	return f
}

// Build cross-compiles the beacon for t: CGO off, -trimpath, stripped.
func Build(ctx context.Context, opts BuildOptions, t Target) (Artifact, error) {
	out, err := filepath.Abs(filepath.Join(opts.OutDir, t.Name, "beacon"))
	if err != nil {
		return Artifact{}, err
	}
	return build(ctx, opts, t, out, true, nil)
}

// build runs `go build` of BeaconPkg for t into out with the release flags;
// strip false keeps the symbol table (for Shares); extra go before the
// package (e.g. -overlay).
func build(ctx context.Context, opts BuildOptions, t Target, out string, strip bool, extra []string) (Artifact, error) {
	log := opts.Log
	if log == nil {
		log = slog.Default()
	}
	goCmd := opts.Go
	if goCmd == "" {
		goCmd = "go"
	}
	ld := ldflags(t, opts.Version)
	if !strip {
		ld = strings.Replace(ld, "-s -w ", "", 1)
	}
	args := []string{"build", "-trimpath", "-buildvcs=false", "-tags", BeaconTags}
	args = append(args, GCFlags()...)
	args = append(args, "-ldflags", ld, "-o", out)
	args = append(args, extra...)
	cmd := exec.CommandContext(ctx, goCmd, append(args, BeaconPkg)...)
	cmd.Dir = opts.Root
	// GOFLAGS from the caller could add -race or cgo-only tags; a release
	// build must not inherit them.
	cmd.Env = append(os.Environ(), "GOFLAGS=", "GOTOOLCHAIN=local")
	cmd.Env = append(cmd.Env, t.Env()...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	log.Info("building", "target", t.Name, "goarch", t.GOARCH, "goarm", t.GOARM, "gomips", t.GOMIPS, "out", out)
	if err := cmd.Run(); err != nil {
		return Artifact{}, fmt.Errorf("cross: build %s: %w\n%s", t.Name, err, stderr.String())
	}
	fi, err := os.Stat(out)
	if err != nil {
		return Artifact{}, err
	}
	return Artifact{Target: t, Binary: out, Size: fi.Size()}, nil
}

// BuildAll builds every target in ts and writes the manifest to
// OutDir/manifest.json.
func BuildAll(ctx context.Context, opts BuildOptions, ts []Target) (*Manifest, error) {
	m := &Manifest{Version: opts.Version, PackageVersion: PackageVersion(opts.Version)}
	for _, t := range ts {
		a, err := Build(ctx, opts, t)
		if err != nil {
			return nil, err
		}
		m.Artifacts = append(m.Artifacts, a)
	}
	return m, WriteManifest(filepath.Join(opts.OutDir, ManifestName), m)
}

// WriteManifest writes m as JSON.
func WriteManifest(path string, m *Manifest) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// ErrBadManifest is returned for a manifest that is not what BuildAll writes.
var ErrBadManifest = errors.New("cross: bad manifest")

// ReadManifest reads a manifest written by BuildAll.
func ReadManifest(path string) (*Manifest, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var m Manifest
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrBadManifest, path, err)
	}
	if len(m.Artifacts) == 0 {
		return nil, fmt.Errorf("%w: %s: no artifacts", ErrBadManifest, path)
	}
	for _, a := range m.Artifacts {
		if a.Target.Name == "" || a.Binary == "" || !filepath.IsAbs(a.Binary) {
			return nil, fmt.Errorf("%w: %s: artifact %+v", ErrBadManifest, path, a)
		}
	}
	return &m, nil
}

// Find returns the artifact of the target called name.
func (m *Manifest) Find(name string) (Artifact, bool) {
	for _, a := range m.Artifacts {
		if a.Target.Name == name {
			return a, true
		}
	}
	return Artifact{}, false
}

// ModuleRoot finds the directory holding the main module's go.mod.
func ModuleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("cross: go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("cross: not inside the module")
	}
	return filepath.Dir(mod), nil
}
