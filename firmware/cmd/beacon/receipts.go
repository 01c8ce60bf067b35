package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/blockcast/beacon/shared/cli"
	"github.com/blockcast/beacon/shared/onchain"
	"github.com/blockcast/beacon/shared/solrpc"
)

// receiptsCmd is `beacon receipts check PROOF.json`: a receipt's proof
// (castd receipts prove) checked against the chain, trusting neither castd
// nor the proof for the CAST key.
func receiptsCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("beacon receipts", flag.ContinueOnError)
	fs.SetOutput(stderr)
	stateDir := fs.String("state-dir", defaultStateDir, "state directory (holds the pinned CAST key)")
	rpcURL := fs.String("solana-rpc", "", "Solana JSON-RPC endpoint (required)")
	castKey := fs.String("cast-key", "", "CAST key the anchor must be signed by (default: the pinned one)")
	timeout := fs.Duration("timeout", time.Minute, "how long to wait for the endpoint")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: beacon receipts check PROOF.json --solana-rpc URL [--cast-key KEY]")
		fmt.Fprintln(stderr, "Checks the receipt's signature, its path to the day's root, and that the root is in a confirmed memo signed by the CAST key.")
		fs.PrintDefaults()
	}
	if len(args) == 0 || args[0] != "check" {
		fs.Usage()
		return 2
	}
	// The file may come before or after the flags.
	var pos []string
	for rest := args[1:]; ; {
		if err := fs.Parse(rest); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return 0
			}
			return 2
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		rest = fs.Args()[1:]
	}
	if err := cli.ApplyEnv(fs, "BEACON", nil); err != nil {
		fmt.Fprintln(stderr, "beacon:", err)
		return 2
	}
	if len(pos) != 1 {
		fmt.Fprintln(stderr, "beacon receipts check: give one proof file (castd receipts prove > PROOF.json; - reads stdin)")
		return 2
	}
	c, err := solrpc.New(*rpcURL)
	if err != nil {
		fmt.Fprintf(stderr, "beacon receipts check: --solana-rpc: %v\n", err)
		return 2
	}
	k, err := castKeyArg(*castKey, *stateDir)
	if err != nil {
		fmt.Fprintf(stderr, "beacon receipts check: %v\n", err)
		return 2
	}
	var raw []byte
	if pos[0] == "-" {
		raw, err = io.ReadAll(io.LimitReader(os.Stdin, onchain.MaxDayProof+1))
	} else {
		raw, err = readBounded(pos[0], onchain.MaxDayProof+1)
	}
	if err != nil {
		fmt.Fprintf(stderr, "beacon receipts check: %v\n", err)
		return 1
	}
	p, err := onchain.DecodeDayProof(raw)
	if err != nil {
		fmt.Fprintf(stderr, "beacon receipts check: %s: %v\n", pos[0], err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	s, rec, err := p.Verify(ctx, c, k)
	if err != nil {
		fmt.Fprintf(stderr, "beacon receipts check: NOT proved: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "receipt %d of node %s (%d requests, %d bytes) is in day %s's root %s (%d receipts), anchored by CAST key %s in transaction %s, slot %d\n",
		s.Receipt.Seq, s.Receipt.Node, s.Receipt.Requests, s.Receipt.Bytes, p.Day, p.Root, p.N, k, rec.Signature, rec.Slot)
	return 0
}

func readBounded(path string, n int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, n))
}
