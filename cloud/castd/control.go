package castd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/blockcast/beacon/cloud/broker"
	"github.com/blockcast/beacon/cloud/monitor"
	"github.com/blockcast/beacon/cloud/probe"
	"github.com/blockcast/beacon/cloud/registry"
	"github.com/blockcast/beacon/cloud/web"
	"github.com/blockcast/beacon/shared/ctrlmsg"
	"github.com/blockcast/beacon/shared/protocol"
)

// control is castd's control plane: the MQTT bus (embedded broker or an
// external one), the topology monitor on it, and the active relay probes.
// Without it (no --mqtt-listen and no --mqtt-broker) every registered node
// is routed to.
type control struct {
	s       *Server
	broker  *broker.Broker // nil with an external broker
	bus     broker.Bus
	monitor *monitor.Monitor

	prober        *probe.Prober // relays' health probes (probes.go)
	eligMu        sync.Mutex    // serialises refresh
	mu            sync.Mutex
	relayNodeURLs map[string]string // relay ID → LAN URL

	wg sync.WaitGroup // the probe loop, the bus closer, registration expiry
}

func (s *Server) controlEnabled() bool {
	return s.opts.MQTTListen != "" || s.opts.MQTTBroker != ""
}

// startControl brings the control plane up; it runs until ctx ends.
// On error nothing it started is left running.
func (s *Server) startControl(ctx context.Context) (rerr error) {
	if !s.controlEnabled() {
		s.log.Info("control plane off: every registered node is routed to (set --mqtt-listen or --mqtt-broker)")
		return nil
	}
	c := &control{s: s}
	if err := c.initProbes(); err != nil {
		return err
	}
	// Every registered node is in the router (loaded at start, added at
	// registration): asking it keeps the per-message check off the disk.
	known := s.router.Has
	if s.opts.MQTTBroker != "" {
		creds := func() (string, string) {
			if s.opts.MQTTUser != "" {
				return s.opts.MQTTUser, s.opts.MQTTPassword
			}
			tok, _ := ctrlmsg.MakeToken(s.key, time.Now())
			return s.key.ID(), tok
		}
		ext, err := broker.DialExternal(ctx, broker.ExternalOptions{
			URL: s.opts.MQTTBroker, Credentials: creds, ClientID: "castd-" + s.key.ID()[:8], Logger: s.log.With("component", "mqtt"),
		})
		if err != nil {
			return fmt.Errorf("castd: external broker: %w", err)
		}
		c.bus = ext
		defer func() {
			if rerr != nil {
				ext.Close()
			}
		}()
	} else {
		b, err := broker.New(broker.Options{
			Addr: s.opts.MQTTListen, Known: known, AdminKey: s.key.Public(),
			AdminUser: s.opts.MQTTUser, AdminPassword: s.opts.MQTTPassword,
			TLSCertFile: s.opts.MQTTTLSCert, TLSKeyFile: s.opts.MQTTTLSKey,
			ReadCoalesce: s.opts.MQTTCoalesce, // the same meaning of zero and negative
			Logger:       s.log.With("component", "mqtt"),
		})
		if err != nil {
			return fmt.Errorf("castd: %w", err)
		}
		if err := b.Start(ctx); err != nil {
			return fmt.Errorf("castd: %w", err)
		}
		c.broker, c.bus = b, b.Bus()
		defer func() {
			if rerr != nil {
				b.Close() // not left to ctx: Serve returns now
			}
		}()
	}
	m, err := monitor.New(monitor.Options{
		Bus: c.bus, CastKey: s.key, Known: known, Logger: s.log.With("component", "monitor"),
		OnChange: func(id string, st monitor.State, load float64) {
			s.router.SetLoad(id, load)
			c.refresh(id)
			s.noteOnline(id, st)
			s.receipts.NoteState(id, st == monitor.StateOnline)
			s.log.Debug("node state", "id", id, "state", st, "load", load)
		},
		OnResult: func(id string, r monitor.Result) {
			if r.OK && (r.Op == ctrlmsg.OpReceiptAck || r.Op == ctrlmsg.OpReceiptRecords) {
				s.log.Debug("command result", "node", id, "cmd", r.ID, "op", r.Op, "detail", clipText(r.Detail, maxReason))
				return // one per receipt: routine
			}
			s.log.Info("command result", "node", id, "cmd", r.ID, "op", r.Op, "ok", r.OK, "err", clipText(r.Error, maxReason), "detail", clipText(r.Detail, maxReason))
		},
	})
	if err != nil {
		return fmt.Errorf("castd: %w", err)
	}
	// Set before Start: an external broker hands over retained statuses
	// the moment Start subscribes, and their callbacks (refresh) read
	// c.monitor. Assigned after, a castd restarted next to Mosquitto
	// crashed on a nil monitor.
	c.monitor = m
	if err := m.Start(ctx); err != nil {
		return fmt.Errorf("castd: %w", err)
	}
	s.control = c
	if err := c.startReceipts(ctx); err != nil {
		return err
	}
	// Until a node is heard from on the control plane it is not routed to.
	s.reg.ForEach(func(n registry.Node) error {
		c.refresh(n.ID)
		return nil
	})
	c.wg.Add(2)
	go func() {
		defer c.wg.Done()
		c.probeRelayNodes(ctx)
	}()
	go func() {
		defer c.wg.Done()
		<-ctx.Done()
		if c.broker != nil {
			c.broker.Close()
		} else {
			c.bus.Close()
		}
	}()
	return nil
}

