package report

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/blockcast/beacon/cloud/adminapi"
	"github.com/blockcast/beacon/shared/cli"
	"github.com/blockcast/beacon/shared/protocol"
)

const intro = `castd report — per node, per owner and per contract figures for a payout period.

Usage:
  castd report --from 2026-12-01 --to 2027-01-01 [--format csv|json] --admin-token TOKEN [--url http://castd:8080]

It asks the running castd (GET /v1/report) and prints the answer: with the
operator's --admin-token every node, owner and contract; with an owner's
session token (--admin-token bco_...) only that owner's. Times are RFC 3339
or dates (UTC midnight); the period is [from, to).
`

// Run is `castd report`; it returns the exit code.
func Run(args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	if getenv == nil {
		getenv = os.Getenv
	}
	fs := flag.NewFlagSet("castd report", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var baseURL, token, from, to, format string
	var timeout time.Duration
	fs.StringVar(&baseURL, "url", "http://127.0.0.1:8080", "castd's API URL")
	fs.StringVar(&token, "admin-token", "", "castd's --admin-token, or an owner's session token (required)")
	fs.StringVar(&from, "from", "", "start of the period, RFC 3339 or YYYY-MM-DD (required)")
	fs.StringVar(&to, "to", "", "end of the period, exclusive (required)")
	fs.StringVar(&format, "format", "csv", "csv or json")
	fs.DurationVar(&timeout, "timeout", time.Minute, "how long to wait for castd")
	fs.Usage = cli.Usage(fs, "CASTD", intro)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if err := cli.ApplyEnv(fs, "CASTD", getenv); err != nil {
		fmt.Fprintln(stderr, "castd report:", err)
		return 2
	}
	usage := func(msg string) int {
		fmt.Fprintf(stderr, "castd report: %s (see castd report --help)\n", msg)
		return 2
	}
	switch {
	case fs.NArg() > 0:
		return usage(fmt.Sprintf("unexpected arguments %q", fs.Args()))
	case token == "":
		return usage("--admin-token is required")
	case format != "csv" && format != "json":
		return usage("--format is csv or json")
	}
	if _, _, err := ParsePeriod(from, to); err != nil {
		return usage(err.Error())
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	q := url.Values{"from": {from}, "to": {to}, "format": {format}}
	resp, err := (&adminapi.Client{URL: baseURL, Token: token}).Open(ctx, http.MethodGet, protocol.PathReport+"?"+q.Encode(), nil)
	if err != nil {
		fmt.Fprintln(stderr, "castd report:", err)
		return 1
	}
	defer resp.Body.Close()
	if _, err := io.Copy(stdout, resp.Body); err != nil {
		fmt.Fprintln(stderr, "castd report: reading castd's answer:", err)
		return 1
	}
	return 0
}
