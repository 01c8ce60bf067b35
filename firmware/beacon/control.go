package beacon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/blockcast/beacon/firmware/agent"
	"github.com/blockcast/beacon/shared/ctrlmsg"
	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/objstore"
	"github.com/blockcast/beacon/shared/protocol"
)

// castKeyFile pins the CAST key learned at the first registration, so a
// later impostor castd cannot take over the beacon's commands.
const castKeyFile = "cast-key.txt"

// checkCastKey accepts the key castd presented if it is the configured or
// pinned one, and pins it on first contact.
func (b *Beacon) checkCastKey(presented string) (identity.PublicKey, error) {
	got, err := identity.ParsePublicKey(presented)
	if err != nil {
		return identity.PublicKey{}, fmt.Errorf("castd presented a malformed CAST key: %w", err)
	}
	want := b.opts.CastKey
	path := filepath.Join(b.opts.StateDir, castKeyFile)
	if want == "" {
		if raw, err := os.ReadFile(path); err == nil {
			want = strings.TrimSpace(string(raw))
		}
	}
	if want == "" {
		if err := os.WriteFile(path, []byte(got.String()+"\n"), 0o600); err != nil {
			return got, fmt.Errorf("pinning the CAST key: %w", err)
		}
		b.log.Info("pinned the CAST key", "key", got, "path", path)
		return got, nil
	}
	if want != got.String() {
		return got, fmt.Errorf("castd presented CAST key %s but this beacon trusts %s (remove %s to trust a new castd)", got, want, path)
	}
	return got, nil
}

// ensureAgent starts the MQTT agent, or restarts it when castd names a
// different broker.
func (b *Beacon) ensureAgent(ctx context.Context, brokerURL string, castKey identity.PublicKey) {
	if b.opts.MQTTURL != "" {
		brokerURL = b.opts.MQTTURL
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if brokerURL == "" {
		if b.agent == nil {
			b.log.Warn("castd named no MQTT broker: health is not reported, and castd will not route users here if it monitors health")
		}
		return
	}
	if b.agent != nil && b.agentURL == brokerURL {
		b.agent.SetCastKey(castKey)
		return
	}
	if b.stopAgent != nil {
		b.log.Info("castd named another broker; reconnecting", "old", b.agentURL, "new", brokerURL)
		b.stopAgent()
	}
	a, err := agent.New(agent.Options{
		BrokerURL: brokerURL,
		Key:       b.key,
		CastKey:   castKey,
		Interval:  b.opts.HealthInterval,
		Version:   b.opts.Version,
		Health:    b.health,
		Handle:    b.handleCommand,
		Logger:    b.log.With("component", "agent"),
		OnConnect: b.book.Kick,
		OnRefused: func(error) {
			// castd's broker knows only registered nodes.
			go b.forceRegister(ctx)
		},
	})
	if err != nil {
		b.log.Error("control-plane agent", "err", err)
		return
	}
	actx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := a.Run(actx); err != nil {
			b.log.Error("control-plane agent stopped", "err", err)
		}
	}()
	b.agent, b.agentURL = a, brokerURL
	b.stopAgent = func() { cancel(); <-done }
}

// health gathers the numbers of a health report.
func (b *Beacon) health() ctrlmsg.Health {
	st := b.cache.Stats()
	h := ctrlmsg.Health{
		UptimeS:       uint64(time.Since(b.started).Seconds()),
		Version:       b.opts.Version,
		CacheObjects:  uint64(max(st.Objects, 0)),
		CacheBytes:    uint64(max(st.Bytes, 0)),
		BytesServed:   uint64(max(st.BytesServed, 0)),
		UpstreamBytes: uint64(max(st.UpstreamBytes, 0)),
		Load:          loadPerCPU(),
		MemFree:       memAvailable(),
		StorageFree:   storageFree(b.opts.StateDir),
		AMT:           b.amtHealth(),
		Multicast:     b.multicastHealth(),
	}
	if !st.StoreFullSince.IsZero() {
		// Room may have come back without a fill (an operator freed
		// space): a fill's worth of free space ends the condition.
		if h.StorageFree >= storageRoom {
			b.store.ClearFull()
		} else {
			h.StorageFullSince = st.StoreFullSince.UnixMilli()
		}
	}
	if st.Hits+st.Misses > 0 {
		h.HitRatio = float64(st.Hits) / float64(st.Hits+st.Misses)
	}
	b.mu.Lock()
	h.PublicIP = b.reply.PublicIP
	b.mu.Unlock()
	return h
}

