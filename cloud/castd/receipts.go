package castd

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/blockcast/beacon/cloud/monitor"
	"github.com/blockcast/beacon/cloud/receipts"
	"github.com/blockcast/beacon/shared/ctrlmsg"
	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/metrics"
	"github.com/blockcast/beacon/shared/protocol"
	"github.com/blockcast/beacon/shared/receipt"
)

// receiptWindow is how far a receipt message's envelope time may be from
// castd's clock (the monitor's window): a receipt kept through an outage is
// signed again when sent, its own interval says when it was.
const receiptWindow = monitor.DefaultWindow

// openReceipts opens the receipts book in the state directory.
func (s *Server) openReceipts() error {
	b, err := receipts.Open(receipts.Options{
		Path:   filepath.Join(s.opts.StateDir, "receipts.db"),
		Logger: s.log,
		Day:    s.opts.ReceiptDay,
	})
	if err != nil {
		return fmt.Errorf("castd: %w", err)
	}
	s.receipts = b
	s.receiptReplay = ctrlmsg.NewReplayCache(receiptWindow, 1<<16)
	return nil
}

// NoteMulticast tells the receipts cross-check that the object key went
// out on a multicast channel, so that any node may have it: the hook for
// the multicast sender.
func (s *Server) NoteMulticast(key string) { s.receipts.NoteMulticast(key) }

// startReceipts subscribes to the nodes' receipt topics and commits the
// receipts book's notes until ctx ends.
func (c *control) startReceipts(ctx context.Context) error {
	s := c.s
	if err := c.bus.Subscribe(ctrlmsg.Filter(ctrlmsg.LeafReceipt), func(topic string, payload []byte, retained bool) {
		c.onReceipt(topic, payload, retained)
	}); err != nil {
		return fmt.Errorf("castd: receipts: %w", err)
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		s.receipts.Run(ctx)
	}()
	return nil
}

// onReceipt handles a message on a node's receipt topic: a receipt (stored,
// acknowledged, a sample of its records asked for) or an audit reply.
func (c *control) onReceipt(topic string, payload []byte, retained bool) {
	s := c.s
	id, _, err := ctrlmsg.ParseTopic(topic)
	if err != nil {
		s.receipts.Refused("", err)
		return
	}
	if !s.router.Has(id) {
		s.receipts.Refused("", &receipts.Refusal{Reason: receipts.ReasonUnknownNode, Err: errors.New(id)})
		return
	}
	if retained {
		// Receipts are never retained: a retained one is someone's replay.
		s.receipts.Refused(id, &receipts.Refusal{Reason: receipts.ReasonReplayed, Err: errors.New("retained message")})
		return
	}
	msg, err := ctrlmsg.Open(payload, topic, nil, receiptWindow, time.Now(), s.receiptReplay)
	if err != nil {
		s.receipts.Refused(id, err)
		s.log.Info("receipt message refused", "node", id, "reason", receipts.ReasonOf(err), "err", err)
		return
	}
	switch msg.Kind {
	case ctrlmsg.KindReceipt:
		out, err := s.receipts.Accept(msg.Signer, msg.Body)
		if err != nil {
			s.log.Info("receipt refused", "node", id, "reason", receipts.ReasonOf(err), "err", err)
		} else {
			s.log.Debug("receipt accepted", "node", id, "seq", out.Seq, "flags", len(out.Flags))
		}
		if out.Ack {
			if _, err := c.monitor.Command(id, ctrlmsg.OpReceiptAck, receipt.FormatAck([]uint64{out.Seq})); err != nil {
				s.log.Warn("receipt ack not sent; the node will send it again", "node", id, "seq", out.Seq, "err", err)
			}
		}
		if len(out.Audit) > 0 {
			if _, err := c.monitor.Command(id, ctrlmsg.OpReceiptRecords, receipt.FormatAudit(out.Seq, out.Audit)); err != nil {
				s.log.Warn("receipt audit not sent", "node", id, "seq", out.Seq, "err", err)
			}
		}
	case ctrlmsg.KindRecords:
		if err := s.receipts.Audit(msg.Signer, msg.Body); err != nil {
			s.log.Info("receipt audit reply refused", "node", id, "err", err)
		}
	default:
		s.receipts.Refused(id, &receipts.Refusal{Reason: receipts.ReasonMalformed, Err: fmt.Errorf("kind %q", msg.Kind)})
	}
}

// receiptMetrics exports the receipts book's counters.
func (s *Server) receiptMetrics(m *metrics.Registry) {
	m.Func("castd_receipts_accepted_total", "Delivery receipts verified and stored.", metrics.Counter, func() float64 {
		return float64(s.receipts.Stats().Accepted)
	})
	m.Collect("castd_receipts_refused_total", "Delivery receipts (and audit replies) refused, by reason.", metrics.Counter, func() []metrics.Sample {
		st := s.receipts.Stats()
		out := make([]metrics.Sample, 0, len(receipts.RefusalReasons))
		for _, r := range receipts.RefusalReasons {
			out = append(out, metrics.Sample{Labels: []string{"reason", r}, Value: float64(st.Refused[r])})
		}
		return out
	})
	m.Collect("castd_receipts_flagged_total", "Accepted receipts whose claims castd cannot account for, by reason.", metrics.Counter, func() []metrics.Sample {
		st := s.receipts.Stats()
		out := make([]metrics.Sample, 0, len(receipts.FlagReasons))
		for _, r := range receipts.FlagReasons {
			out = append(out, metrics.Sample{Labels: []string{"reason", r}, Value: float64(st.Flagged[r])})
		}
		return out
	})
	m.Collect("castd_receipt_audits_total", "Audits of receipts' records, by result.", metrics.Counter, func() []metrics.Sample {
		st := s.receipts.Stats()
		return []metrics.Sample{
			{Labels: []string{"result", "ok"}, Value: float64(st.AuditsOK)},
			{Labels: []string{"result", "failed"}, Value: float64(st.AuditsFailed)},
		}
	})
}

// handleReceiptProof serves GET /v1/receipts/{node}/{seq}: the stored
// receipt and its proof against its day's root, for the operator (and the
// anchor's `prove`).
func (s *Server) handleReceiptProof(w http.ResponseWriter, r *http.Request) {
	if !s.onlyRead(w, r, "receipts are read with GET") {
		return
	}
	if !s.requireAdmin(w, r) {
		return
	}
	node, seqText, ok := strings.Cut(strings.TrimPrefix(r.URL.Path, protocol.PathReceipts+"/"), "/")
	seq, err := strconv.ParseUint(seqText, 10, 64)
	if !ok || err != nil || seq == 0 {
		s.fail(w, r, http.StatusBadRequest, "want "+protocol.PathReceipts+"/{node}/{seq}")
		return
	}
	if _, err := identity.ParsePublicKey(node); err != nil {
		s.fail(w, r, http.StatusBadRequest, "node: "+err.Error())
		return
	}
	p, err := s.receipts.Prove(node, seq)
	if err != nil {
		s.fail(w, r, http.StatusNotFound, err.Error())
		return
	}
	s.attachAnchor(node, seq, p)
	writeJSON(w, p)
}

// receiptView is the node's receipts summary for its API view (nil: none).
func (s *Server) receiptView(id string) *receipts.View {
	if v := s.receipts.View(id); v != nil {
		return v
	}
	return nil
}
