// Package receiptcmd is `castd receipts`: the operator's commands on
// delivery receipts, through castd's API. `castd receipts prove` prints a
// receipt's self-contained proof against its day's anchor on chain, which
// `beacon receipts check` (or anyone) verifies.
package receiptcmd

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"time"

	"github.com/blockcast/beacon/cloud/adminapi"
	"github.com/blockcast/beacon/shared/cli"
	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/onchain"
	"github.com/blockcast/beacon/shared/protocol"
)

// Exit codes.
const (
	ExitOK    = 0
	ExitFail  = 1
	ExitUsage = 2
)

const intro = `castd receipts — delivery receipts, through castd's API.

Usage:
  castd receipts prove --node ID --seq N [--day DAY] [--url URL] --admin-token TOKEN

prove prints, as JSON, node ID's receipt N with its inclusion path to the
root of the day castd accepted it in and the transaction that anchored
that root on chain (castd --receipt-anchor daily): everything
` + "`beacon receipts check PROOF.json`" + ` needs. --day (e.g. 2026-12-05)
refuses a receipt of another day. Until the day is anchored prove fails,
unless --unanchored (the proof then stops at the day's root).
`

// Run runs `castd receipts ARGS`.
func Run(args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	if getenv == nil {
		getenv = os.Getenv
	}
	fs := flag.NewFlagSet("castd receipts", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		baseURL, token, node, day string
		seq                       uint64
		unanchored                bool
		timeout                   time.Duration
	)
	fs.StringVar(&baseURL, "url", "http://127.0.0.1:8080", "castd's API URL")
	fs.StringVar(&token, "admin-token", "", "castd's --admin-token (required)")
	fs.StringVar(&node, "node", "", "the node's ID (base58)")
	fs.Uint64Var(&seq, "seq", 0, "the receipt's sequence number")
	fs.StringVar(&day, "day", "", "the day the receipt must be in (as in the proof: 2026-12-05)")
	fs.BoolVar(&unanchored, "unanchored", false, "print the proof even when its day is not anchored yet")
	fs.DurationVar(&timeout, "timeout", 15*time.Second, "how long to wait for castd")
	fs.Usage = cli.Usage(fs, "CASTD", intro)
	usage := func(msg string) int {
		fmt.Fprintf(stderr, "castd receipts: %s (see castd receipts --help)\n", msg)
		return ExitUsage
	}
	if _, code, ok := cli.ParseVerb(fs, args, "castd receipts", "CASTD", getenv, stderr, "prove"); !ok {
		return code
	}
	if fs.NArg() > 0 {
		return usage(fmt.Sprintf("unexpected arguments %q", fs.Args()))
	}
	if _, err := identity.ParsePublicKey(node); err != nil {
		return usage("--node: " + err.Error())
	}
	if seq == 0 {
		return usage("--seq: want a receipt's sequence number (1 or more)")
	}
	if token == "" {
		return usage("--admin-token is required")
	}
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return usage(fmt.Sprintf("--url %q: want http(s)://host:port", baseURL))
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	p, err := fetch(ctx, baseURL, protocol.PathReceipts+"/"+node+"/"+strconv.FormatUint(seq, 10), token)
	if err != nil {
		fmt.Fprintln(stderr, "castd receipts prove:", err)
		return ExitFail
	}
	// castd's answer is checked before it is handed on: a proof that
	// does not hold is castd's bug, not something to pass to a payee.
	s, err := p.Check()
	if err != nil {
		fmt.Fprintln(stderr, "castd receipts prove: castd's proof does not hold:", err)
		return ExitFail
	}
	if s.Receipt.Node != node || s.Receipt.Seq != seq {
		fmt.Fprintf(stderr, "castd receipts prove: castd answered receipt %d of %s\n", s.Receipt.Seq, s.Receipt.Node)
		return ExitFail
	}
	if day != "" && p.Day != day {
		fmt.Fprintf(stderr, "castd receipts prove: receipt %d of %s is in day %s, not %s\n", seq, node, p.Day, day)
		return ExitFail
	}
	if p.Anchor == nil && !unanchored {
		fmt.Fprintf(stderr, "castd receipts prove: day %s is not anchored on chain yet (castd --receipt-anchor daily anchors a day once it has closed); --unanchored prints the proof to the root\n", p.Day)
		return ExitFail
	}
	out, _ := json.MarshalIndent(p, "", "  ")
	fmt.Fprintf(stdout, "%s\n", out)
	return ExitOK
}

func fetch(ctx context.Context, baseURL, path, token string) (*onchain.DayProof, error) {
	b, err := (&adminapi.Client{URL: baseURL, Token: token}).Do(ctx, http.MethodGet, path, nil, onchain.MaxDayProof)
	if err != nil {
		return nil, err
	}
	return onchain.DecodeDayProof(b)
}
