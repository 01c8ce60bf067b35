package cross

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
)

// Budget bounds what one target may cost on the device.
type Budget struct {
	Target     string // target name
	MaxBinary  int64  // stripped binary, bytes
	MaxPackage int64  // each package file (.ipk, .apk), bytes
}

// FlashBudget is the budget for the smallest routers: a 16 MB-flash
// ath79/ramips board (mipsle) keeps the beacon under 10 MB stripped and under
// 4 MB as a package. MB here is 10^6 bytes, the stricter reading.
var FlashBudget = Budget{Target: "mipsle", MaxBinary: 10_000_000, MaxPackage: 4_000_000}

// ErrOverBudget is returned when a target exceeds its budget.
var ErrOverBudget = errors.New("cross: over the flash budget")

// PackageFile is one built package.
type PackageFile struct {
	Target string // target name
	Format string // ipk, apk, deb
	Path   string
	Size   int64
}

// PackagesFor finds the packages cross/pkgtool wrote into dir for the
// manifest's targets. Names follow pkgtool: the OpenWrt and Debian
// architecture labels are in every file name.
func PackagesFor(m *Manifest, dir string) ([]PackageFile, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	var out []PackageFile
	for _, a := range m.Artifacts {
		for _, e := range ents {
			format := strings.TrimPrefix(filepath.Ext(e.Name()), ".")
			if !a.Target.Has(format) {
				continue
			}
			arch := a.Target.OpenWrtArch
			if format == FormatDeb {
				arch = a.Target.DebianArch
			}
			if !strings.HasSuffix(strings.TrimSuffix(e.Name(), "."+format), "_"+arch) {
				continue
			}
			fi, err := e.Info()
			if err != nil {
				return nil, err
			}
			out = append(out, PackageFile{Target: a.Target.Name, Format: format, Path: filepath.Join(dir, e.Name()), Size: fi.Size()})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Target != out[j].Target {
			return out[i].Target < out[j].Target
		}
		return out[i].Format < out[j].Format
	})
	return out, nil
}

// SizeReport prints each target's binary size and its package sizes, then
// checks b. It returns an error wrapping ErrOverBudget if b's target is over,
// or if its binary or its OpenWrt packages are missing (a budget that cannot
// be checked has not been met).
func SizeReport(w io.Writer, m *Manifest, pkgs []PackageFile, b Budget) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "target\tbinary\tipk\tapk\tdeb\t")
	for _, a := range m.Artifacts {
		row := []string{a.Target.Name, mb(a.Size)}
		for _, f := range []string{FormatIPK, FormatAPK, FormatDeb} {
			cell := "-"
			for _, p := range pkgs {
				if p.Target == a.Target.Name && p.Format == f {
					cell = mb(p.Size)
				}
			}
			row = append(row, cell)
		}
		fmt.Fprintln(tw, strings.Join(row, "\t")+"\t")
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	var errs []error
	var sizes []string // the budget target's packages, for the summary
	a, ok := m.Find(b.Target)
	if !ok {
		return fmt.Errorf("%w: no %s binary in the manifest", ErrOverBudget, b.Target)
	}
	if a.Size > b.MaxBinary {
		errs = append(errs, fmt.Errorf("%w: %s binary is %s, budget %s", ErrOverBudget, b.Target, mb(a.Size), mb(b.MaxBinary)))
	}
	for _, f := range []string{FormatIPK, FormatAPK} {
		if !a.Target.Has(f) {
			continue
		}
		found := false
		for _, p := range pkgs {
			if p.Target != b.Target || p.Format != f {
				continue
			}
			found = true
			sizes = append(sizes, fmt.Sprintf("%s %s", f, mb(p.Size)))
			if p.Size > b.MaxPackage {
				errs = append(errs, fmt.Errorf("%w: %s is %s, budget %s", ErrOverBudget, filepath.Base(p.Path), mb(p.Size), mb(b.MaxPackage)))
			}
		}
		if !found {
			errs = append(errs, fmt.Errorf("%w: no %s .%s package to measure (run make package-openwrt)", ErrOverBudget, b.Target, f))
		}
	}
	if len(errs) == 0 {
		fmt.Fprintf(w, "%s within budget: binary %s of %s; %s, each of %s\n", b.Target, mb(a.Size), mb(b.MaxBinary), strings.Join(sizes, ", "), mb(b.MaxPackage))
	}
	return errors.Join(errs...)
}

func mb(n int64) string { return fmt.Sprintf("%.2f MB", float64(n)/1e6) }

// ForbiddenImports are import-path prefixes the beacon must never link: each
// costs megabytes of flash (solana-go alone drags in zap, zstd and bson) or
// belongs to castd. A prefix matches the path itself and everything under it.
var ForbiddenImports = []string{
	"github.com/gagliardetto/solana-go", // castd only; the beacon signs with crypto/ed25519
	"go.uber.org/zap",
	"google.golang.org/grpc",
	"github.com/mochi-mqtt", // the broker lives in castd; the beacon is an MQTT client
	"go.mongodb.org",
	"github.com/klauspost/compress",
	"github.com/prometheus", // the beacon's /metrics is hand-written
	"github.com/miekg/dns",  // the beacon parses AMTRELAY RDATA itself
	"github.com/blockcast/beacon/cloud",
}

// CheckImports returns the packages in deps that a forbidden prefix matches.
func CheckImports(deps, forbidden []string) []string {
	var bad []string
	for _, d := range deps {
		for _, f := range forbidden {
			if d == f || strings.HasPrefix(d, f+"/") {
				bad = append(bad, d)
				break
			}
		}
	}
	return bad
}

// ListDeps lists the packages pkg links for target t (`go list -deps`), as
// the build for t would: the set can differ between architectures.
func ListDeps(ctx context.Context, root, pkg string, t Target) ([]string, error) {
	cmd := exec.CommandContext(ctx, "go", "list", "-deps", "-f", "{{.ImportPath}}", pkg)
	cmd.Dir = root
	cmd.Env = append(append(os.Environ(), "GOFLAGS=", "GOTOOLCHAIN=local"), t.Env()...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("cross: go list -deps %s (%s): %w\n%s", pkg, t.Name, err, stderr.String())
	}
	return strings.Fields(string(out)), nil
}
