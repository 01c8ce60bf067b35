// Package contractcmd is `castd contracts`: checks of capacity contracts
// anyone can run. `castd contracts verify` confirms on chain that a
// contract is anchored: the memo exists, is confirmed, is signed by the
// CAST key the checker names and names this contract, whose ID is still
// its offer's.
package contractcmd

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/blockcast/beacon/cloud/adminapi"
	"github.com/blockcast/beacon/cloud/contracts"
	"github.com/blockcast/beacon/shared/cli"
	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/protocol"
	"github.com/blockcast/beacon/shared/solrpc"
)

// Exit codes.
const (
	ExitOK    = 0
	ExitFail  = 1 // refused, or could not be checked
	ExitUsage = 2
)

// MaxView bounds a contract view (GET /v1/contracts/{id}): a contract is
// at most 8 KiB, its evaluation a few more.
const MaxView = 64 << 10

// ErrBadView: not a contract view.
var ErrBadView = errors.New("contractcmd: not a contract view")

const intro = `castd contracts — check a capacity contract's anchor on chain.

Usage:
  castd contracts verify --solana-rpc URL --cast-key KEY (--file VIEW.json | --url URL --token TOKEN ID) [--signature SIG]

verify reads the contract and the transaction that anchors it (castd's
GET /v1/contracts/ID answer, from castd or a saved file), checks the
contract on its own (every signature; its ID is its signed offer's) and
then on chain: the transaction is confirmed, succeeded, is signed by
--cast-key (the CAST key you made the offer to: not the file's word) and
carries the memo blockcast:contract:v1:ID. --signature checks another
transaction instead of the one castd names. Exit 0: anchored; 1: refused
or not checkable; 2: usage.
`

// View is the part of castd's contract view verify reads.
type View struct {
	Contract contracts.Contract `json:"contract"`
	Anchor   *struct {
		Signature string `json:"signature"`
	} `json:"anchor"`
}

// DecodeView parses a contract view (bounded). It does not verify the
// contract: CheckAnchor does.
func DecodeView(b []byte) (View, error) {
	if len(b) > MaxView {
		return View{}, fmt.Errorf("%w: %d bytes, more than %d", ErrBadView, len(b), MaxView)
	}
	var v View
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&v); err != nil {
		return View{}, fmt.Errorf("%w: %w", ErrBadView, err)
	}
	if dec.More() {
		return View{}, fmt.Errorf("%w: data after the view", ErrBadView)
	}
	if v.Contract.ID == "" {
		return View{}, fmt.Errorf("%w: no contract", ErrBadView)
	}
	return v, nil
}

// Run runs `castd contracts ARGS`.
func Run(args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	if getenv == nil {
		getenv = os.Getenv
	}
	fs := flag.NewFlagSet("castd contracts", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		rpcURL, castKey, file, baseURL, token, sig string
		timeout                                    time.Duration
	)
	fs.StringVar(&rpcURL, "solana-rpc", "", "Solana JSON-RPC endpoint the anchor is checked on (required)")
	fs.StringVar(&castKey, "cast-key", "", "the CAST key (base58) that must have countersigned and anchored the contract (required)")
	fs.StringVar(&file, "file", "", "a saved GET /v1/contracts/ID answer")
	fs.StringVar(&baseURL, "url", "http://127.0.0.1:8080", "castd's API URL (without --file)")
	fs.StringVar(&token, "token", "", "an owner's session token or castd's --admin-token (without --file)")
	fs.StringVar(&sig, "signature", "", "check this transaction instead of the one the view names")
	fs.DurationVar(&timeout, "timeout", 30*time.Second, "how long to wait for castd and the endpoint")
	fs.Usage = cli.Usage(fs, "CASTD", intro)
	usage := func(msg string) int {
		fmt.Fprintf(stderr, "castd contracts: %s (see castd contracts --help)\n", msg)
		return ExitUsage
	}
	if _, code, ok := cli.ParseVerb(fs, args, "castd contracts", "CASTD", getenv, stderr, "verify"); !ok {
		return code
	}
	cast, err := identity.ParsePublicKey(castKey)
	if err != nil {
		return usage("--cast-key: " + err.Error())
	}
	cl, err := solrpc.New(rpcURL)
	if err != nil {
		return usage("--solana-rpc: " + err.Error())
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var raw []byte
	switch {
	case file != "" && fs.NArg() == 0:
		if raw, err = readFile(file); err != nil {
			fmt.Fprintln(stderr, "castd contracts verify:", err)
			return ExitFail
		}
	case file == "" && fs.NArg() == 1:
		u, err := url.Parse(baseURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return usage(fmt.Sprintf("--url %q: want http(s)://host:port", baseURL))
		}
		if token == "" {
			return usage("--token is required to read a contract from castd")
		}
		if raw, err = (&adminapi.Client{URL: baseURL, Token: token}).Do(ctx, http.MethodGet, protocol.PathContracts+"/"+url.PathEscape(fs.Arg(0)), nil, MaxView); err != nil {
			fmt.Fprintln(stderr, "castd contracts verify:", err)
			return ExitFail
		}
	default:
		return usage("want --file VIEW.json or one contract ID")
	}
	v, err := DecodeView(raw)
	if err != nil {
		fmt.Fprintln(stderr, "castd contracts verify:", err)
		return ExitFail
	}
	if fs.NArg() == 1 && v.Contract.ID != fs.Arg(0) {
		fmt.Fprintf(stderr, "castd contracts verify: castd answered contract %s, not %s\n", v.Contract.ID, fs.Arg(0))
		return ExitFail
	}
	if sig == "" && v.Anchor != nil {
		sig = v.Anchor.Signature
	}
	rec, err := contracts.CheckAnchor(ctx, cl, v.Contract, sig, cast)
	if err != nil {
		fmt.Fprintf(stderr, "castd contracts verify: contract %s: REFUSED: %v\n", v.Contract.ID, err)
		return ExitFail
	}
	fmt.Fprintf(stdout, "contract %s anchored: transaction %s, slot %d, signed by the CAST key %s\n", v.Contract.ID, rec.Signature, rec.Slot, cast)
	return ExitOK
}

func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, MaxView+1))
}
