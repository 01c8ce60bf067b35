package main

import (
	"bufio"
	"encoding/csv"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// sample is one reading of one process.
type sample struct {
	T          time.Duration // since the start of the load
	Process    string
	PID        int
	RSS        int64 // VmRSS
	RSSAnon    int64 // RssAnon: heap, stacks (file pages such as bbolt's mmap left out)
	FDs        int
	Goroutines int   // from the process's /metrics go_goroutines; -1 unknown
	HeapLive   int64 // go_gc_heap_live_bytes: what the last GC found live; -1 unknown
}

// watched is a process the sampler reads.
type watched struct {
	name    string
	pid     func() (int, bool) // current pid; false between restarts
	metrics string             // URL of its /metrics, "" for none
}

// sampler reads every watched process on a period and appends CSV rows.
type sampler struct {
	mu      sync.Mutex
	samples []sample
	procs   []watched
	start   time.Time
	csv     *csv.Writer
	file    *os.File
	client  http.Client
}

var csvHeader = []string{"t_seconds", "process", "pid", "rss_bytes", "rss_anon_bytes", "open_fds", "goroutines", "heap_live_bytes"}

func newSampler(path string, start time.Time, procs []watched) (*sampler, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	s := &sampler{procs: procs, start: start, file: f, csv: csv.NewWriter(f), client: http.Client{Timeout: 3 * time.Second}}
	s.csv.Write(csvHeader)
	s.csv.Flush()
	return s, s.csv.Error()
}

// take reads every process once. A process between restarts is skipped.
func (s *sampler) take() {
	t := time.Since(s.start)
	for _, w := range s.procs {
		pid, ok := w.pid()
		if !ok {
			continue
		}
		st, err := procStatus(pid)
		if err != nil {
			continue
		}
		fds, err := countFDs(pid)
		if err != nil {
			continue
		}
		g, live := -1, int64(-1)
		if w.metrics != "" {
			if v, err := s.scrape(w.metrics, "go_goroutines", "go_gc_heap_live_bytes"); err == nil {
				if x, ok := v["go_goroutines"]; ok {
					g = int(x)
				}
				if x, ok := v["go_gc_heap_live_bytes"]; ok {
					live = int64(x)
				}
			}
		}
		smp := sample{T: t, Process: w.name, PID: pid, RSS: st["VmRSS"], RSSAnon: st["RssAnon"], FDs: fds, Goroutines: g, HeapLive: live}
		s.mu.Lock()
		s.samples = append(s.samples, smp)
		s.csv.Write([]string{strconv.FormatFloat(t.Seconds(), 'f', 1, 64), w.name, strconv.Itoa(pid),
			strconv.FormatInt(smp.RSS, 10), strconv.FormatInt(smp.RSSAnon, 10), strconv.Itoa(fds), strconv.Itoa(g), strconv.FormatInt(live, 10)})
		s.csv.Flush()
		s.mu.Unlock()
	}
}

func (s *sampler) all() []sample {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]sample(nil), s.samples...)
}

func (s *sampler) close() error {
	s.csv.Flush()
	return errors.Join(s.csv.Error(), s.file.Close())
}

// scrape reads unlabelled samples from a Prometheus text page; names the
// page lacks are missing from the map.
func (s *sampler) scrape(url string, names ...string) (map[string]float64, error) {
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", url, resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	out := map[string]float64{}
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 2 && slices.Contains(names, f[0]) {
			if v, err := strconv.ParseFloat(f[1], 64); err == nil {
				out[f[0]] = v
			}
		}
	}
	return out, sc.Err()
}

// procStatus reads the kB fields of /proc/PID/status, in bytes.
func procStatus(pid int) (map[string]int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return nil, err
	}
	out := map[string]int64{}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 3 && f[2] == "kB" {
			if kb, err := strconv.ParseInt(f[1], 10, 64); err == nil {
				out[strings.TrimSuffix(f[0], ":")] = kb << 10
			}
		}
	}
	if _, ok := out["VmRSS"]; !ok {
		return nil, fmt.Errorf("pid %d: no VmRSS", pid)
	}
	return out, nil
}

func countFDs(pid int) (int, error) {
	d, err := os.Open("/proc/" + strconv.Itoa(pid) + "/fd")
	if err != nil {
		return 0, err
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	return len(names), err
}
