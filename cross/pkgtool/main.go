// Command pkgtool packages the cross-built beacon without an OpenWrt SDK or
// Debian tooling: .ipk for OpenWrt 24.10 (opkg), .apk for OpenWrt 25.12
// (apk-tools v3 reads this v2-format package), and .deb for Raspberry Pi OS.
// It reads the manifest `make cross` writes, so it keeps no target list of
// its own. It is a module of its own so that nfpm's dependencies never enter
// the beacon's module graph.
//
//	go run . --root ../.. --manifest ../../.build/cross/manifest.json \
//	    --out ../../.build/pkg --formats ipk,apk,deb [--only mipsle] [--cast-url URL]
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Package metadata shared by every format.
const (
	pkgName     = "blockcast-beacon"
	maintainer  = "Blockcast <maintainers@blockcast.network>"
	homepage    = "https://github.com/blockcast/beacon"
	license     = "Apache-2.0"
	summary     = "Blockcast Beacon, a personal CDN cache"
	description = `Blockcast Beacon turns this device into a node of a multicast-assisted,
crowdsourced CDN: end users on this network are redirected to it and served
from its cache, which fills from the operator's castd. The node is identified
by a Solana wallet key created on first start.`
	release    = "1"
	walletPath = "/etc/blockcast/wallet.json"
)

// target and artifact mirror the JSON of cross.Manifest (package cross, in
// the beacon's module, which this module cannot import without a replace).
type target struct {
	Name        string   `json:"name"`
	GOARCH      string   `json:"goarch"`
	GOARM       string   `json:"goarm"`
	GOMIPS      string   `json:"gomips"`
	OpenWrtArch string   `json:"openwrt_arch"`
	DebianArch  string   `json:"debian_arch"`
	QEMU        string   `json:"qemu"`
	Formats     []string `json:"formats"`
}

type artifact struct {
	Target target `json:"target"`
	Binary string `json:"binary"`
	Size   int64  `json:"size"`
}

type manifest struct {
	Version        string     `json:"version"`
	PackageVersion string     `json:"package_version"`
	Artifacts      []artifact `json:"artifacts"`
}

var (
	errUsage      = errors.New("usage")
	versionRE     = regexp.MustCompile(`^[0-9]+(\.[0-9]+)*$`)
	archRE        = regexp.MustCompile(`^[a-z0-9_-]+$`)
	knownFormats  = []string{"ipk", "apk", "deb"}
	sourceDateEnv = "SOURCE_DATE_EPOCH"
)

func readManifest(path string) (*manifest, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var m manifest
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("manifest %s: %w", path, err)
	}
	if !versionRE.MatchString(m.PackageVersion) {
		return nil, fmt.Errorf("manifest %s: package version %q is not dotted numbers", path, m.PackageVersion)
	}
	for _, a := range m.Artifacts {
		t := a.Target
		if !archRE.MatchString(t.Name) || !archRE.MatchString(t.OpenWrtArch) || !archRE.MatchString(t.DebianArch) {
			return nil, fmt.Errorf("manifest %s: bad target %+v", path, t)
		}
		if !filepath.IsAbs(a.Binary) {
			return nil, fmt.Errorf("manifest %s: %s: binary path %q is not absolute", path, t.Name, a.Binary)
		}
	}
	return &m, nil
}

// options are pkgtool's flags.
type options struct {
	root     string // repository root: openwrt/ and rpi/ are read from it
	manifest string
	out      string
	formats  []string
	only     []string
	castURL  string
	mtime    time.Time
	log      *slog.Logger
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	opts, err := parseFlags(args, stderr)
	if err != nil {
		if errors.Is(err, errUsage) {
			return 2
		}
		fmt.Fprintln(stderr, "pkgtool:", err)
		return 2
	}
	m, err := readManifest(opts.manifest)
	if err != nil {
		fmt.Fprintln(stderr, "pkgtool:", err)
		return 1
	}
	if err := os.MkdirAll(opts.out, 0o755); err != nil {
		fmt.Fprintln(stderr, "pkgtool:", err)
		return 1
	}
	n := 0
	for _, a := range m.Artifacts {
		if len(opts.only) > 0 && !slices.Contains(opts.only, a.Target.Name) {
			continue
		}
		for _, f := range opts.formats {
			if !slices.Contains(a.Target.Formats, f) {
				continue
			}
			path, err := build(opts, m, a, f)
			if err != nil {
				fmt.Fprintf(stderr, "pkgtool: %s %s: %v\n", a.Target.Name, f, err)
				return 1
			}
			fi, err := os.Stat(path)
			if err != nil {
				fmt.Fprintln(stderr, "pkgtool:", err)
				return 1
			}
			fmt.Fprintf(stdout, "%-7s %-3s %9d  %s\n", a.Target.Name, f, fi.Size(), path)
			n++
		}
	}
	if n == 0 {
		fmt.Fprintln(stderr, "pkgtool: nothing to package (check --formats and --only)")
		return 1
	}
	return 0
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	fs := flag.NewFlagSet("pkgtool", flag.ContinueOnError)
	fs.SetOutput(stderr)
	root := fs.String("root", "../..", "repository root")
	man := fs.String("manifest", "", "build manifest written by `cross build` (required)")
	out := fs.String("out", "", "output directory (required)")
	formats := fs.String("formats", "ipk,apk,deb", "package formats")
	only := fs.String("only", "", "comma-separated target names (default: all in the manifest)")
	castURL := fs.String("cast-url", "", "castd URL written into the default configuration (default: unset, the user sets it)")
	if err := fs.Parse(args); err != nil {
		return options{}, errUsage
	}
	if *man == "" || *out == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "pkgtool: --manifest and --out are required")
		fs.Usage()
		return options{}, errUsage
	}
	o := options{root: *root, manifest: *man, out: *out, castURL: *castURL,
		log: slog.New(slog.NewTextHandler(stderr, nil))}
	for _, f := range strings.Split(*formats, ",") {
		if !slices.Contains(knownFormats, f) {
			return options{}, fmt.Errorf("unknown format %q (want ipk, apk, deb)", f)
		}
		o.formats = append(o.formats, f)
	}
	if *only != "" {
		o.only = strings.Split(*only, ",")
	}
	if o.castURL != "" {
		u, err := url.Parse(o.castURL)
		// The URL is written into a shell-parsed UCI file and an env file:
		// nothing that quotes or splits.
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || strings.ContainsAny(o.castURL, "'\"\\ \t\n$`") {
			return options{}, fmt.Errorf("--cast-url %q: want an http(s) URL without quotes or spaces", o.castURL)
		}
	}
	// Reproducible packages: file times from SOURCE_DATE_EPOCH when set.
	o.mtime = time.Unix(0, 0).UTC()
	if s := os.Getenv(sourceDateEnv); s != "" {
		var sec int64
		if _, err := fmt.Sscan(s, &sec); err != nil || sec < 0 {
			return options{}, fmt.Errorf("%s=%q: want seconds since 1970", sourceDateEnv, s)
		}
		o.mtime = time.Unix(sec, 0).UTC()
	}
	return o, nil
}

func build(opts options, m *manifest, a artifact, format string) (string, error) {
	switch format {
	case "ipk":
		files, err := openwrtFiles(opts, a, false)
		if err != nil {
			return "", err
		}
		return writeIPK(opts, m, a, files)
	case "apk":
		files, err := openwrtFiles(opts, a, true)
		if err != nil {
			return "", err
		}
		return writeAPK(opts, m, a, files)
	case "deb":
		return writeDeb(opts, m, a)
	}
	return "", fmt.Errorf("unknown format %q", format)
}
