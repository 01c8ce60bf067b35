package beacon

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// Problem is one warning or error the beacon logged, as the status shows it.
type Problem struct {
	At        time.Time `json:"at"`
	Level     string    `json:"level"`
	Component string    `json:"component,omitempty"`
	Msg       string    `json:"msg"`
	Err       string    `json:"err,omitempty"`
	Count     int       `json:"count"` // times seen; At is the last
}

// maxProblems is how many recent problems the status keeps.
const maxProblems = 8

// maxProblemText bounds the text of one problem (a castd error body, a
// path) so the status stays small.
const maxProblemText = 240

// problemLog keeps the last warnings and errors logged through it, for the
// owner's status page: every part of the beacon already logs what goes
// wrong, so the page sees it without each part reporting twice. Only the
// message, the "err" value and the component are kept (not the other
// attributes: addresses, paths), and any secret the beacon holds is cut
// out of them before they are stored.
type problemLog struct {
	next      slog.Handler
	component string
	ring      *problemRing
}

type problemRing struct {
	mu      sync.Mutex
	items   []Problem // oldest first
	secrets []string
}

func newProblemLog(next slog.Handler, secrets []string) *problemLog {
	var s []string
	for _, x := range secrets {
		if len(x) >= 8 { // a short string is no secret and would mangle text
			s = append(s, x)
		}
	}
	return &problemLog{next: next, ring: &problemRing{secrets: s}}
}

func (h *problemLog) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelWarn || h.next.Enabled(ctx, l)
}

func (h *problemLog) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		p := Problem{At: r.Time, Level: r.Level.String(), Component: h.component, Msg: r.Message}
		r.Attrs(func(a slog.Attr) bool {
			switch a.Key {
			case "err", "error":
				p.Err = a.Value.String()
			case "component", "cache":
				p.Component = a.Value.String()
			}
			return true
		})
		h.ring.add(p)
	}
	if h.next.Enabled(ctx, r.Level) {
		return h.next.Handle(ctx, r)
	}
	return nil
}

func (h *problemLog) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.next = h.next.WithAttrs(as)
	for _, a := range as {
		if a.Key == "component" || a.Key == "cache" {
			c.component = a.Value.String()
		}
	}
	return &c
}

func (h *problemLog) WithGroup(name string) slog.Handler {
	c := *h
	c.next = h.next.WithGroup(name)
	return &c
}

func (r *problemRing) add(p Problem) {
	p.Msg, p.Err, p.Component = r.scrub(p.Msg), r.scrub(p.Err), r.scrub(p.Component)
	p.Count = 1
	r.mu.Lock()
	defer r.mu.Unlock()
	// A problem that repeats (a retry loop, a flood of refused requests)
	// counts up and moves to the front instead of pushing the others out.
	for i, q := range r.items {
		if q.Level == p.Level && q.Component == p.Component && q.Msg == p.Msg && q.Err == p.Err {
			p.Count = q.Count + 1
			r.items = append(r.items[:i], r.items[i+1:]...)
			break
		}
	}
	if len(r.items) == maxProblems {
		copy(r.items, r.items[1:])
		r.items = r.items[:maxProblems-1]
	}
	r.items = append(r.items, p)
}

func (r *problemRing) scrub(s string) string {
	for _, x := range r.secrets {
		s = strings.ReplaceAll(s, x, "[redacted]")
	}
	return clip(s, maxProblemText) // encoding/json mends a rune clip cuts
}

// recent returns the problems, newest first.
func (r *problemRing) recent() []Problem {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Problem, len(r.items))
	for i, p := range r.items {
		out[len(out)-1-i] = p
	}
	return out
}