// wait returns when the control plane's goroutines have ended, after the
// ctx startControl was given is done: Serve calls it before returning so
// that nothing here runs into Close.
func (c *control) wait() {
	c.wg.Wait()
	c.monitor.Wait()
}

// mqttURL is the broker address a registering node is told to use.
func (s *Server) mqttURL(r *http.Request) string {
	switch {
	case s.opts.MQTTPublicURL != "":
		return s.opts.MQTTPublicURL
	case s.opts.MQTTBroker != "":
		return s.opts.MQTTBroker
	case s.opts.MQTTListen == "":
		return ""
	}
	// The host the node reached castd at, with the broker's port.
	_, port, err := net.SplitHostPort(s.opts.MQTTListen)
	if s.control != nil && s.control.broker != nil {
		_, port, err = net.SplitHostPort(s.control.broker.Addr())
	}
	if err != nil {
		return ""
	}
	host := r.Host
	if h, _, err := net.SplitHostPort(r.Host); err == nil {
		host = h
	}
	scheme := "tcp"
	if s.opts.MQTTTLSCert != "" {
		scheme = "tls"
	}
	return scheme + "://" + net.JoinHostPort(strings.Trim(host, "[]"), port)
}

// nodeViews merges the registry with what the monitor heard, for the
// dashboard and /v1/nodes.
func (s *Server) nodeViews() []web.Node {
	var out []web.Node
	s.reg.ForEach(func(n registry.Node) error {
		v := web.Node{ID: n.ID, Role: n.Role, State: "unknown", Version: n.Version, Owner: n.Owner,
			PublicIP: n.PublicIP.String(), LANURL: n.LANURL, RequestedCIDRs: n.CIDRs, FirstSeen: n.FirstSeen, LastSeen: n.LastSeen}
		if n.Role == protocol.RoleRelay {
			// What clients are sent there for: the operator's approvals and the
			// coverage zone, not what the relay asked for.
			for _, p := range s.router.RelayNodePrefixes(n.ID) {
				v.CIDRs = append(v.CIDRs, p.String())
			}
		}
		if s.control == nil {
			v.State, v.Routable = "online", true
		} else {
			if st, ok := s.control.monitor.Get(n.ID); ok {
				v.State = string(st.State)
				v.Load = st.Load
				if st.LastSeen.After(v.LastSeen) {
					v.LastSeen = st.LastSeen
				}
				if st.Version != "" {
					v.Version = st.Version
				}
				if h := st.Health; h != nil {
					v.HitRatio, v.BytesServed, v.UpstreamBytes = h.HitRatio, h.BytesServed, h.UpstreamBytes
					v.CacheObjects, v.CacheBytes = h.CacheObjects, h.CacheBytes
					if h.AMT != nil {
						v.AMT = h.AMT.State
					}
				}
			}
			v.Routable = s.control.routable(n.ID)
		}
		if rv := s.receiptView(n.ID); rv != nil {
			v.Receipts = rv
		}
		if n.Role == protocol.RoleBeacon {
			if id, ok := s.router.RelayNodeFor(n.PublicIP); ok {
				v.Parent = id
			}
		}
		out = append(out, v)
		return nil
	})
	return out
}

