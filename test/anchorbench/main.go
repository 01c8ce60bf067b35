// Command anchorbench prints the figures of the receipts' proof path
// (`make bench`): signed receipts verified per second on one core, and
// what the daily anchor costs on chain (one Memo transaction on the
// LiteSVM endpoint: its fee, measured as the CAST key's balance change,
// and its size) next to anchoring every receipt.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/onchain"
	"github.com/blockcast/beacon/shared/receipt"
	"github.com/blockcast/beacon/shared/solrpc"
	"github.com/blockcast/beacon/test/solana/solanatest"
)

func main() {
	nodes := flag.Int("nodes", 10_000, "nodes in the fleet")
	perDay := flag.Int("receipts", 144, "receipts a node makes a day (one each 10 min)")
	records := flag.Int("records", 100, "request records under each benchmark receipt")
	flag.Parse()
	if err := run(*nodes, *perDay, *records); err != nil {
		fmt.Fprintln(os.Stderr, "anchorbench:", err)
		os.Exit(1)
	}
}

func run(nodes, perDay, records int) error {
	// Receipts verified per second on one core: real receipts of many
	// nodes, each opened as castd does (decode, signature, bounds).
	const n = 512
	raws := make([][]byte, n)
	keys := make([]identity.PublicKey, n)
	for i := range raws {
		kp, err := identity.Generate()
		if err != nil {
			return err
		}
		start := time.Now().Add(-10 * time.Minute)
		rs := make([]receipt.Record, records)
		for j := range rs {
			rs[j] = receipt.Record{TS: start.Add(time.Duration(j) * time.Second).UnixMilli(),
				Key: receipt.HexHash(receipt.KeyHash(fmt.Sprintf("/obj/%d", j%17))), Bytes: 64 << 10, Status: 200, Path: receipt.Path(j % 3)}
		}
		s, err := receipt.Sign(kp, receipt.Summarize(kp.ID(), 1, start.UnixMilli(), start.Add(10*time.Minute).UnixMilli(), rs, receipt.Overflow{}))
		if err != nil {
			return err
		}
		raws[i], keys[i] = s.Marshal(), kp.Public()
	}
	prev := runtime.GOMAXPROCS(1)
	res := testing.Benchmark(func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if _, err := receipt.Open(raws[i%n], keys[i%n]); err != nil {
				b.Fatal(err)
			}
		}
	})
	runtime.GOMAXPROCS(prev)
	perSec := float64(res.N) / res.T.Seconds()

	// One day's anchor on the LiteSVM endpoint.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	chain, err := solanatest.Launch(ctx)
	if err != nil {
		return fmt.Errorf("LiteSVM endpoint: %w", err)
	}
	defer chain.Close()
	cast, _ := identity.Generate()
	if err := chain.Call(ctx, "requestAirdrop", []any{cast.ID(), 1_000_000_000}, nil); err != nil {
		return err
	}
	c, _ := solrpc.New(chain.URL)
	balance := func() (uint64, error) {
		var r struct{ Value uint64 }
		err := chain.Call(ctx, "getBalance", []any{cast.ID()}, &r)
		return r.Value, err
	}
	before, err := balance()
	if err != nil {
		return err
	}
	var root receipt.Hash
	root[0] = 0xa5
	count := uint64(nodes * perDay)
	memo := onchain.DayMemo("2026-12-05", root, count)
	sig, _, err := onchain.Submit(ctx, c, cast, memo, onchain.SubmitOptions{Poll: 20 * time.Millisecond})
	if err != nil {
		return err
	}
	after, err := balance()
	if err != nil {
		return err
	}
	landed, err := c.Transaction(ctx, sig)
	if err != nil {
		return err
	}
	raw, err := landed.Tx.MarshalBinary()
	if err != nil {
		return err
	}
	fee, size := before-after, len(raw)
	const lamportsPerSOL = 1e9
	fmt.Printf("Receipts (%d records each), verified on 1 core: %.0f/s (%.1f µs each); a day of %d nodes × %d = %d receipts: %.1f core-seconds\n",
		records, perSec, 1e6/perSec, nodes, perDay, count, float64(count)/perSec)
	fmt.Printf("%-26s %12s %16s %14s\n", "anchoring", "transactions", "fee (lamports)", "bytes on chain")
	fmt.Printf("%-26s %12d %16d %14d\n", "daily root (one memo)", 1, fee, size)
	fmt.Printf("%-26s %12d %16d %14d\n", "each receipt (one memo)", count, count*fee, count*uint64(size))
	fmt.Printf("daily anchor: %.6f SOL a day; per-receipt anchoring: %.2f SOL a day (%d× more)\n",
		float64(fee)/lamportsPerSOL, float64(count*fee)/lamportsPerSOL, count)
	return nil
}
