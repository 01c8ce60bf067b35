package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"syscall"
	"time"

	"github.com/blockcast/beacon/test/harness"
)

// window is the span of one injected fault: from the moment it began to
// the moment the soak stopped causing it (process ready again, origin
// back). Errors up to grace after End belong to it.
type window struct {
	Name      string
	Start     time.Time
	End       time.Time
	Recovered time.Duration // from End to every beacon's users served right again; -1: never
	AMTFlows  time.Duration // from End to every LAN listener hearing datagrams sent after End (0: no AMT)
	Err       string
}

// faults are the names the schedule cycles through.
const (
	faultCastd  = "castd_restart"
	faultBroker = "broker_restart"
	faultBeacon = "beacon_kill9"
	faultOrigin = "origin_slow_failing"
)

// schedule returns when each fault starts: one every period from the
// warm-up mark, leaving the last period of the run quiet so that the
// final samples are taken from a settled system.
func schedule(duration, warmup, period time.Duration, cycle []string) []plannedFault {
	var out []plannedFault
	for at, i := warmup, 0; at+period+period/2 <= duration; at, i = at+period, i+1 {
		out = append(out, plannedFault{At: at, Name: cycle[i%len(cycle)]})
	}
	return out
}

// settleTail drops a trailing origin fault that would end less than
// settle before the run does, when an earlier one remains: after a slow
// origin, castd and the beacons keep the extra upstream connections it made
// them open in their idle pools for 90 s, which the final samples would
// read as growth of fds and goroutines.
func settleTail(plan []plannedFault, duration, originLen, settle time.Duration) []plannedFault {
	origins := 0
	for _, f := range plan {
		if f.Name == faultOrigin {
			origins++
		}
	}
	for len(plan) > 0 {
		last := plan[len(plan)-1]
		if last.Name != faultOrigin || origins < 2 || last.At+originLen+settle <= duration {
			break
		}
		plan = plan[:len(plan)-1]
		origins--
	}
	return plan
}

type plannedFault struct {
	At   time.Duration
	Name string
}

// injector performs the faults on the live system.
type injector struct {
	sys      *system
	ld       *loader
	log      *slog.Logger
	phase    time.Duration // origin: how long slow, then how long failing
	ready    time.Duration // bound for a process to be back
	grace    time.Duration // bound for users to be served right after End
	amtGrace time.Duration // bound for the AMT channel to flow again after End
	nextKill int
}

func (in *injector) inject(ctx context.Context, name string) window {
	w := window{Name: name, Start: time.Now(), Recovered: -1}
	var err error
	switch name {
	case faultCastd:
		// SIGTERM and a new process on the same state: the embedded
		// broker goes down and up with it.
		// A castd that does not stop is a finding, but the run goes on
		// with a new one so that the rest of it is still judged.
		err = stopOrDump(in.sys.castd, 20*time.Second)
		if serr := in.sys.startCastd(); serr != nil {
			err = errors.Join(err, serr)
		} else if rerr := in.sys.waitRouted(in.ready); rerr != nil {
			err = errors.Join(err, rerr)
		}
	case faultBroker:
		in.sys.mosq.Kill()
		if err = in.sys.startMosquitto(); err == nil {
			err = in.sys.waitRouted(in.ready)
		}
	case faultBeacon:
		n := in.sys.nodes[in.nextKill%len(in.sys.nodes)]
		in.nextKill++
		w.Name += "(" + n.name + ")"
		n.proc.Kill()
		if err = in.sys.startBeacon(n); err == nil {
			err = in.sys.waitRouted(in.ready)
		}
	case faultOrigin:
		in.sys.origin.set(originSlow)
		sleepCtx(ctx, in.phase)
		in.sys.origin.set(originFailing)
		sleepCtx(ctx, in.phase)
		in.sys.origin.set(originNormal)
	default:
		err = fmt.Errorf("unknown fault %q", name)
	}
	w.End = time.Now()
	if err != nil {
		w.Err = err.Error()
		in.log.Error("fault: not recovered", "fault", w.Name, "err", err)
		return w
	}
	// Recovered without a hand: every beacon's users get right bytes
	// again within the grace period, with nobody touching anything.
	deadline := w.End.Add(in.grace)
	for b := range in.sys.nodes {
		for {
			pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			perr := in.ld.probe(pctx, b)
			cancel()
			if perr == nil {
				break
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				w.Err = fmt.Sprintf("users behind %s not served right %s after the fault ended: %v", in.sys.nodes[b].name, in.grace, perr)
				in.log.Error("fault: not recovered", "fault", w.Name, "err", w.Err)
				return w
			}
			sleepCtx(ctx, 200*time.Millisecond)
		}
	}
	w.Recovered = time.Since(w.End)
	if a := in.sys.amt; a != nil {
		// The AMT channel recovers by itself too: the gateways find the
		// restarted relay (or the restarted beacon joins again) and its
		// LAN listener hears datagrams sent after the fault.
		if err := a.waitFresh(ctx, w.End, w.End.Add(amtGraceOf(w.Name, in.grace, in.amtGrace))); err != nil {
			w.Err = err.Error()
			in.log.Error("fault: not recovered", "fault", w.Name, "err", w.Err)
			return w
		}
		w.AMTFlows = time.Since(w.End)
	}
	in.log.Info("fault: recovered", "fault", w.Name, "window", w.End.Sub(w.Start).Round(time.Millisecond), "recovered_after", w.Recovered.Round(time.Millisecond), "amt_after", w.AMTFlows.Round(time.Millisecond))
	return w
}

// stopOrDump stops p with SIGTERM; if it has not exited after timeout it
// is asked for a goroutine dump (SIGQUIT, into its log: why it hung) and
// then killed.
func stopOrDump(p *harness.Proc, timeout time.Duration) error {
	syscall.Kill(p.Pid(), syscall.SIGTERM)
	if harness.WaitFor(timeout, p.Exited) {
		if err := p.Stop(0); err != nil {
			return fmt.Errorf("%s exited after SIGTERM with %w", p.Name, err)
		}
		return nil
	}
	syscall.Kill(p.Pid(), syscall.SIGQUIT)
	harness.WaitFor(5*time.Second, p.Exited)
	p.Kill()
	return fmt.Errorf("%s did not stop within %s after SIGTERM (its goroutine dump is in %s)", p.Name, timeout, p.Log)
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func dialable(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}
