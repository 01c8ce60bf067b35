// Command mipscount counts the guest instructions the beacon's multicast
// receive path runs per packet on a 32-bit little-endian MIPS router
// (GOMIPS=softfloat), under qemu-mipsel user emulation, and prints them with
// what they mean on one 880 MHz core at one instruction a cycle: packets a
// second and Mbit/s of symbols, with no loss and with parity rebuilding
// lost symbols (`make bench`).
//
// It builds firmware/mcrecv's test binary for mipsle and runs its
// TestCountReceive, which receives N blocks (0 or 2) of
// manifest.DefaultMaxBlockLen symbols with LOST of them replaced by parity,
// under `qemu-mipsel-static -d in_asm,exec,nochain`: each translated block
// is listed once ("IN:" and its instructions) and each execution logged
// ("Trace ... [.../PC/...]"), so the instructions run are the sum over
// executions of the block's length. Half the difference between N = 2 and
// N = 0 is one block's cost: the set-up (the manifest's ed25519 verify, the
// binary's start) cancels out. Counting "Trace" lines under -singlestep
// instead overcounts (2.3 times on a loop of known length). System calls
// (on 32-bit MIPS the clock is one) are not counted.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"

	"github.com/blockcast/beacon/shared/alc"
	"github.com/blockcast/beacon/shared/manifest"
)

func main() {
	qemu := flag.String("qemu", "qemu-mipsel-static", "qemu user emulator for mipsel")
	losses := flag.String("lost", "0,2,10", "lost symbols per block to measure, comma-separated")
	mhz := flag.Float64("mhz", 880, "the router's clock, MHz (one instruction a cycle)")
	flag.Parse()
	if err := run(context.Background(), os.Stdout, *qemu, *losses, *mhz); err != nil {
		fmt.Fprintln(os.Stderr, "mipscount:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, w io.Writer, qemu, losses string, mhz float64) error {
	if _, err := exec.LookPath(qemu); err != nil {
		if os.Getenv("CI") == "true" {
			return err
		}
		fmt.Fprintf(w, "mipscount: %s not installed, skipped\n", qemu)
		return nil
	}
	dir, err := os.MkdirTemp("", "mipscount-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "mcrecv.mipsle")
	build := exec.CommandContext(ctx, "go", "test", "-c", "-o", bin, "./firmware/mcrecv")
	build.Env = append(os.Environ(), "GOOS=linux", "GOARCH=mipsle", "GOMIPS=softfloat", "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("building the mipsle test binary: %w\n%s", err, out)
	}
	k := manifest.DefaultMaxBlockLen
	parts := (k + manifest.DefaultMaxParity + manifest.ChunkDigests - 1) / manifest.ChunkDigests
	pkts := float64(k + parts) // a block's symbols and its hash-list packets
	fmt.Fprintf(w, "mipsle receive path (qemu-mipsel, guest instructions): blocks of %d symbols of %d bytes (+%d hash-list packets), one %g MHz core\n", k, alc.MaxSymbolSize, parts, mhz)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "lost/block\tM instr/block\tM instr/pkt\tpkt/s\tMbit/s\t")
	for _, f := range strings.Split(losses, ",") {
		lost, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || lost < 0 || lost > manifest.DefaultMaxParity {
			return fmt.Errorf("--lost %q: want 0..%d", f, manifest.DefaultMaxParity)
		}
		var total [2]int64
		for i, n := range []int{0, 2} {
			if total[i], err = count(ctx, qemu, bin, dir, n, lost); err != nil {
				return err
			}
		}
		block := float64(total[1]-total[0]) / 2
		per := block / pkts
		pps := mhz * 1e6 / per
		fmt.Fprintf(tw, "%d\t%.1f\t%.3f\t%.0f\t%.1f\t\n", lost, block/1e6, per/1e6, pps, pps*alc.MaxSymbolSize*8/1e6)
	}
	return tw.Flush()
}

// count runs TestCountReceive for n blocks with lost symbols per block under
// qemu and returns the guest instructions it ran.
func count(ctx context.Context, qemu, bin, dir string, n, lost int) (int64, error) {
	fifo := filepath.Join(dir, fmt.Sprintf("log.%d.%d", n, lost))
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		return 0, err
	}
	defer os.Remove(fifo)
	cmd := exec.CommandContext(ctx, qemu, "-d", "in_asm,exec,nochain", "-D", fifo, bin, "-test.run", "^TestCountReceive$", "-test.count", "1")
	cmd.Env = append(os.Environ(), "MCRECV_COUNT_N="+strconv.Itoa(n), "MCRECV_COUNT_LOST="+strconv.Itoa(lost))
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	f, err := os.Open(fifo) // blocks until qemu opens it for writing
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return 0, err
	}
	total, cerr := countLog(f)
	f.Close()
	if err := cmd.Wait(); err != nil {
		return 0, fmt.Errorf("qemu (n=%d, lost=%d): %w\n%s", n, lost, err, out.String())
	}
	if cerr != nil {
		return 0, cerr
	}
	if !strings.Contains(out.String(), "PASS") {
		return 0, fmt.Errorf("TestCountReceive did not pass (n=%d, lost=%d):\n%s", n, lost, out.String())
	}
	return total, nil
}

// countLog sums guest instructions from a qemu "-d in_asm,exec,nochain"
// log: each "IN:" listing gives a translated block's length by its first
// address, each "Trace" line one execution of the block at its PC.
func countLog(r io.Reader) (int64, error) {
	blocks := map[uint64]int64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var total, n int64
	var cur uint64
	in := false
	for sc.Scan() {
		l := sc.Text()
		switch {
		case strings.HasPrefix(l, "IN:"):
			in, n, cur = true, 0, 0
		case in && strings.HasPrefix(l, "0x"):
			if n == 0 {
				if i := strings.IndexByte(l, ':'); i > 2 {
					cur, _ = strconv.ParseUint(l[2:i], 16, 64)
				}
			}
			n++
		case in && l == "":
			in = false
			blocks[cur] = n
		case strings.HasPrefix(l, "Trace"):
			pc, ok := tracePC(l)
			if ok {
				total += blocks[pc]
			}
		}
	}
	return total, sc.Err()
}

// tracePC reads the guest PC of a "Trace 0: 0x... [00000000/004a1b2c/...]"
// line: the second field inside the brackets.
func tracePC(l string) (uint64, bool) {
	i := strings.IndexByte(l, '[')
	if i < 0 {
		return 0, false
	}
	f := strings.Split(l[i+1:], "/")
	if len(f) < 2 {
		return 0, false
	}
	pc, err := strconv.ParseUint(f[1], 16, 64)
	return pc, err == nil
}