// handleNodes serves GET /v1/nodes and /v1/nodes/{id}, and the operator's
// POST /v1/nodes/{id}/commands and DELETE /v1/nodes/{id}. Node records say where homes are (public
// IP, LAN URL, owner wallet), so only the operator gets them; anyone else
// gets the fleet totals, and a filter (?q=<wallet> finds a home) is a
// question about nodes, so it needs the token too.
func (s *Server) handleNodes(w http.ResponseWriter, r *http.Request) {
	rest := strings.TrimPrefix(r.URL.Path, protocol.PathNodes)
	if strings.HasSuffix(rest, protocol.PathCommandsSuffix) {
		s.handleCommand(w, r, strings.TrimSuffix(strings.TrimPrefix(rest, "/"), protocol.PathCommandsSuffix))
		return
	}
	if r.Method == http.MethodDelete && rest != "" && rest != "/" {
		s.handleNodeDelete(w, r, strings.TrimPrefix(rest, "/"))
		return
	}
	if !s.onlyRead(w, r, "nodes are read with GET") {
		return
	}
	if rest == "" || rest == "/" {
		if r.URL.RawQuery == "" && r.Header.Get("Authorization") == "" {
			s.dashboard.ServeSummary(w, r)
			return
		}
		if s.requireAdmin(w, r) {
			s.dashboard.ServeNodes(w, r)
		}
		return
	}
	if s.requireAdmin(w, r) {
		s.dashboard.ServeNode(w, r, strings.TrimPrefix(rest, "/"))
	}
}

// maxCommandBody bounds POST /v1/nodes/{id}/commands: an op and an
// argument of at most ctrlmsg's 8 KiB, with room for JSON escapes.
const maxCommandBody = 16 << 10

func (s *Server) handleCommand(w http.ResponseWriter, r *http.Request, id string) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		s.fail(w, r, http.StatusMethodNotAllowed, "commands are POSTed")
		return
	}
	if !s.requireAdmin(w, r) {
		return
	}
	if s.control == nil {
		s.fail(w, r, http.StatusServiceUnavailable, "no control plane: commands travel over MQTT")
		return
	}
	cmd, status, err := decodeCommand(w, r)
	if err != nil {
		s.fail(w, r, status, err.Error())
		return
	}
	cid, err := s.control.monitor.Command(id, cmd.Op, cmd.Arg)
	switch {
	case errors.Is(err, monitor.ErrUnknownNode):
		s.fail(w, r, http.StatusNotFound, err.Error())
		return
	case err != nil:
		s.fail(w, r, http.StatusBadRequest, err.Error())
		return
	}
	s.log.Info("command sent", "node", id, "op", cmd.Op, "arg", clipText(cmd.Arg, 2*maxQuoted), "cmd", cid)
	w.WriteHeader(http.StatusAccepted)
	writeJSON(w, protocol.CommandReply{ID: cid})
}

// decodeCommand reads one JSON command and nothing after it. Its errors
// quote the caller's input only clipped, and name the ops ctrlmsg knows.
func decodeCommand(w http.ResponseWriter, r *http.Request) (protocol.Command, int, error) {
	var cmd protocol.Command
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxCommandBody))
	dec.DisallowUnknownFields() // a misspelt "arg" must not purge everything
	err := dec.Decode(&cmd)
	if err == nil {
		if _, terr := dec.Token(); terr != io.EOF {
			err = errors.New("data after the JSON object")
			if mbe := (*http.MaxBytesError)(nil); errors.As(terr, &mbe) {
				err = terr
			}
		}
	}
	if mbe := (*http.MaxBytesError)(nil); errors.As(err, &mbe) {
		return cmd, http.StatusRequestEntityTooLarge, fmt.Errorf("command is larger than %d bytes", maxCommandBody)
	}
	if err != nil {
		return cmd, http.StatusBadRequest, fmt.Errorf("command is not valid JSON: %s", clipText(err.Error(), 2*maxQuoted))
	}
	if !ctrlmsg.KnownOp(cmd.Op) {
		return cmd, http.StatusBadRequest, fmt.Errorf("unknown op %s (known: %s)", quoteClip(cmd.Op, maxQuoted), strings.Join(ctrlmsg.Ops(), ", "))
	}
	// The beacon would refuse a bad argument only after castd signed and
	// sent it: refuse it here, by the same grammar.
	if err := ctrlmsg.CheckArg(cmd.Op, cmd.Arg); err != nil {
		return cmd, http.StatusBadRequest, fmt.Errorf("%s: %s", cmd.Op, clipText(err.Error(), 2*maxQuoted))
	}
	return cmd, 0, nil
}
