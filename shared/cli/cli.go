// Package cli holds what both programs' command lines share: flags that fall
// back to environment variables, the slog logger chosen by flags, and a
// context that ends on SIGINT/SIGTERM.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
)

// EnvName is the environment variable that backs flag name under prefix:
// EnvName("BEACON", "cache-size") == "BEACON_CACHE_SIZE".
func EnvName(prefix, name string) string {
	return prefix + "_" + strings.ToUpper(strings.NewReplacer("-", "_", ".", "_").Replace(name))
}

// ApplyEnv sets every flag of fs that was not given on the command line from
// its environment variable, when that is set. Call it after fs.Parse. A bad
// value names the variable in its error.
func ApplyEnv(fs *flag.FlagSet, prefix string, getenv func(string) string) error {
	if getenv == nil {
		getenv = os.Getenv
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if err != nil || set[f.Name] {
			return
		}
		env := EnvName(prefix, f.Name)
		if v := getenv(env); v != "" {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("environment %s=%q: %w", env, v, e)
			}
		}
	})
	return err
}

// Usage returns a flag.FlagSet Usage func that prints intro, then each flag
// with its environment variable, so --help tells a newcomer everything.
func Usage(fs *flag.FlagSet, prefix, intro string) func() {
	return func() {
		w := fs.Output()
		fmt.Fprint(w, strings.TrimLeft(intro, "\n"))
		fmt.Fprintln(w, "\nFlags (each can also be set by the environment variable shown):")
		fs.VisitAll(func(f *flag.Flag) {
			name, usage := flag.UnquoteUsage(f)
			line := "  --" + f.Name
			if name != "" {
				line += " " + name
			}
			fmt.Fprintf(w, "%s   [$%s]\n    \t%s", line, EnvName(prefix, f.Name), strings.ReplaceAll(usage, "\n", "\n    \t"))
			if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" {
				fmt.Fprintf(w, " (default %q)", f.DefValue)
			}
			fmt.Fprintln(w)
		})
	}
}

// LogOptions are the logging flags both programs take.
type LogOptions struct {
	Format string // "text" or "json"
	Level  string // debug, info, warn, error
}

// AddFlags registers --log-format and --log-level on fs.
func (o *LogOptions) AddFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.Format, "log-format", "text", "log format: text or json")
	fs.StringVar(&o.Level, "log-level", "info", "log level: debug, info, warn or error")
}

// NewLogger builds the logger the options describe, writing to w.
func (o LogOptions) NewLogger(w io.Writer) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(o.Level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", o.Level)
	}
	hopts := &slog.HandlerOptions{Level: lvl}
	switch o.Format {
	case "text", "":
		return slog.New(slog.NewTextHandler(w, hopts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, hopts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", o.Format)
}

// SignalContext returns a context cancelled on SIGINT or SIGTERM.
func SignalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

// Size is a flag.Value for byte sizes such as "64MiB", "1G", "500k" or "1048576".
type Size int64

func (s *Size) String() string { return FormatSize(int64(*s)) }

// Set parses a size with an optional unit (k, M, G, T with optional "i" and
// "B"; powers of 1024 either way, as disk sizes are usually meant).
func (s *Size) Set(v string) error {
	n, err := ParseSize(v)
	if err != nil {
		return err
	}
	*s = Size(n)
	return nil
}

// ParseSize parses what Size.Set accepts.
func ParseSize(v string) (int64, error) {
	t := strings.TrimSpace(v)
	i := 0
	for i < len(t) && t[i] >= '0' && t[i] <= '9' {
		i++
	}
	num := t[:i]
	unit := strings.ToLower(strings.TrimSpace(t[i:]))
	unit = strings.TrimSuffix(strings.TrimSuffix(unit, "b"), "i")
	var mult int64
	switch unit {
	case "":
		mult = 1
	case "k":
		mult = 1 << 10
	case "m":
		mult = 1 << 20
	case "g":
		mult = 1 << 30
	case "t":
		mult = 1 << 40
	default:
		return 0, fmt.Errorf("size %q: unknown unit (use k, M, G or T)", v)
	}
	var n int64
	if num == "" {
		return 0, fmt.Errorf("size %q: no number", v)
	}
	for _, c := range num {
		if n > (1<<62)/10 {
			return 0, fmt.Errorf("size %q: too large", v)
		}
		n = n*10 + int64(c-'0')
	}
	if n > (1<<62)/mult {
		return 0, fmt.Errorf("size %q: too large", v)
	}
	return n * mult, nil
}

// FormatSize prints n in the largest binary unit that divides it.
func FormatSize(n int64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB"}
	i := 0
	for i < len(units)-1 && n != 0 && n%1024 == 0 {
		n /= 1024
		i++
	}
	return fmt.Sprintf("%d%s", n, units[i])
}

// FormatBytes prints n for people: "512 B", "3.4 MiB".
func FormatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}

// ParseVerb parses the arguments of a command group that takes one verb
// and then flags (`castd receipts prove --node …`): the verb must be one of
// verbs; then fs parses the rest and ApplyEnv fills what the environment
// gives. On failure it has said why on stderr (prefixed with name) and
// returns ok false with the exit code: 0 after --help, 2 otherwise.
func ParseVerb(fs *flag.FlagSet, args []string, name, envPrefix string, getenv func(string) string, stderr io.Writer, verbs ...string) (verb string, code int, ok bool) {
	usage := func(msg string) (string, int, bool) {
		fmt.Fprintf(stderr, "%s: %s (see %s --help)\n", name, msg, name)
		return "", 2, false
	}
	parse := func(a []string) (int, bool) {
		if err := fs.Parse(a); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return 0, false
			}
			return 2, false
		}
		return 0, true
	}
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		if code, ok := parse(args); !ok {
			return "", code, false
		}
		return usage("want a command: " + strings.Join(verbs, ", "))
	}
	verb = args[0]
	if code, ok := parse(args[1:]); !ok {
		return "", code, false
	}
	if err := ApplyEnv(fs, envPrefix, getenv); err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return "", 2, false
	}
	if !slices.Contains(verbs, verb) {
		return usage(fmt.Sprintf("unknown command %q", verb))
	}
	return verb, 0, true
}
