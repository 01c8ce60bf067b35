package cross

import (
	"compress/gzip"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// probeSource is the file BuildProbe adds to BeaconPkg, through -overlay
// only: the tree's beacon is never changed by a measurement. It calls the
// multicast receive path the way the beacon will.
//
//go:embed sizeprobe.go.txt
var probeSource string

// ProbeName is what size reports call the probe build.
const ProbeName = "multicast receive path (cross/sizeprobe.go.txt)"

// BuildProbe builds the beacon for t with the release flags plus the
// multicast receive path (probeSource) linked in, into out: the size the
// beacon will have once it calls those packages itself. strip false keeps
// the symbol table, for Shares.
func BuildProbe(ctx context.Context, opts BuildOptions, t Target, out string, strip bool) (Artifact, error) {
	dir, err := os.MkdirTemp("", "beacon-sizeprobe")
	if err != nil {
		return Artifact{}, err
	}
	defer os.RemoveAll(dir)
	src := filepath.Join(dir, "zz_sizeprobe.go")
	if err := os.WriteFile(src, []byte(probeSource), 0o644); err != nil {
		return Artifact{}, err
	}
	root, err := filepath.Abs(opts.Root)
	if err != nil {
		return Artifact{}, err
	}
	// The overlay names a file that does not exist in the package's
	// directory; the go command compiles it as if it did.
	ov, err := json.Marshal(map[string]map[string]string{"Replace": {
		filepath.Join(root, BeaconPkg, "zz_sizeprobe.go"): src,
	}})
	if err != nil {
		return Artifact{}, err
	}
	ovPath := filepath.Join(dir, "overlay.json")
	if err := os.WriteFile(ovPath, ov, 0o644); err != nil {
		return Artifact{}, err
	}
	if out, err = filepath.Abs(out); err != nil {
		return Artifact{}, err
	}
	return build(ctx, opts, t, out, strip, []string{"-overlay", ovPath})
}

// GzipSize is path's size compressed as OpenWrt's packages compress it
// (gzip, best compression): a close lower bound on an .ipk holding it.
func GzipSize(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var n countWriter
	zw, err := gzip.NewWriterLevel(&n, gzip.BestCompression)
	if err != nil {
		return 0, err
	}
	if _, err := io.Copy(zw, f); err != nil {
		return 0, fmt.Errorf("cross: gzip %s: %w", path, err)
	}
	if err := zw.Close(); err != nil {
		return 0, err
	}
	return int64(n), nil
}

type countWriter int64

func (c *countWriter) Write(p []byte) (int, error) { *c += countWriter(len(p)); return len(p), nil }

// ProbeReport prints the multicast probe build's size and checks it against
// b: the stripped binary against MaxBinary and pkg, its estimated package
// size, against MaxPackage. It returns an error wrapping ErrOverBudget when
// either is over.
func ProbeReport(w io.Writer, a Artifact, pkg int64, b Budget) error {
	fmt.Fprintf(w, "%s with the %s: binary %s (%d bytes), package ~%s; budget %s, %s packaged\n",
		a.Target.Name, ProbeName, mb(a.Size), a.Size, mb(pkg), mb(b.MaxBinary), mb(b.MaxPackage))
	var errs []error
	if a.Size > b.MaxBinary {
		errs = append(errs, fmt.Errorf("%w: %s beacon with multicast is %d bytes, budget %d", ErrOverBudget, a.Target.Name, a.Size, b.MaxBinary))
	}
	if pkg > b.MaxPackage {
		errs = append(errs, fmt.Errorf("%w: %s beacon with multicast packages to ~%d bytes, budget %d", ErrOverBudget, a.Target.Name, pkg, b.MaxPackage))
	}
	if len(errs) == 0 {
		fmt.Fprintf(w, "%s with multicast within budget: %d bytes to spare\n", a.Target.Name, b.MaxBinary-a.Size)
	}
	return errors.Join(errs...)
}
