// Command cross builds the beacon for every target in cross/targets.txt and
// checks the flash budget. The Makefile's cross and size targets run it.
//
//	cross build --out .build/cross --version v1.2.3 [--only mipsle,arm64]
//	cross size  --out .build/cross --packages .build/pkg
//	cross targets
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/blockcast/beacon/cross"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

const usage = `usage:
  cross build --out DIR --version V [--only NAME,...]   build, write DIR/manifest.json
  cross size --out DIR --packages DIR                   sizes; fails over the flash budget
  cross targets                                         print the target list
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	fs := flag.NewFlagSet("cross "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", ".build/cross", "directory for binaries and the manifest")
	version := fs.String("version", "dev", "version stamped into the binaries")
	only := fs.String("only", "", "comma-separated target names (default: all)")
	pkgDir := fs.String("packages", ".build/pkg", "directory the packages were written to")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	ts, err := cross.Targets()
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	switch args[0] {
	case "targets":
		for _, t := range ts {
			fmt.Fprintf(stdout, "%-7s %-7s %-10s %-26s %-7s %s\n", t.Name, t.GOARCH, t.GOARM+t.GOMIPS,
				t.OpenWrtArch, t.DebianArch, strings.Join(t.Formats, ","))
		}
		return 0
	case "build":
		if *only != "" {
			names := strings.Split(*only, ",")
			var sel []cross.Target
			for _, n := range names {
				i := slices.IndexFunc(ts, func(t cross.Target) bool { return t.Name == n })
				if i < 0 {
					fmt.Fprintf(stderr, "cross: no target %q\n", n)
					return 2
				}
				sel = append(sel, ts[i])
			}
			ts = sel
		}
		root, err := cross.ModuleRoot(ctx)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		if err := os.MkdirAll(*out, 0o755); err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		m, err := cross.BuildAll(ctx, cross.BuildOptions{Root: root, OutDir: *out, Version: *version, Log: log}, ts)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		for _, a := range m.Artifacts {
			fmt.Fprintf(stdout, "%-7s %9d  %s\n", a.Target.Name, a.Size, a.Binary)
		}
		return 0
	case "size":
		m, err := cross.ReadManifest(filepath.Join(*out, cross.ManifestName))
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		pkgs, err := cross.PackagesFor(m, *pkgDir)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		if err := cross.SizeReport(stdout, m, pkgs, cross.FlashBudget); err != nil {
			fmt.Fprintln(stderr, err)
			if errors.Is(err, cross.ErrOverBudget) {
				return 3
			}
			return 1
		}
		return 0
	default:
		fmt.Fprint(stderr, usage)
		return 2
	}
}
