// Package metrics writes Prometheus text-format metrics (exposition format
// 0.0.4) without the Prometheus client library, which would cost the router
// firmware flash it does not have. Values are read when scraped: callers
// register functions that report the current numbers from their own atomic
// counters, so there is no second copy of any state.
package metrics

import (
	"fmt"
	"io"
	"math"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// Kind is a metric type.
type Kind string

// Metric types.
const (
	Counter Kind = "counter"
	Gauge   Kind = "gauge"
)

// Sample is one value with its label pairs (name, value, name, value, ...).
type Sample struct {
	Labels []string
	Value  float64
}

type family struct {
	name, help string
	kind       Kind
	collect    func() []Sample
}

// Registry holds metric families.
type Registry struct {
	mu       sync.Mutex
	families map[string]*family
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{families: map[string]*family{}} }

// Func registers a metric with no labels whose value fn reports.
func (r *Registry) Func(name, help string, kind Kind, fn func() float64) {
	r.Collect(name, help, kind, func() []Sample { return []Sample{{Value: fn()}} })
}

// Collect registers a metric family whose samples fn reports. Registering a
// name twice replaces the first.
func (r *Registry) Collect(name, help string, kind Kind, fn func() []Sample) {
	if !validName(name) {
		panic("metrics: invalid metric name " + strconv.Quote(name)) // programmer error
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.families[name] = &family{name: name, help: help, kind: kind, collect: fn}
}

func validName(s string) bool {
	if s == "" {
		return false
	}
	for i, c := range s {
		ok := c == '_' || c == ':' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (i > 0 && c >= '0' && c <= '9')
		if !ok {
			return false
		}
	}
	return true
}

// WriteTo writes every family in name order.
func (r *Registry) WriteTo(w io.Writer) (int64, error) {
	r.mu.Lock()
	fams := make([]*family, 0, len(r.families))
	for _, f := range r.families {
		fams = append(fams, f)
	}
	r.mu.Unlock()
	sort.Slice(fams, func(i, j int) bool { return fams[i].name < fams[j].name })
	var b strings.Builder
	for _, f := range fams {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s %s\n", f.name, escapeHelp(f.help), f.name, f.kind)
		for _, s := range f.collect() {
			b.WriteString(f.name)
			if len(s.Labels) >= 2 {
				b.WriteByte('{')
				for i := 0; i+1 < len(s.Labels); i += 2 {
					if i > 0 {
						b.WriteByte(',')
					}
					fmt.Fprintf(&b, "%s=\"%s\"", s.Labels[i], escapeLabel(s.Labels[i+1]))
				}
				b.WriteByte('}')
			}
			b.WriteByte(' ')
			b.WriteString(formatValue(s.Value))
			b.WriteByte('\n')
		}
	}
	n, err := io.WriteString(w, b.String())
	return int64(n), err
}

func formatValue(v float64) string {
	switch {
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	case math.IsNaN(v):
		return "NaN"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

// The replacers are built once: building one takes a 256-entry table,
// and a page has a help line per metric and labels per sample, so building
// them per scrape made each scrape ~0.6 MB of garbage in castd.
var (
	helpEscaper  = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
	labelEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`)
)

func escapeHelp(s string) string { return helpEscaper.Replace(s) }

func escapeLabel(s string) string { return labelEscaper.Replace(s) }

// ServeHTTP serves the registry at /metrics.
func (r *Registry) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	r.WriteTo(w)
}
