// Command cross builds the beacon for every target in cross/targets.txt and
// checks the flash budget. The Makefile's cross and size targets run it.
//
//	cross build --out .build/cross --version v1.2.3 [--only mipsle,arm64]
//	cross size  --out .build/cross --packages .build/pkg [--multicast]
//	cross shares [--target mipsle] [--top 40] [--base FILE] [--keep FILE]
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
  cross size --out DIR --packages DIR [--multicast]     sizes; fails over the flash budget
                                                        (--multicast: also the beacon with
                                                        the multicast receive path linked)
  cross shares [--target T] [--top N] [--base FILE] [--keep FILE]
                                                        each package's bytes in the beacon
                                                        with multicast, unstripped build
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
	multicast := fs.Bool("multicast", false, "size: also build and check the "+cross.FlashBudget.Target+" beacon with the multicast receive path ("+cross.ProbeName+")")
	target := fs.String("target", cross.FlashBudget.Target, "shares: target to build")
	top := fs.Int("top", 40, "shares: packages to list (0: all)")
	base := fs.String("base", "", "shares: an unstripped binary to compare with (a before column)")
	keep := fs.String("keep", "", "shares: keep the unstripped build at this path (for a later --base)")
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
		err = cross.SizeReport(stdout, m, pkgs, cross.FlashBudget)
		if *multicast {
			err = errors.Join(err, sizeMulticast(ctx, stdout, log, *out, m, pkgs))
		}
		if err != nil {
			fmt.Fprintln(stderr, err)
			if errors.Is(err, cross.ErrOverBudget) {
				return 3
			}
			return 1
		}
		return 0
	case "shares":
		if err := shares(ctx, stdout, log, *target, *top, *base, *keep); err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		return 0
	default:
		fmt.Fprint(stderr, usage)
		return 2
	}
}

// sizeMulticast builds the budget target's beacon with the multicast
// receive path linked (cross.BuildProbe) into out/<target>-multicast and
// checks it against the flash budget. Its package size is estimated from
// its gzip size and the ratio of the largest real package to the gzip size
// of the binary inside it (apk runs a few percent above a plain gzip).
func sizeMulticast(ctx context.Context, stdout io.Writer, log *slog.Logger, out string, m *cross.Manifest, pkgs []cross.PackageFile) error {
	t, err := cross.Lookup(cross.FlashBudget.Target)
	if err != nil {
		return err
	}
	root, err := cross.ModuleRoot(ctx)
	if err != nil {
		return err
	}
	bin := filepath.Join(out, t.Name+"-multicast", "beacon")
	a, err := cross.BuildProbe(ctx, cross.BuildOptions{Root: root, OutDir: out, Version: m.Version, Log: log}, t, bin, true)
	if err != nil {
		return err
	}
	gz, err := cross.GzipSize(a.Binary)
	if err != nil {
		return err
	}
	if plain, ok := m.Find(t.Name); ok {
		var largest int64
		for _, p := range pkgs {
			if p.Target == t.Name && p.Size > largest {
				largest = p.Size
			}
		}
		if plainGz, err := cross.GzipSize(plain.Binary); err == nil && largest > plainGz {
			gz = gz * largest / plainGz
		}
	}
	return cross.ProbeReport(stdout, a, gz, cross.FlashBudget)
}

// shares builds target's beacon with the multicast receive path, unstripped,
// and prints each package's bytes (largest first), next to base's when
// given.
func shares(ctx context.Context, stdout io.Writer, log *slog.Logger, target string, top int, base, keep string) error {
	t, err := cross.Lookup(target)
	if err != nil {
		return err
	}
	root, err := cross.ModuleRoot(ctx)
	if err != nil {
		return err
	}
	bin := keep
	if bin == "" {
		dir, err := os.MkdirTemp("", "beacon-shares")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		bin = filepath.Join(dir, "beacon")
	}
	a, err := cross.BuildProbe(ctx, cross.BuildOptions{Root: root, OutDir: filepath.Dir(bin), Version: "dev", Log: log}, t, bin, false)
	if err != nil {
		return err
	}
	now, total, err := sharesOf(a.Binary)
	if err != nil {
		return err
	}
	var before []cross.Share
	if base != "" {
		if before, _, err = sharesOf(base); err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, "%s beacon with multicast, unstripped: %d bytes in loaded sections\n", t.Name, total)
	return cross.WriteShares(stdout, now, total, before, top)
}

func sharesOf(path string) ([]cross.Share, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	s, total, err := cross.Shares(f)
	if err != nil {
		return nil, 0, fmt.Errorf("%s: %w", path, err)
	}
	return s, total, nil
}
