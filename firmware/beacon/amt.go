package beacon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/blockcast/beacon/firmware/amtgw"
	"github.com/blockcast/beacon/firmware/driad"
	"github.com/blockcast/beacon/shared/ctrlmsg"
	"github.com/blockcast/beacon/shared/protocol"
)

// newGateway builds the AMT gateway from the options. A channel's relay is
// the one its join names (a castd offer); else the configured --amt-relay;
// else DRIAD (RFC 8777) when no relay is configured; then, only if asked
// for, the discovery anycast address. Nothing is looked up or sent until a
// channel is joined.
func (b *Beacon) newGateway() (*amtgw.Gateway, error) {
	var chain amtgw.Chain
	var target ctrlmsg.AMTRelayTarget
	if b.opts.AMTRelay != "" {
		var err error
		if target, err = ctrlmsg.ParseAMTRelayTarget(b.opts.AMTRelay); err != nil {
			return nil, fieldError("AMTRelay", err)
		}
	}
	switch {
	case target.Addr.IsValid():
		chain = append(chain, amtgw.Static{{Addr: target.Addr}})
	case target.Host != "" || b.opts.AMTDRIAD:
		// A relay name is resolved as DRIAD resolves the names in AMTRELAY
		// records: by the same resolver, at join time, again on failure.
		r, err := driad.New(driad.Config{Logger: b.log.With("component", "driad")})
		if err != nil {
			return nil, fmt.Errorf("resolver for AMT relays: %w", err)
		}
		if target.Host != "" {
			chain = append(chain, amtgw.Named{Host: target.Host, Port: target.Port, LookupHost: r.LookupHost})
		} else {
			chain = append(chain, amtgw.DRIAD{Resolver: r})
		}
	}
	if b.opts.AMTAnycast {
		chain = append(chain, amtgw.Anycast)
	}
	return amtgw.New(amtgw.Options{
		Relays:          chain,
		Logger:          b.log.With("component", "amt-gateway"),
		ReemitInterface: b.opts.LANInterface,
		ReemitTTL:       b.opts.AMTReemitTTL,
	})
}

// joinConfigured joins the channels of Options.AMTJoins.
func (b *Beacon) joinConfigured() error {
	for _, s := range b.opts.AMTJoins {
		spec, err := ctrlmsg.ParseChannelSpec(s)
		if err != nil {
			return fieldError("AMTJoins", err)
		}
		if spec.Reemit && b.opts.LANInterface == "" {
			return fieldError("AMTJoins", fmt.Errorf("%q: reemit needs LANInterface", s))
		}
		if err := b.gw.Join(spec.Channel, spec.AMTRelay, spec.Reemit); err != nil {
			return fieldError("AMTJoins", fmt.Errorf("%q: %w", s, err))
		}
	}
	return nil
}

// amtHealth is the tunnel part of a health report.
func (b *Beacon) amtHealth() *ctrlmsg.AMTState {
	st := b.gw.State()
	if len(st.Channels) == 0 && len(st.Tunnels) == 0 {
		return nil
	}
	out := &ctrlmsg.AMTState{State: "idle"}
	for _, t := range st.Tunnels {
		out.State = string(t.Phase)
		out.Relay = t.Relay.String()
		if t.Phase == amtgw.PhaseJoined {
			break
		}
	}
	for _, c := range st.Channels {
		if len(out.Channels) == 16 {
			break
		}
		out.Channels = append(out.Channels, c.Source.String()+"@"+c.Group.String()+" "+c.Status)
	}
	return out
}

// runAMTCommand runs castd's amt-join / amt-leave.
func (b *Beacon) runAMTCommand(op, arg string) (string, error) {
	spec, err := ctrlmsg.ParseChannelSpec(arg)
	if err != nil {
		return "", err
	}
	if op == ctrlmsg.OpAMTLeave {
		if err := b.gw.Leave(spec.Channel); err != nil {
			return "", err
		}
		return "left " + arg, nil
	}
	if spec.Reemit && b.opts.LANInterface == "" {
		return "", errors.New("reemit needs the beacon to run with --lan-iface")
	}
	if err := b.gw.Join(spec.Channel, spec.AMTRelay, spec.Reemit); err != nil {
		return "", err
	}
	return "joined " + arg, nil
}

// handleAMT is the local API: GET /v1/amt (state), POST /v1/amt/join and
// /v1/amt/leave with {"channel": "SOURCE@GROUP [relay=...] [reemit]"}.
func (b *Beacon) handleAMT(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	op := strings.TrimPrefix(r.URL.Path, protocol.PathAMT)
	if op == "" || op == "/" {
		if r.Method != http.MethodGet {
			http.Error(w, `{"error":"GET the state; POST to /v1/amt/join or /v1/amt/leave"}`, http.StatusMethodNotAllowed)
			return
		}
		json.NewEncoder(w).Encode(b.gw.State())
		return
	}
	if r.Method != http.MethodPost || (op != protocol.AMTJoin && op != protocol.AMTLeave) {
		http.Error(w, `{"error":"POST to /v1/amt/join or /v1/amt/leave"}`, http.StatusNotFound)
		return
	}
	var req struct {
		Channel string `json:"channel"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&req); err != nil {
		http.Error(w, `{"error":`+strconv.Quote("bad JSON: "+err.Error())+`}`, http.StatusBadRequest)
		return
	}
	cmd := ctrlmsg.OpAMTJoin
	if op == "/leave" {
		cmd = ctrlmsg.OpAMTLeave
	}
	detail, err := b.runAMTCommand(cmd, req.Channel)
	if err != nil {
		b.log.Info("local AMT request refused", "op", op, "channel", req.Channel, "err", err)
		status := http.StatusBadRequest
		if errors.Is(err, amtgw.ErrNotJoined) {
			status = http.StatusNotFound
		}
		http.Error(w, `{"error":`+strconv.Quote(err.Error())+`}`, status)
		return
	}
	b.log.Info("local AMT request", "op", op, "channel", req.Channel)
	json.NewEncoder(w).Encode(map[string]string{"result": detail})
}

// runGateway runs the gateway until ctx ends.
func (b *Beacon) runGateway(ctx context.Context) error {
	if err := b.joinConfigured(); err != nil {
		return err
	}
	return b.gw.Run(ctx)
}
