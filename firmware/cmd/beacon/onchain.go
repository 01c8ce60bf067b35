package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/blockcast/beacon/firmware/beacon"
	"github.com/blockcast/beacon/shared/cli"
	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/onchain"
	"github.com/blockcast/beacon/shared/protocol"
	"github.com/blockcast/beacon/shared/solrpc"
	"github.com/blockcast/beacon/shared/soltx"
)

// pendingTxFile holds the partially signed registration transaction while
// the owner's wallet signs it.
const pendingTxFile = "onchain-pending.txt"

// register records the registration on chain: a Memo transaction
// committing to it (shared/onchain), signed by the node key, paid by the
// node key or, in two steps, by the owner's wallet.
func register(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("beacon register", flag.ContinueOnError)
	fs.SetOutput(stderr)
	key := fs.String("key", "", "node wallet file (default STATE-DIR/wallet.json)")
	stateDir := fs.String("state-dir", defaultStateDir, "state directory")
	delegation := fs.String("delegation", "", "owner wallet delegation file (default STATE-DIR/delegation.json when present)")
	onchainFlag := fs.Bool("onchain", false, "record the registration on chain (Solana Memo transaction)")
	rpcURL := fs.String("solana-rpc", "", "Solana JSON-RPC endpoint")
	feePayer := fs.String("fee-payer", "", "step 1 of the owner-paid flow: the owner wallet that pays the fee (base58)")
	signer := fs.String("signer", "", "step 2: the owner's signature as PUBKEY=SIGNATURE")
	signedTx := fs.String("signed-tx", "", "step 2: the transaction the owner's wallet signed (base64 or base58)")
	timeout := fs.Duration("timeout", onchain.DefaultSubmitTimeout, "how long to wait for confirmation, all retries included")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if err := cli.ApplyEnv(fs, "BEACON", nil); err != nil {
		fmt.Fprintln(stderr, "beacon:", err)
		return 2
	}
	if !*onchainFlag {
		fmt.Fprintln(stderr, "beacon register: the running beacon registers with castd by itself; `beacon register --onchain` records the registration on chain")
		return 2
	}
	if *rpcURL == "" {
		fmt.Fprintln(stderr, "beacon register: --solana-rpc URL is required")
		return 2
	}
	c, err := solrpc.New(*rpcURL)
	if err != nil {
		fmt.Fprintf(stderr, "beacon register: --solana-rpc: %v\n", err)
		return 2
	}
	if *key == "" {
		*key = filepath.Join(*stateDir, "wallet.json")
	}
	kp, err := identity.LoadFile(*key)
	if err != nil {
		fmt.Fprintf(stderr, "beacon register: %v\n", err)
		return 1
	}
	if *delegation == "" {
		if p := filepath.Join(*stateDir, "delegation.json"); fileExists(p) {
			*delegation = p
		}
	}
	var deleg *protocol.Delegation
	if *delegation != "" {
		if deleg, err = beacon.LoadDelegation(*delegation); err != nil {
			fmt.Fprintf(stderr, "beacon register: %v\n", err)
			return 1
		}
	}
	memo := onchain.RegistrationMemo(kp.Public(), beacon.Registration("", deleg))
	ctx, stop := cli.SignalContext()
	defer stop()
	opts := onchain.SubmitOptions{Timeout: *timeout}
	// The record and the pending transaction live beside the wallet.
	keyDir := filepath.Dir(*key)
	pending := filepath.Join(keyDir, pendingTxFile)

	switch {
	case *feePayer != "" && (*signer != "" || *signedTx != ""):
		fmt.Fprintln(stderr, "beacon register: --fee-payer is step 1; --signer / --signed-tx are step 2: give one step at a time")
		return 2
	case *feePayer != "":
		owner, err := identity.ParsePublicKey(*feePayer)
		if err != nil {
			fmt.Fprintf(stderr, "beacon register: --fee-payer: %v\n", err)
			return 2
		}
		bh, err := c.LatestBlockhash(ctx)
		if err != nil {
			fmt.Fprintf(stderr, "beacon register: %v\n", err)
			return 1
		}
		tx, err := soltx.NewMemo(kp, owner, bh.Hash, []byte(memo))
		if err != nil {
			fmt.Fprintf(stderr, "beacon register: %v\n", err)
			return 1
		}
		summary, err := tx.SignOnlySummary()
		if err != nil {
			fmt.Fprintf(stderr, "beacon register: %v\n", err)
			return 1
		}
		b64, _ := tx.Base64()
		if err := os.WriteFile(pending, []byte(b64+"\n"), 0o600); err != nil {
			fmt.Fprintf(stderr, "beacon register: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "Memo: %s\n%s\n", memo, summary)
		fmt.Fprintf(stdout, "The owner wallet %s pays the fee and must sign this transaction (the node has signed).\n"+
			"Inspect it with `solana decode-transaction <base58>`, sign it in the wallet (signTransaction),\n"+
			"then, before the blockhash expires (about a minute), run one of:\n\n"+
			"  beacon register --onchain --solana-rpc %s --signed-tx <the signed transaction, base64 or base58>\n"+
			"  beacon register --onchain --solana-rpc %s --signer %s=<the owner's signature>\n\n"+
			"If it expired, run this step again.\n", owner, *rpcURL, *rpcURL, owner)
		return 0
	case *signer != "" || *signedTx != "":
		raw, err := os.ReadFile(pending)
		if err != nil {
			fmt.Fprintf(stderr, "beacon register: no pending transaction (run step 1 with --fee-payer first): %v\n", err)
			return 1
		}
		tx, err := soltx.DecodeBase64(strings.TrimSpace(string(raw)))
		if err != nil {
			fmt.Fprintf(stderr, "beacon register: %s: %v\n", pending, err)
			return 1
		}
		if m := tx.Message.Memos(); len(m) != 1 || string(m[0]) != memo {
			fmt.Fprintf(stderr, "beacon register: the pending transaction %s is for another registration (run step 1 again)\n", pending)
			return 1
		}
		if err := completeTx(tx, *signer, *signedTx); err != nil {
			fmt.Fprintf(stderr, "beacon register: %v\n", err)
			return 1
		}
		if err := onchain.CheckMemoTx(tx, kp.Public(), memo); err != nil {
			fmt.Fprintf(stderr, "beacon register: %v\n", err)
			return 1
		}
		slot, err := onchain.SendSigned(ctx, c, tx, opts)
		if err != nil {
			fmt.Fprintf(stderr, "beacon register: %v\n", err)
			return 1
		}
		os.Remove(pending)
		return saveRecord(keyDir, memo, tx.ID(), slot, stdout, stderr)
	default:
		sig, slot, err := onchain.Submit(ctx, c, kp, memo, opts)
		if err != nil {
			fmt.Fprintf(stderr, "beacon register: %v\n(the node key %s pays the fee: fund it, or let the owner pay with --fee-payer)\n", err, kp.ID())
			return 1
		}
		return saveRecord(keyDir, memo, sig, slot, stdout, stderr)
	}
}

// completeTx adds the owner's signature: a PUBKEY=SIGNATURE pair, or the
// whole transaction as the wallet returned it (which must carry the same
// message byte for byte).
func completeTx(tx *soltx.Transaction, pair, signed string) error {
	if pair != "" {
		pub, sig, err := soltx.ParseSignerPair(pair)
		if err != nil {
			return fmt.Errorf("--signer: %w", err)
		}
		if err := tx.AddSignature(pub, sig); err != nil {
			return fmt.Errorf("--signer: %w", err)
		}
	}
	if signed != "" {
		signed = strings.TrimSpace(signed)
		other, err := soltx.DecodeBase64(signed)
		if err != nil {
			if other, err = soltx.DecodeBase58(signed); err != nil {
				return fmt.Errorf("--signed-tx: neither a base64 nor a base58 transaction: %w", err)
			}
		}
		if err := tx.Merge(other); err != nil {
			return fmt.Errorf("--signed-tx: %w", err)
		}
	}
	if err := tx.Verify(); err != nil {
		return fmt.Errorf("the transaction is not completely signed: %w", err)
	}
	return nil
}

func saveRecord(dir, memo string, sig soltx.Signature, slot uint64, stdout, stderr io.Writer) int {
	if err := beacon.SaveOnchainRecord(dir, beacon.OnchainRecord{Memo: memo, Signature: sig.String(), Slot: slot}); err != nil {
		fmt.Fprintf(stderr, "beacon register: recorded on chain as %s, but storing the record failed: %v\n", sig, err)
		return 1
	}
	fmt.Fprintf(stderr, "registration recorded on chain (slot %d, memo %s); the beacon sends it with its next registration\n", slot, memo)
	fmt.Fprintln(stdout, sig)
	return 0
}

// verifyCast checks the CAST key this beacon trusts against its record on
// chain.
func verifyCast(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("beacon verify-cast", flag.ContinueOnError)
	fs.SetOutput(stderr)
	stateDir := fs.String("state-dir", defaultStateDir, "state directory (holds the pinned CAST key)")
	rpcURL := fs.String("solana-rpc", "", "Solana JSON-RPC endpoint")
	castKey := fs.String("cast-key", "", "CAST key to check (default: the pinned one)")
	castSig := fs.String("cast-sig", "", "the record's transaction signature (default: ask castd at --cast-url where it is)")
	castURL := fs.String("cast-url", "", "castd's base URL (to ask where the record is)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if err := cli.ApplyEnv(fs, "BEACON", nil); err != nil {
		fmt.Fprintln(stderr, "beacon:", err)
		return 2
	}
	c, err := solrpc.New(*rpcURL)
	if err != nil {
		fmt.Fprintf(stderr, "beacon verify-cast: --solana-rpc: %v\n", err)
		return 2
	}
	if *castSig == "" && *castURL == "" {
		fmt.Fprintln(stderr, "beacon verify-cast: give --cast-sig SIG or --cast-url URL")
		return 2
	}
	k, err := castKeyArg(*castKey, *stateDir)
	if err != nil {
		fmt.Fprintf(stderr, "beacon verify-cast: %v\n", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rec, err := beacon.VerifyCastRecord(ctx, c, *castURL, k, *castSig)
	if err != nil {
		fmt.Fprintf(stderr, "beacon verify-cast: CAST key %s NOT verified: %v\n", k, err)
		return 1
	}
	fmt.Fprintf(stdout, "CAST key %s is recorded on chain: transaction %s, slot %d\n", k, rec.Signature, rec.Slot)
	return 0
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// castKeyArg is the CAST key a command checks against: --cast-key, else
// the key the beacon pinned in its state directory.
func castKeyArg(flagValue, stateDir string) (identity.PublicKey, error) {
	if flagValue == "" {
		raw, err := os.ReadFile(filepath.Join(stateDir, "cast-key.txt"))
		if err != nil {
			return identity.PublicKey{}, fmt.Errorf("no pinned CAST key (give --cast-key): %w", err)
		}
		flagValue = strings.TrimSpace(string(raw))
	}
	k, err := identity.ParsePublicKey(flagValue)
	if err != nil {
		return identity.PublicKey{}, fmt.Errorf("CAST key: %w", err)
	}
	return k, nil
}
