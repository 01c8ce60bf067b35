package main

import (
	"fmt"
	"html"
	"io"
	"math"
	"sort"
	"strings"
	"time"
)

// chartInput is what the SVG shows.
type chartInput struct {
	Title    string
	Duration time.Duration
	Warmup   time.Duration
	Samples  []sample
	Windows  []window // times relative to Start
	Start    time.Time
	Notes    []string // error counts by kind, verdict
	AMT      []amtSample
}

var palette = []string{"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f"}

// writeChart draws one panel per metric (RSS, open fds, goroutines, live heap), one
// line per process, fault windows shaded and the warm-up mark dashed,
// with the notes (error counts, verdict) below. Plain SVG 1.1: any
// browser opens it.
func writeChart(w io.Writer, in chartInput) error {
	const (
		width  = 1100
		left   = 70
		right  = 180
		panelH = 200
		gap    = 50
		top    = 50
	)
	panels := []struct {
		title string
		value func(sample) float64
		dash  func(sample) float64 // a second, dashed series (VmRSS beside anon)
	}{
		{"RSS MiB (solid: anonymous, judged; dashed: VmRSS incl. mapped cache files)",
			func(s sample) float64 { return mib(s.RSSAnon) }, func(s sample) float64 { return mib(s.RSS) }},
		{"open file descriptors", func(s sample) float64 { return float64(s.FDs) }, nil},
		{"goroutines (go_goroutines from /metrics)", func(s sample) float64 { return float64(s.Goroutines) }, nil},
		{"Go heap live at the last GC, MiB (go_gc_heap_live_bytes; RSS swings up to twice this)", func(s sample) float64 { return mib(s.HeapLive) }, nil},
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
	nPanels := len(panels)
	if len(in.AMT) > 0 {
		nPanels++
	}
	height := top + nPanels*(panelH+gap) + 20*len(in.Notes) + 30
	plotW := float64(width - left - right)
	dur := math.Max(in.Duration.Seconds(), 1)
	x := func(t time.Duration) float64 { return left + plotW*t.Seconds()/dur }

	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/><text x="%d" y="25" font-size="16">%s</text>`+"\n", left, html.EscapeString(in.Title))
	for pi, p := range panels {
		y0 := float64(top + pi*(panelH+gap))
		maxV := 0.0
		for _, s := range in.Samples {
			maxV = math.Max(maxV, p.value(s))
			if p.dash != nil {
				maxV = math.Max(maxV, p.dash(s))
			}
		}
		maxV = niceCeil(maxV)
		y := func(v float64) float64 { return y0 + panelH - panelH*math.Max(v, 0)/maxV }
		fmt.Fprintf(&b, `<text x="%d" y="%.0f" font-weight="bold">%s</text>`+"\n", left, y0-8, html.EscapeString(p.title))
		for _, win := range in.Windows {
			x0, x1 := x(win.Start.Sub(in.Start)), x(win.End.Sub(in.Start))
			fmt.Fprintf(&b, `<rect x="%.1f" y="%.0f" width="%.1f" height="%d" fill="#f4a582" fill-opacity="0.35"><title>%s</title></rect>`+"\n",
				x0, y0, math.Max(x1-x0, 1.5), panelH, html.EscapeString(win.Name))
			if pi == 0 {
				fmt.Fprintf(&b, `<text x="%.1f" y="%.0f" font-size="9" fill="#b2182b">%s</text>`+"\n", x0, y0+10, html.EscapeString(win.Name))
			}
		}
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.0f" x2="%.1f" y2="%.0f" stroke="#555" stroke-dasharray="4 3"/>`+"\n", x(in.Warmup), y0, x(in.Warmup), y0+panelH)
		fmt.Fprintf(&b, `<rect x="%d" y="%.0f" width="%.0f" height="%d" fill="none" stroke="#333"/>`+"\n", left, y0, plotW, panelH)
		for i := 0; i <= 4; i++ {
			v := maxV * float64(i) / 4
			fmt.Fprintf(&b, `<text x="%d" y="%.0f" text-anchor="end">%s</text>`+"\n", left-5, y(v)+4, fmtNum(v))
		}
		for i := 0; i <= 6; i++ {
			t := time.Duration(float64(in.Duration) * float64(i) / 6)
			fmt.Fprintf(&b, `<text x="%.1f" y="%.0f" text-anchor="middle" font-size="10">%s</text>`+"\n", x(t), y0+panelH+14, t.Round(time.Second))
		}
		for ni, name := range names {
			color := palette[ni%len(palette)]
			series := func(f func(sample) float64, dash string) {
				var pts []string
				var lastPID int
				flush := func() {
					if len(pts) > 0 {
						fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="1.5"%s points="%s"/>`+"\n", color, dash, strings.Join(pts, " "))
					}
					pts = pts[:0]
				}
				for _, s := range byProc[name] {
					if s.PID != lastPID { // a restart: a new line
						flush()
						lastPID = s.PID
					}
					if v := f(s); v >= 0 {
						pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(s.T), y(v)))
					}
				}
				flush()
			}
			series(p.value, "")
			if p.dash != nil {
				series(p.dash, ` stroke-dasharray="5 3" stroke-opacity="0.6"`)
			}
			if pi == 0 {
				ly := float64(top) + float64(ni)*16
				fmt.Fprintf(&b, `<line x1="%d" y1="%.0f" x2="%d" y2="%.0f" stroke="%s" stroke-width="3"/><text x="%d" y="%.0f">%s</text>`+"\n",
					width-right+10, ly, width-right+30, ly, color, width-right+35, ly+4, html.EscapeString(name))
			}
		}
	}
	if len(in.AMT) > 0 {
		drawAMT(&b, in, float64(top+len(panels)*(panelH+gap)), left, panelH, plotW, x)
	}
	ny := top + nPanels*(panelH+gap)
	for i, n := range in.Notes {
		fmt.Fprintf(&b, `<text x="%d" y="%d" font-family="monospace" font-size="11">%s</text>`+"\n", left, ny+i*20, html.EscapeString(n))
	}
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten (at least 1).
func niceCeil(v float64) float64 {
	if v <= 1 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

func fmtNum(v float64) string {
	if v == math.Trunc(v) {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.1f", v)
}

// drawAMT draws the AMT panel: datagrams a second each LAN listener
// received between samples (intact ones, each once), next to the rate sent.
func drawAMT(b *strings.Builder, in chartInput, y0 float64, left, panelH int, plotW float64, x func(time.Duration) float64) {
	type pt struct {
		t time.Duration
		v float64
	}
	byBeacon := map[int][]amtSample{}
	var beacons []int
	for _, s := range in.AMT {
		if _, ok := byBeacon[s.Beacon]; !ok {
			beacons = append(beacons, s.Beacon)
		}
		byBeacon[s.Beacon] = append(byBeacon[s.Beacon], s)
	}
	sort.Ints(beacons)
	lines := map[string][]pt{}
	var names []string
	maxV := 0.0
	rate := func(name string, ss []amtSample, f func(amtSample) float64) {
		names = append(names, name)
		for i := 1; i < len(ss); i++ {
			if dt := (ss[i].T - ss[i-1].T).Seconds(); dt > 0 {
				v := (f(ss[i]) - f(ss[i-1])) / dt
				lines[name] = append(lines[name], pt{ss[i].T, v})
				maxV = math.Max(maxV, v)
			}
		}
	}
	if len(beacons) > 0 {
		rate("sent", byBeacon[beacons[0]], func(s amtSample) float64 { return float64(s.Sent) })
	}
	for _, bi := range beacons {
		rate(fmt.Sprintf("beacon%d LAN", bi+1), byBeacon[bi], func(s amtSample) float64 { return float64(s.Received) })
	}
	maxV = niceCeil(maxV)
	y := func(v float64) float64 { return y0 + float64(panelH) - float64(panelH)*math.Max(v, 0)/maxV }
	fmt.Fprintf(b, `<text x="%d" y="%.0f" font-weight="bold">AMT datagrams a second: sent per channel, and received intact by each beacon's LAN listener</text>`+"\n", left, y0-8)
	for _, win := range in.Windows {
		x0, x1 := x(win.Start.Sub(in.Start)), x(win.End.Sub(in.Start))
		fmt.Fprintf(b, `<rect x="%.1f" y="%.0f" width="%.1f" height="%d" fill="#f4a582" fill-opacity="0.35"><title>%s</title></rect>`+"\n",
			x0, y0, math.Max(x1-x0, 1.5), panelH, html.EscapeString(win.Name))
	}
	fmt.Fprintf(b, `<line x1="%.1f" y1="%.0f" x2="%.1f" y2="%.0f" stroke="#555" stroke-dasharray="4 3"/>`+"\n", x(in.Warmup), y0, x(in.Warmup), y0+float64(panelH))
	fmt.Fprintf(b, `<rect x="%d" y="%.0f" width="%.0f" height="%d" fill="none" stroke="#333"/>`+"\n", left, y0, plotW, panelH)
	for i := 0; i <= 4; i++ {
		v := maxV * float64(i) / 4
		fmt.Fprintf(b, `<text x="%d" y="%.0f" text-anchor="end">%s</text>`+"\n", left-5, y(v)+4, fmtNum(v))
	}
	for ni, name := range names {
		color, dash := palette[ni%len(palette)], ""
		if name == "sent" {
			color, dash = "#000", ` stroke-dasharray="2 2"`
		}
		var pts []string
		for _, p := range lines[name] {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(p.t), y(p.v)))
		}
		fmt.Fprintf(b, `<polyline fill="none" stroke="%s" stroke-width="1.5"%s points="%s"/>`+"\n", color, dash, strings.Join(pts, " "))
		ly := y0 + float64(ni)*16
		fmt.Fprintf(b, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="%s" stroke-width="3"/><text x="%.0f" y="%.0f">%s</text>`+"\n",
			float64(left)+plotW+10, ly, float64(left)+plotW+30, ly, color, float64(left)+plotW+35, ly+4, html.EscapeString(name))
	}
}
