package main

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"
)

// bounds are what "flat" means for a run.
type bounds struct {
	RSS      float64 // anonymous RSS may grow by this fraction of its warm-up level
	FDAbs    int     // open fds may grow by max(FDAbs, FDRel × level)
	FDRel    float64
	GorAbs   int // goroutines likewise
	GorRel   float64
	Baseline time.Duration // span after the warm-up mark whose samples make the level
}

type judgeInput struct {
	Start        time.Time
	Warmup       time.Duration
	Grace        time.Duration
	Errors       []reqError
	Windows      []window
	Samples      []sample
	Bounds       bounds
	Unjudged     map[string]bool // processes recorded but not judged (the soak itself)
	NoGoroutines map[string]bool // processes that are not Go programs (mosquitto)
}

type verdict struct {
	Pass    bool
	Reasons []string // why it failed
	Figures []string // per-process levels, errors by window
	// Counts by kind: inside fault windows, outside (after warm-up), and
	// during the warm-up outside windows (reported, not judged).
	Inside, Outside, Warmup map[string]int
}

func (v *verdict) failf(format string, a ...any) {
	v.Pass = false
	v.Reasons = append(v.Reasons, fmt.Sprintf(format, a...))
}

// windowOf returns the index of the fault window e falls in (with its
// grace period), or -1.
func windowOf(at time.Time, ws []window, grace time.Duration) int {
	for i, w := range ws {
		if !at.Before(w.Start) && !at.After(w.End.Add(grace)) {
			return i
		}
	}
	return -1
}

