// Command fuzzall runs every fuzz target of the module for a fixed time
// each (`make fuzz`), carries on past a failing one, and ends with a table:
// target, executions, new coverage, result. It exits 1 when any target
// failed, so that a long run's verdict is one exit code.
package main

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"
)

type result struct {
	pkg, target string
	execs       string // as go test printed it
	newCov      string
	verdict     string // ok, FAIL, or why it did not run
	input       string // the failing input go test saved, if any
	log         string
}

func main() {
	fuzztime := flag.String("fuzztime", "10s", "how long each target runs (go test -fuzztime)")
	match := flag.String("run", "", "only targets whose package/name matches this regular expression (a plain name matches where it appears)")
	logDir := flag.String("logs", "", "directory for each target's output (default: a temporary one)")
	jobs := flag.Int("jobs", 1, "targets fuzzed at once; each gets GOMAXPROCS/jobs workers (at least 1)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *logDir == "" {
		d, err := os.MkdirTemp("", "fuzzall-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "fuzzall:", err)
			os.Exit(2)
		}
		*logDir = d
	}
	if err := os.MkdirAll(*logDir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "fuzzall:", err)
		os.Exit(2)
	}
	re, err := regexp.Compile(*match)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fuzzall: --run:", err)
		os.Exit(2)
	}
	pkgs, err := goList(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fuzzall:", err)
		os.Exit(2)
	}
	type job struct{ pkg, target string }
	var todo []job
	var results []result
	for _, pkg := range pkgs {
		targets, err := listFuzz(ctx, pkg)
		if err != nil {
			results = append(results, result{pkg: pkg, target: "(list)", verdict: "FAIL", log: err.Error()})
			continue
		}
		for _, t := range targets {
			if re.MatchString(pkg + "/" + t) {
				todo = append(todo, job{pkg, t})
			}
		}
	}
	if *jobs < 1 {
		*jobs = 1
	}
	workers := max(1, runtime.GOMAXPROCS(0) / *jobs)
	ran := make([]result, len(todo))
	next := make(chan int)
	var wg sync.WaitGroup
	var mu sync.Mutex
	for range *jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				r := runTarget(ctx, todo[i].pkg, todo[i].target, *fuzztime, workers, *logDir)
				if r.coordinatorDeadline() {
					// Go's fuzz coordinator can report its own -fuzztime
					// deadline as a failure on a loaded machine, with no
					// input (go.dev/issue/75804, fixed in Go 1.27): run the
					// target again, whole; a real finding fails again.
					first := r.log
					r = runTarget(ctx, todo[i].pkg, todo[i].target, *fuzztime, workers, *logDir)
					if r.verdict == "ok" {
						r.verdict = "ok (run again after go#75804: " + first + ".1)"
					}
				}
				mu.Lock()
				fmt.Printf("== %s %s: %s (%s execs, %s new)\n", short(r.pkg), r.target, r.verdict, r.execs, r.newCov)
				mu.Unlock()
				ran[i] = r
			}
		}()
	}
	for i := range todo {
		if ctx.Err() != nil {
			break
		}
		next <- i
	}
	close(next)
	wg.Wait()
	for _, r := range ran {
		if r.target != "" {
			results = append(results, r)
		}
	}
	failed := printTable(os.Stdout, results)
	fmt.Printf("logs: %s\n", *logDir)
	if failed > 0 || ctx.Err() != nil {
		os.Exit(1)
	}
}

func goList(ctx context.Context) ([]string, error) {
	out, err := exec.CommandContext(ctx, "go", "list", "./...").Output()
	if err != nil {
		return nil, fmt.Errorf("go list: %w", err)
	}
	return strings.Fields(string(out)), nil
}

func listFuzz(ctx context.Context, pkg string) ([]string, error) {
	out, err := exec.CommandContext(ctx, "go", "test", "-list", "^Fuzz", pkg).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("go test -list %s: %v\n%s", pkg, err, out)
	}
	var ts []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "Fuzz") {
			ts = append(ts, strings.TrimSpace(l))
		}
	}
	return ts, nil
}

var (
	progress = regexp.MustCompile(`execs: (\d+) .*new interesting: (\d+)`)
	saved    = regexp.MustCompile(`(testdata/fuzz/Fuzz\w+/\w+)`)
)

func runTarget(ctx context.Context, pkg, target, fuzztime string, workers int, logDir string) result {
	r := result{pkg: pkg, target: target, execs: "-", newCov: "-"}
	r.log = filepath.Join(logDir, strings.ReplaceAll(short(pkg), "/", "_")+"_"+target+".log")
	cmd := exec.CommandContext(ctx, "go", "test", "-run", "^$", "-fuzz", "^"+target+"$", "-fuzztime", fuzztime, "-parallel", strconv.Itoa(workers), pkg)
	var buf bytes.Buffer
	f, err := os.Create(r.log)
	if err != nil {
		r.verdict = "FAIL"
		return r
	}
	defer f.Close()
	cmd.Stdout = io.MultiWriter(&buf, f)
	cmd.Stderr = cmd.Stdout
	runErr := cmd.Run()
	sc := bufio.NewScanner(&buf)
	for sc.Scan() {
		if m := progress.FindStringSubmatch(sc.Text()); m != nil {
			r.execs, r.newCov = m[1], m[2]
		}
		if m := saved.FindStringSubmatch(sc.Text()); m != nil {
			r.input = m[1]
		}
	}
	switch {
	case runErr == nil:
		r.verdict = "ok"
	case ctx.Err() != nil:
		r.verdict = "interrupted"
	default:
		r.verdict = "FAIL"
	}
	return r
}

// coordinatorDeadline reports whether r failed only with the fuzz
// coordinator's "context deadline exceeded" and saved no input. It keeps
// that run's log beside the next one's (log + ".1").
func (r *result) coordinatorDeadline() bool {
	if r.verdict != "FAIL" || r.input != "" {
		return false
	}
	b, err := os.ReadFile(r.log)
	if err != nil || !bytes.Contains(b, []byte("context deadline exceeded")) || bytes.Contains(b, []byte("Failing input written")) {
		return false
	}
	return os.Rename(r.log, r.log+".1") == nil
}

func short(pkg string) string {
	return strings.TrimPrefix(pkg, "github.com/blockcast/beacon/")
}

// printTable writes the summary and returns how many targets failed.
func printTable(w io.Writer, rs []result) int {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "\nTARGET\tEXECUTIONS\tNEW COVERAGE\tRESULT")
	failed := 0
	for _, r := range rs {
		v := r.verdict
		if v != "ok" {
			failed++
			if r.input != "" {
				v += " (input " + filepath.Join(short(r.pkg), r.input) + ")"
			} else {
				v += " (log " + r.log + ")"
			}
		}
		fmt.Fprintf(tw, "%s.%s\t%s\t%s\t%s\n", short(r.pkg), r.target, r.execs, r.newCov, v)
	}
	tw.Flush()
	fmt.Fprintf(w, "%d targets, %d failed, %s\n", len(rs), failed, time.Now().UTC().Format(time.RFC3339))
	return failed
}
