// Package cross builds the beacon for the hardware it ships on (OpenWrt
// routers, Raspberry Pi, any Linux), keeps it inside the flash budget, and
// guards its dependency list. The targets live in targets.txt, the one list
// that `make cross`, `make size` and the packagers (through the build
// manifest) all read.
package cross

import (
	"bufio"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"
)

//go:embed targets.txt
var targetsTxt string

// Package formats a target can be packaged as.
const (
	FormatIPK = "ipk" // OpenWrt 24.10 (opkg)
	FormatAPK = "apk" // OpenWrt 25.12 (apk-tools v3)
	FormatDeb = "deb" // Raspberry Pi OS, Debian
)

// ErrBadTargets is returned for a target list that does not parse.
var ErrBadTargets = errors.New("cross: bad target list")

// Target is one platform the beacon is built for.
type Target struct {
	Name        string   `json:"name"`         // our label: mipsle, armv6, ...
	GOARCH      string   `json:"goarch"`       // GOARCH
	GOARM       string   `json:"goarm"`        // GOARM (arm only)
	GOMIPS      string   `json:"gomips"`       // GOMIPS (mips, mipsle only)
	OpenWrtArch string   `json:"openwrt_arch"` // OpenWrt package architecture
	DebianArch  string   `json:"debian_arch"`  // Debian architecture
	QEMU        string   `json:"qemu"`         // qemu-user binary; "" when native
	Formats     []string `json:"formats"`      // packages made for it
}

// Env is the environment `go build` needs for t (CGO off: the binaries are
// static, so one build runs on musl (OpenWrt) and glibc (Debian) alike).
func (t Target) Env() []string {
	env := []string{"GOOS=linux", "GOARCH=" + t.GOARCH, "CGO_ENABLED=0"}
	if t.GOARM != "" {
		env = append(env, "GOARM="+t.GOARM)
	}
	if t.GOMIPS != "" {
		env = append(env, "GOMIPS="+t.GOMIPS)
	}
	return env
}

// Has reports whether t is packaged as format.
func (t Target) Has(format string) bool { return slices.Contains(t.Formats, format) }

// Targets returns the embedded target list.
func Targets() ([]Target, error) { return ParseTargets(strings.NewReader(targetsTxt)) }

// Lookup returns the target called name from the embedded list.
func Lookup(name string) (Target, error) {
	ts, err := Targets()
	if err != nil {
		return Target{}, err
	}
	for _, t := range ts {
		if t.Name == name {
			return t, nil
		}
	}
	return Target{}, fmt.Errorf("cross: no target %q", name)
}

var (
	nameRE  = regexp.MustCompile(`^[a-z0-9]+$`)
	archRE  = regexp.MustCompile(`^[a-z0-9_-]+$`)
	formats = []string{FormatIPK, FormatAPK, FormatDeb}
	goarchs = []string{"386", "amd64", "arm", "arm64", "mips", "mipsle", "mips64", "mips64le", "riscv64"}
)

// ParseTargets reads a target list in the targets.txt format: seven
// whitespace-separated columns, '#' comments, '-' for an empty column.
func ParseTargets(r io.Reader) ([]Target, error) {
	var ts []Target
	seen := map[string]bool{}
	sc := bufio.NewScanner(r)
	line := 0
	for sc.Scan() {
		line++
		text := sc.Text()
		if i := strings.IndexByte(text, '#'); i >= 0 {
			text = text[:i]
		}
		f := strings.Fields(text)
		if len(f) == 0 {
			continue
		}
		bad := func(format string, args ...any) error {
			return fmt.Errorf("%w: line %d: %s", ErrBadTargets, line, fmt.Sprintf(format, args...))
		}
		if len(f) != 7 {
			return nil, bad("want 7 columns, have %d", len(f))
		}
		for i := range f {
			if f[i] == "-" {
				f[i] = ""
			}
		}
		t := Target{Name: f[0], GOARCH: f[1], OpenWrtArch: f[3], DebianArch: f[4], QEMU: f[5]}
		if !nameRE.MatchString(t.Name) {
			return nil, bad("bad name %q", t.Name)
		}
		if seen[t.Name] {
			return nil, bad("duplicate target %q", t.Name)
		}
		seen[t.Name] = true
		if !slices.Contains(goarchs, t.GOARCH) {
			return nil, bad("%s: unknown GOARCH %q", t.Name, t.GOARCH)
		}
		switch variant := f[2]; t.GOARCH {
		case "arm":
			if variant != "5" && variant != "6" && variant != "7" {
				return nil, bad("%s: GOARM must be 5, 6 or 7, not %q", t.Name, variant)
			}
			t.GOARM = variant
		case "mips", "mipsle":
			if variant != "softfloat" && variant != "hardfloat" {
				return nil, bad("%s: GOMIPS must be softfloat or hardfloat, not %q", t.Name, variant)
			}
			t.GOMIPS = variant
		default:
			if variant != "" {
				return nil, bad("%s: GOARCH %s takes no variant, have %q", t.Name, t.GOARCH, variant)
			}
		}
		if !archRE.MatchString(t.OpenWrtArch) || !archRE.MatchString(t.DebianArch) {
			return nil, bad("%s: OpenWrt and Debian architectures are both required", t.Name)
		}
		if t.QEMU != "" && !strings.HasPrefix(t.QEMU, "qemu-") {
			return nil, bad("%s: qemu column %q is not a qemu-user binary", t.Name, t.QEMU)
		}
		for _, p := range strings.Split(f[6], ",") {
			if !slices.Contains(formats, p) {
				return nil, bad("%s: unknown package format %q", t.Name, p)
			}
			if slices.Contains(t.Formats, p) {
				return nil, bad("%s: format %q twice", t.Name, p)
			}
			t.Formats = append(t.Formats, p)
		}
		ts = append(ts, t)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadTargets, err)
	}
	if len(ts) == 0 {
		return nil, fmt.Errorf("%w: no targets", ErrBadTargets)
	}
	return ts, nil
}

var tagRE = regexp.MustCompile(`^v?([0-9]+(?:\.[0-9]+){0,3})(?:-([0-9]+)-g[0-9a-f]+)?(?:-dirty)?$`)

// PackageVersion turns a build version (git describe: v1.2.3,
// v1.2.3-4-gabc1234, abc1234, dev) into a dotted-numeric version that opkg,
// apk and dpkg all accept and order the same way: 1.2.3, 1.2.3.4 (4 commits
// past the tag), or 0.0.0 when there is no tag to go by.
func PackageVersion(v string) string {
	m := tagRE.FindStringSubmatch(v)
	if m == nil {
		return "0.0.0"
	}
	if m[2] != "" {
		return m[1] + "." + m[2]
	}
	return m[1]
}