func judge(in judgeInput) verdict {
	v := verdict{Pass: true, Inside: map[string]int{}, Outside: map[string]int{}, Warmup: map[string]int{}}
	warm := in.Start.Add(in.Warmup)
	perWindow := make([]map[string]int, len(in.Windows))
	shown, wrong := 0, 0
	for _, e := range in.Errors {
		if e.Kind == kindWrongBody || e.Kind == kindAMTCorrupt {
			// Never allowed, not even inside a fault: a fault may cost
			// availability, never correctness.
			if wrong < 10 {
				v.failf("%s at %s (beacon%d): %s", strings.ReplaceAll(e.Kind, "_", " "), e.At.Sub(in.Start).Round(time.Millisecond), e.Beacon+1, e.Detail)
			} else if wrong == 10 {
				v.failf("... more wrong bytes (errors.csv has them all)")
			}
			wrong++
		}
		switch i := windowOf(e.At, in.Windows, in.Grace); {
		case i >= 0:
			v.Inside[e.Kind]++
			if perWindow[i] == nil {
				perWindow[i] = map[string]int{}
			}
			perWindow[i][e.Kind]++
		case e.At.Before(warm):
			v.Warmup[e.Kind]++
		default:
			v.Outside[e.Kind]++
			if e.Kind == kindAMTSlack {
				break // within the AMT channel's loss slack: counted, not failed
			}
			if shown < 10 {
				v.failf("%s error outside any fault window at %s (beacon%d): %s", e.Kind, e.At.Sub(in.Start).Round(time.Millisecond), e.Beacon+1, e.Detail)
			}
			shown++
		}
	}
	if shown > 10 {
		v.failf("... %d more errors outside fault windows", shown-10)
	}
	for i, w := range in.Windows {
		line := fmt.Sprintf("fault %-28s at %7s for %7s", w.Name, w.Start.Sub(in.Start).Round(time.Second), w.End.Sub(w.Start).Round(100*time.Millisecond))
		if w.Err != "" {
			v.failf("fault %s at %s: %s", w.Name, w.Start.Sub(in.Start).Round(time.Second), w.Err)
			line += ": NOT RECOVERED"
		} else {
			line += fmt.Sprintf(", users served again %s after it", w.Recovered.Round(10*time.Millisecond))
			if w.AMTFlows > 0 {
				line += fmt.Sprintf(", AMT flowing again %s after it", w.AMTFlows.Round(10*time.Millisecond))
			}
			line += fmt.Sprintf(", errors %v", perWindow[i])
		}
		v.Figures = append(v.Figures, line)
	}

	byProc := map[string][]sample{}
	var names []string
	for _, s := range in.Samples {
		if _, ok := byProc[s.Process]; !ok {
			names = append(names, s.Process)
		}
		byProc[s.Process] = append(byProc[s.Process], s)
	}
	sort.Strings(names)
	for _, name := range names {
		if in.Unjudged[name] {
			continue
		}
		settled := func(s sample) bool {
			return windowOf(in.Start.Add(s.T), in.Windows, in.Grace) < 0
		}
		var base, tail []sample
		for _, s := range byProc[name] {
			if s.T >= in.Warmup && s.T <= in.Warmup+in.Bounds.Baseline && settled(s) {
				base = append(base, s)
			}
		}
		// The end's level: the settled samples of the last Baseline span
		// of the run (at least three), so both levels are medians of
		// about as many samples.
		all := byProc[name]
		for i := len(all) - 1; i >= 0; i-- {
			if len(tail) >= 3 && all[len(all)-1].T-all[i].T > in.Bounds.Baseline {
				break
			}
			if all[i].T > in.Warmup+in.Bounds.Baseline && settled(all[i]) {
				tail = append(tail, all[i])
			}
		}
		if len(base) == 0 || len(tail) == 0 {
			v.failf("%s: too few settled samples to judge (%d at the warm-up mark, %d at the end)", name, len(base), len(tail))
			continue
		}
		b := levels(base)
		t := levels(tail)
		line := fmt.Sprintf("%-10s RSS %6.1f → %6.1f MiB, anon %6.1f → %6.1f MiB (%+.1f%%), fds %3d → %3d, goroutines %4d → %4d",
			name, mib(b.rss), mib(t.rss), mib(b.anon), mib(t.anon), 100*(float64(t.anon)/float64(b.anon)-1), b.fds, t.fds, b.gor, t.gor)
		if b.live > 0 && t.live > 0 {
			line += fmt.Sprintf(", heap live %.1f → %.1f MiB", mib(b.live), mib(t.live))
		}
		v.Figures = append(v.Figures, line)
		if float64(t.anon) > float64(b.anon)*(1+in.Bounds.RSS) {
			v.failf("%s: anonymous RSS grew from %.1f to %.1f MiB, more than %.0f%%", name, mib(b.anon), mib(t.anon), 100*in.Bounds.RSS)
		}
		if lim := b.fds + max(in.Bounds.FDAbs, int(in.Bounds.FDRel*float64(b.fds))); t.fds > lim {
			v.failf("%s: open fds grew from %d to %d (bound %d)", name, b.fds, t.fds, lim)
		}
		if in.NoGoroutines[name] {
			// not a Go program: nothing to count
		} else if b.gor >= 0 && t.gor >= 0 {
			if lim := b.gor + max(in.Bounds.GorAbs, int(in.Bounds.GorRel*float64(b.gor))); t.gor > lim {
				v.failf("%s: goroutines grew from %d to %d (bound %d)", name, b.gor, t.gor, lim)
			}
		} else {
			v.failf("%s: goroutines unknown (no go_goroutines on its /metrics)", name)
		}
	}
	return v
}

type level struct {
	rss, anon int64
	fds, gor  int
	live      int64
}

// levels is the median of each figure over ss.
func levels(ss []sample) level {
	med := func(f func(sample) int64) int64 {
		v := make([]int64, len(ss))
		for i, s := range ss {
			v[i] = f(s)
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	return level{
		rss:  med(func(s sample) int64 { return s.RSS }),
		anon: med(func(s sample) int64 { return s.RSSAnon }),
		fds:  int(med(func(s sample) int64 { return int64(s.FDs) })),
		gor:  int(med(func(s sample) int64 { return int64(s.Goroutines) })),
		live: med(func(s sample) int64 { return s.HeapLive }),
	}
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }
