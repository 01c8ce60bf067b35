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
	log := opts.Log
	if log == nil {
		log = slog.Default()
	}
	goCmd := opts.Go
	if goCmd == "" {
		goCmd = "go"
	}
	out, err := filepath.Abs(filepath.Join(opts.OutDir, t.Name, "beacon"))
	if err != nil {
		return Artifact{}, err
	}
	cmd := exec.CommandContext(ctx, goCmd, "build", "-trimpath", "-buildvcs=false", "-tags", BeaconTags,
		"-ldflags", ldflags(t, opts.Version), "-o", out, BeaconPkg)
	cmd.Dir = opts.Root
	// GOFLAGS from the caller could add -race or cgo-only tags; a release
	// build must not inherit them.
	cmd.Env = append(os.Environ(), "GOFLAGS=", "GOTOOLCHAIN=local")
	cmd.Env = append(cmd.Env, t.Env()...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	log.Info("building", "target", t.Name, "goarch", t.GOARCH, "goarm", t.GOARM, "gomips", t.GOMIPS)
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