// storageRoom is the free space on the cache's file system that ends a
// full condition without waiting for a fill to commit.
const storageRoom = 64 << 20

// loadPerCPU is the 1-minute load average over the CPU count: 1 is busy.
func loadPerCPU() float64 {
	raw, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(raw))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v / float64(runtime.NumCPU())
}

func memAvailable() uint64 {
	raw, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemAvailable:" {
			kb, _ := strconv.ParseUint(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

func storageFree(dir string) uint64 {
	var st syscall.Statfs_t
	if syscall.Statfs(dir, &st) != nil {
		return 0
	}
	return uint64(st.Bavail) * uint64(st.Bsize)
}

// handleCommand runs a command castd signed.
func (b *Beacon) handleCommand(ctx context.Context, c ctrlmsg.Command) ctrlmsg.Result {
	res := ctrlmsg.Result{ID: c.ID}
	fail := func(err error) ctrlmsg.Result {
		res.Error = err.Error()
		b.log.Warn("command failed", "op", c.Op, "arg", c.Arg, "err", err)
		return res
	}
	switch c.Op {
	case ctrlmsg.OpPurge:
		key, prefix, err := ctrlmsg.ParsePurgeArg(c.Arg)
		if err != nil {
			return fail(err)
		}
		if prefix {
			n, err := b.cache.Purge(key)
			if err != nil {
				return fail(err)
			}
			res.OK, res.Detail = true, fmt.Sprintf("purged %d objects under %s", n, key)
		} else {
			switch err := b.store.Delete(key); {
			case errors.Is(err, objstore.ErrNotFound):
				res.OK, res.Detail = true, "not cached"
			case err != nil:
				return fail(err)
			default:
				res.OK, res.Detail = true, "purged "+key
			}
		}
	case ctrlmsg.OpPrefetch:
		key, err := ctrlmsg.ParsePrefetchArg(c.Arg)
		if err != nil {
			return fail(err)
		}
		pctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
		defer cancel()
		req, _ := http.NewRequestWithContext(pctx, http.MethodGet, key, nil)
		w := &discardResponse{header: http.Header{}}
		b.cache.ServeKey(w, req, key)
		if w.status != http.StatusOK {
			return fail(fmt.Errorf("prefetch %s: %d %s", key, w.status, bytes.TrimSpace(w.small)))
		}
		// A 200 is not a stored copy: an answer a shared cache may not keep
		// (no-store, private, ...) passes through and is gone.
		if _, err := b.store.Get(key); err != nil {
			return fail(fmt.Errorf("prefetch %s: fetched %d bytes but not cached (Cache-Control %q): %w", key, w.n, w.header.Get("Cache-Control"), err))
		}
		res.OK, res.Detail = true, fmt.Sprintf("%s %s, %d bytes", key, w.header.Get(protocol.HeaderCache), w.n)
	case ctrlmsg.OpReregister:
		select {
		case b.reregister <- struct{}{}:
		default:
		}
		res.OK, res.Detail = true, "registering again"
	case ctrlmsg.OpReceiptAck, ctrlmsg.OpReceiptRecords:
		return b.book.HandleCommand(c) // frequent: logged by the book, not here
	case ctrlmsg.OpAMTJoin, ctrlmsg.OpAMTLeave:
		detail, err := b.runAMTCommand(c.Op, c.Arg)
		if err != nil {
			return fail(err)
		}
		res.OK, res.Detail = true, detail
	default:
		return fail(fmt.Errorf("unknown op %q", c.Op))
	}
	b.log.Info("command done", "op", c.Op, "arg", c.Arg, "detail", res.Detail)
	return res
}

// discardResponse is the ResponseWriter of a prefetch: the body goes only
// into the cache.
type discardResponse struct {
	header http.Header
	status int
	n      int64
	small  []byte // the start of an error body, for the result
}

func (d *discardResponse) Header() http.Header { return d.header }
func (d *discardResponse) WriteHeader(code int) {
	if d.status == 0 {
		d.status = code
	}
}
func (d *discardResponse) Write(p []byte) (int, error) {
	d.WriteHeader(http.StatusOK)
	if d.status != http.StatusOK && len(d.small) < 256 {
		d.small = append(d.small, p[:min(len(p), 256-len(d.small))]...)
	}
	d.n += int64(len(p))
	return len(p), nil
}
