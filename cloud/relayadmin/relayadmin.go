// Package relayadmin is the `castd relays` command: it lists relays and
// approves or revokes the prefixes clients are routed to them for, through
// the operator API of a running castd.
package relayadmin

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/blockcast/beacon/cloud/adminapi"
	"github.com/blockcast/beacon/shared/cli"
	"github.com/blockcast/beacon/shared/protocol"
)

// Exit codes of Run.
const (
	ExitOK     = 0
	ExitFailed = 1 // castd refused the request, or could not be reached
	ExitUsage  = 2
)

// ErrRefused wraps an error answer from castd.
var ErrRefused = adminapi.ErrRefused

// Client calls the relay API of one castd.
type Client struct {
	URL   string // castd's base URL
	Token string // castd's --admin-token
	HTTP  *http.Client
}

// List returns every relay and the coverage-zone file in force.
func (c *Client) List(ctx context.Context) (protocol.RelayNodeList, error) {
	var out protocol.RelayNodeList
	return out, c.do(ctx, http.MethodGet, protocol.PathRelayNodes, nil, &out)
}

// Approve approves cidrs for relay id (none: everything it requests).
func (c *Client) Approve(ctx context.Context, id string, cidrs []string, by string) (protocol.RelayNodeView, error) {
	var out protocol.RelayNodeView
	return out, c.do(ctx, http.MethodPost, protocol.RelayNodePath(url.PathEscape(id), protocol.RelayNodeApprove), &protocol.RelayNodeChange{CIDRs: cidrs, By: by}, &out)
}

// Revoke revokes cidrs from relay id (none: everything approved).
func (c *Client) Revoke(ctx context.Context, id string, cidrs []string, by string) (protocol.RelayNodeView, error) {
	var out protocol.RelayNodeView
	return out, c.do(ctx, http.MethodPost, protocol.RelayNodePath(url.PathEscape(id), protocol.RelayNodeRevoke), &protocol.RelayNodeChange{CIDRs: cidrs, By: by}, &out)
}

func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	api := adminapi.Client{URL: c.URL, Token: c.Token, HTTP: c.HTTP}
	b, err := api.Do(ctx, method, path, body, 64<<20)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("castd's answer is not what this castd expects: %w", err)
	}
	return nil
}

const intro = `castd relays — who may serve which clients.

A relay's CIDRs are only a request: castd routes clients to a relay only for
the prefixes the operator approved here, or assigned to it in the
--coverage-zone file. This command calls the operator API of a running
castd, with the token castd was started with (--admin-token).

Usage:
  castd relays list                   relays, their state and prefixes
  castd relays approve ID [CIDR...]   approve these prefixes (none: all it requests)
  castd relays revoke ID [CIDR...]    revoke these prefixes (none: all approved)

An approval may name prefixes the relay did not request. Prefixes from the
coverage-zone file are changed by editing the file.
Exit status: 0 done, 1 castd refused or could not be reached, 2 usage error.
`

// Run runs `castd relays` with args (after the word "relays") and returns
// the exit status. getenv nil means os.Getenv.
func Run(args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	if getenv == nil {
		getenv = os.Getenv
	}
	fs := flag.NewFlagSet("castd relays", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		baseURL, token, by string
		asJSON             bool
		timeout            time.Duration
	)
	fs.StringVar(&baseURL, "url", "http://127.0.0.1:8080", "castd's API URL")
	fs.StringVar(&token, "admin-token", "", "castd's --admin-token (required)")
	fs.StringVar(&by, "by", getenv("USER"), "operator name recorded with an approval or revocation")
	fs.BoolVar(&asJSON, "json", false, "print castd's JSON answer")
	fs.DurationVar(&timeout, "timeout", 15*time.Second, "how long to wait for castd")
	fs.Usage = cli.Usage(fs, "CASTD", intro)
	// Flags may come before or after the verb and the arguments.
	var pos []string
	for rest := args; ; {
		if err := fs.Parse(rest); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return ExitOK
			}
			return ExitUsage
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		rest = fs.Args()[1:]
	}
	if err := cli.ApplyEnv(fs, "CASTD", getenv); err != nil {
		fmt.Fprintln(stderr, "castd relays:", err)
		return ExitUsage
	}
	usage := func(msg string) int {
		fmt.Fprintf(stderr, "castd relays: %s (see castd relays --help)\n", msg)
		return ExitUsage
	}
	if len(pos) == 0 {
		return usage("say list, approve or revoke")
	}
	verb, pos := pos[0], pos[1:]
	switch verb {
	case "list":
		if len(pos) > 0 {
			return usage(fmt.Sprintf("list takes no arguments, got %q", pos))
		}
	case "approve", "revoke":
		if len(pos) == 0 {
			return usage(verb + " needs the relay's node ID")
		}
	default:
		return usage(fmt.Sprintf("unknown command %q: say list, approve or revoke", verb))
	}
	if token == "" {
		return usage("--admin-token (or CASTD_ADMIN_TOKEN) is required")
	}
	u, err := protocol.ParseBaseURL(baseURL)
	if err != nil {
		return usage("--url: " + err.Error())
	}
	if u.Scheme == "http" && !isLoopback(u.Hostname()) {
		fmt.Fprintf(stderr, "castd relays: warning: sending the admin token unencrypted to %s (use https, or run this on castd's host)\n", u.Host)
	}
	c := &Client{URL: baseURL, Token: token, HTTP: &http.Client{Timeout: timeout}}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var out any
	switch verb {
	case "list":
		var l protocol.RelayNodeList
		l, err = c.List(ctx)
		out = l
		if err == nil && !asJSON {
			printList(stdout, l)
		}
	case "approve", "revoke":
		var v protocol.RelayNodeView
		if verb == "approve" {
			v, err = c.Approve(ctx, pos[0], pos[1:], by)
		} else {
			v, err = c.Revoke(ctx, pos[0], pos[1:], by)
		}
		out = v
		if err == nil && !asJSON {
			printChange(stdout, verb, v)
		}
	}
	if err != nil {
		fmt.Fprintln(stderr, "castd relays:", err)
		return ExitFailed
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(out)
	}
	return ExitOK
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func list(s []string) string {
	if len(s) == 0 {
		return "-"
	}
	return strings.Join(s, ",")
}

func printList(w io.Writer, l protocol.RelayNodeList) {
	if z := l.CoverageZone; z != nil {
		fmt.Fprintf(w, "coverage-zone %s: revision %q, %d groups, %d prefixes, loaded %s\n", z.Path, z.Revision, z.Groups, z.Prefixes, z.LoadedAt.Format(time.RFC3339))
		if z.LastError != "" {
			fmt.Fprintf(w, "  last reload failed (older file still in force): %s\n", z.LastError)
		}
		if len(z.Unassigned) > 0 {
			fmt.Fprintf(w, "  groups naming no relay: %s\n", strings.Join(z.Unassigned, ","))
		}
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tEFFECTIVE\tNOT APPROVED\tLAN URL")
	for _, v := range l.RelayNodes {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", v.ID, v.State, list(v.Effective), list(v.Pending), v.LANURL)
	}
	tw.Flush()
}

func printChange(w io.Writer, verb string, v protocol.RelayNodeView) {
	switch verb {
	case "approve":
		fmt.Fprintf(w, "approved for %s: %s\n", v.ID, list(v.Added))
	default:
		fmt.Fprintf(w, "revoked from %s: %s\n", v.ID, list(v.Removed))
	}
	fmt.Fprintf(w, "state %s; routed for: %s; requested, not approved: %s\n", v.State, list(v.Effective), list(v.Pending))
}
