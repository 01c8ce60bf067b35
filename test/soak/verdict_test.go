package main

import (
	"strings"
	"testing"
	"time"
)

// TestJudge checks the verdict on made-up runs: each way a soak must fail
// fails, with the reason named, and a clean run passes.
func TestJudge(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	win := []window{{Name: faultCastd, Start: at(60), End: at(62), Recovered: time.Second}}
	// steady samples for castd every 10 s over 200 s, with an optional
	// change at the end
	steady := func(anon int64, fds, gor int, endAnon int64, endFDs, endGor int) []sample {
		var ss []sample
		for s := 0; s <= 200; s += 10 {
			smp := sample{T: time.Duration(s) * time.Second, Process: "castd", PID: 1, RSS: 2 * anon, RSSAnon: anon, FDs: fds, Goroutines: gor}
			if s >= 150 {
				smp.RSSAnon, smp.FDs, smp.Goroutines = endAnon, endFDs, endGor
			}
			ss = append(ss, smp)
		}
		return ss
	}
	b := bounds{RSS: 0.10, FDAbs: 10, FDRel: 0.10, GorAbs: 15, GorRel: 0.10, Baseline: 20 * time.Second}
	const mb = 1 << 20
	cases := []struct {
		name   string
		errs   []reqError
		ws     []window
		ss     []sample
		want   string // a reason's substring; "" for a pass
		noGoro bool
		span   time.Duration // Bounds.Baseline if not 20 s
	}{
		{name: "clean", ws: win, ss: steady(8*mb, 30, 40, 8*mb+mb/2, 33, 45)},
		{name: "error inside window and grace", ws: win, ss: steady(8*mb, 30, 40, 8*mb, 30, 40),
			errs: []reqError{{At: at(61), Kind: kindConnection}, {At: at(70), Kind: kindStatus}}},
		{name: "error after grace", ws: win, ss: steady(8*mb, 30, 40, 8*mb, 30, 40),
			errs: []reqError{{At: at(73), Kind: kindStatus, Detail: "502"}}, want: "status error outside any fault window"},
		{name: "warm-up error is not judged", ws: win, ss: steady(8*mb, 30, 40, 8*mb, 30, 40),
			errs: []reqError{{At: at(5), Kind: kindTimeout}}},
		{name: "wrong body inside a fault", ws: win, ss: steady(8*mb, 30, 40, 8*mb, 30, 40),
			errs: []reqError{{At: at(61), Kind: kindWrongBody, Detail: "x"}}, want: "wrong body"},
		{name: "AMT wrong byte inside a fault", ws: win, ss: steady(8*mb, 30, 40, 8*mb, 30, 40),
			errs: []reqError{{At: at(61), Kind: kindAMTCorrupt, Detail: "seq 7: 1 bytes differ"}}, want: "amt corrupt"},
		{name: "AMT loss within the slack", ws: win, ss: steady(8*mb, 30, 40, 8*mb, 30, 40),
			errs: []reqError{{At: at(100), Kind: kindAMTSlack, Detail: "lost 1"}}},
		{name: "AMT loss outside", ws: win, ss: steady(8*mb, 30, 40, 8*mb, 30, 40),
			errs: []reqError{{At: at(100), Kind: kindAMT, Detail: "lost 500"}}, want: "amt error outside any fault window"},
		{name: "not recovered", ws: []window{{Name: faultBeacon, Start: at(60), End: at(90), Err: "no route"}},
			ss: steady(8*mb, 30, 40, 8*mb, 30, 40), want: "no route"},
		{name: "collector peaks at the end are not growth", ws: win, span: 40 * time.Second, ss: func() []sample {
			ss := steady(8*mb, 30, 40, 8*mb, 30, 40)
			ss[len(ss)-1].RSSAnon, ss[len(ss)-2].RSSAnon = 10*mb, 10*mb
			return ss
		}()},
		{name: "rss grows", ws: win, ss: steady(8*mb, 30, 40, 9*mb, 30, 40), want: "anonymous RSS grew"},
		{name: "fds grow", ws: win, ss: steady(8*mb, 30, 40, 8*mb, 41, 40), want: "open fds grew"},
		{name: "goroutines grow", ws: win, ss: steady(8*mb, 30, 40, 8*mb, 30, 56), want: "goroutines grew"},
		{name: "goroutines unknown", ws: win, ss: steady(8*mb, 30, -1, 8*mb, 30, -1), want: "goroutines unknown"},
		{name: "not a Go program", ws: win, ss: steady(8*mb, 30, -1, 8*mb, 30, -1), noGoro: true},
		{name: "no samples at the end", ws: win, ss: steady(8*mb, 30, 40, 8*mb, 30, 40)[:5], want: "too few settled samples"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := b
			if c.span > 0 {
				b.Baseline = c.span
			}
			v := judge(judgeInput{Start: t0, Warmup: 30 * time.Second, Grace: 10 * time.Second, Errors: c.errs,
				Windows: c.ws, Samples: c.ss, Bounds: b, NoGoroutines: map[string]bool{"castd": c.noGoro}})
			reasons := strings.Join(v.Reasons, "\n")
			if c.want == "" && !v.Pass {
				t.Fatalf("failed, want a pass:\n%s", reasons)
			}
			if c.want != "" && (v.Pass || !strings.Contains(reasons, c.want)) {
				t.Fatalf("pass=%v reasons:\n%s\nwant a fail naming %q", v.Pass, reasons, c.want)
			}
		})
	}
}

func TestSchedule(t *testing.T) {
	cycle := []string{faultOrigin, faultBeacon, faultCastd}
	for _, c := range []struct {
		d, warm, period time.Duration
		want            int
	}{
		{2 * time.Minute, 40 * time.Second, 20 * time.Second, 3},
		{time.Hour, 10 * time.Minute, 10 * time.Minute, 4},
	} {
		plan := schedule(c.d, c.warm, c.period, cycle)
		if len(plan) != c.want {
			t.Errorf("%s: %d faults %v, want %d", c.d, len(plan), plan, c.want)
		}
		for i, f := range plan {
			if f.Name != cycle[i%3] || f.At+c.period+c.period/2 > c.d {
				t.Errorf("%s: fault %d %+v", c.d, i, f)
			}
		}
	}
}

func TestSettleTail(t *testing.T) {
	cycle := []string{faultOrigin, faultBeacon, faultCastd}
	// 5 minutes: the second origin fault (3m25s, 25 s long) would end
	// 70 s before the run does: dropped.
	plan := settleTail(schedule(5*time.Minute, 55*time.Second, 50*time.Second, cycle), 5*time.Minute, 25*time.Second, 2*time.Minute)
	if len(plan) != 3 || plan[2].Name != faultCastd {
		t.Errorf("5m plan %v, want origin, beacon, castd", plan)
	}
	// 2 minutes: the only origin fault stays.
	plan = settleTail(schedule(2*time.Minute, 40*time.Second, 20*time.Second, cycle), 2*time.Minute, 10*time.Second, 2*time.Minute)
	if len(plan) != 3 || plan[0].Name != faultOrigin {
		t.Errorf("2m plan %v, want origin, beacon, castd", plan)
	}
}
