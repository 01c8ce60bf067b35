package castd

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/blockcast/beacon/cloud/receipts"
	"github.com/blockcast/beacon/shared/ctrlmsg"
	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/protocol"
	"github.com/blockcast/beacon/shared/receipt"
	"github.com/blockcast/beacon/shared/signedreq"
)

// TestReceiptAttacksOverMQTT plays a node that lies, over castd's real
// broker: a replayed envelope, a receipt signed by another key, a
// future-dated one, a duplicate, and bytes claimed for an object it never
// fetched. Each is refused (and counted by reason in /metrics) or flagged
// (shown in the node's API view); the honest receipt is acknowledged and
// its audit passes.
func TestReceiptAttacksOverMQTT(t *testing.T) {
	s, srv := newTestServer(t, func(o *Options) {
		o.AdminToken = testToken
		o.MQTTListen = "127.0.0.1:0"
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := s.startControl(ctx); err != nil {
		t.Fatal(err)
	}
	kp, _ := identity.Generate()
	other, _ := identity.Generate()
	registerNode(t, srv.URL, kp, protocol.Registration{Role: protocol.RoleBeacon, LANURL: "http://192.168.77.12:8081", Version: "v1"})

	// The node fetches /a from castd (a signed fetch): castd notes it.
	req, _ := http.NewRequest(http.MethodGet, srv.URL+protocol.PathObjectPrefix+"/a", nil)
	signedreq.Sign(req, nil, kp, time.Now())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("object fetch: %s", resp.Status)
	}

	cmds := make(chan ctrlmsg.Command, 32)
	castKey := s.key.Public()
	tok, _ := ctrlmsg.MakeToken(kp, time.Now())
	c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + s.control.broker.Addr()).
		SetClientID(kp.ID()).SetUsername(kp.ID()).SetPassword(tok).SetAutoReconnect(false))
	if tk := c.Connect(); !tk.WaitTimeout(10*time.Second) || tk.Error() != nil {
		t.Fatalf("mqtt connect: %v", tk.Error())
	}
	defer c.Disconnect(0)
	if tk := c.Subscribe(ctrlmsg.Topic(kp.ID(), ctrlmsg.LeafCmd), 1, func(_ paho.Client, m paho.Message) {
		msg, err := ctrlmsg.Open(m.Payload(), m.Topic(), &castKey, time.Minute, time.Now(), nil)
		if err != nil {
			t.Errorf("command: %v", err)
			return
		}
		cmd, _ := msg.Command()
		cmds <- cmd
	}); !tk.WaitTimeout(10*time.Second) || tk.Error() != nil {
		t.Fatalf("subscribe: %v", tk.Error())
	}
	topic := ctrlmsg.Topic(kp.ID(), ctrlmsg.LeafReceipt)
	publish := func(payload []byte) {
		t.Helper()
		if tk := c.Publish(topic, 1, false, payload); !tk.WaitTimeout(10*time.Second) || tk.Error() != nil {
			t.Fatalf("publish: %v", tk.Error())
		}
	}
	seal := func(kind ctrlmsg.Kind, body any) []byte {
		t.Helper()
		p, err := ctrlmsg.Seal(kp, topic, kind, body, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	now := time.Now()
	rec := func(key string, at time.Time) receipt.Record {
		return receipt.Record{TS: at.UnixMilli(), Key: receipt.HexHash(receipt.KeyHash(key)), Bytes: 100, Status: 200}
	}
	mk := func(signer *identity.Keypair, seq uint64, start, end time.Time, recs ...receipt.Record) json.RawMessage {
		t.Helper()
		r := receipt.Summarize(signer.ID(), seq, start.UnixMilli(), end.UnixMilli(), recs, receipt.Overflow{})
		sr, err := receipt.Sign(signer, r)
		if err != nil {
			t.Fatal(err)
		}
		return sr.Marshal()
	}
	expect := func(op, arg string) ctrlmsg.Command {
		t.Helper()
		select {
		case cmd := <-cmds:
			if cmd.Op != op || (arg != "" && cmd.Arg != arg) {
				t.Fatalf("castd sent %s %q, want %s %q", cmd.Op, cmd.Arg, op, arg)
			}
			return cmd
		case <-time.After(10 * time.Second):
			t.Fatalf("no %s command", op)
		}
		return ctrlmsg.Command{}
	}
	refused := func(reason string) float64 {
		return scrapeMetric(t, srv.URL, `castd_receipts_refused_total{reason="`+reason+`"}`)
	}
	waitRefused := func(reason string, n float64) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for refused(reason) != n {
			if time.Now().After(deadline) {
				t.Fatalf("refused{%s} = %v, want %v", reason, refused(reason), n)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	// 1. Honest: acknowledged, and a sample of its records asked for.
	good := mk(kp, 1, now.Add(-time.Minute), now, rec("/a", now.Add(-30*time.Second)), rec("/a", now.Add(-20*time.Second)))
	goodMsg := seal(ctrlmsg.KindReceipt, good)
	publish(goodMsg)
	expect(ctrlmsg.OpReceiptAck, "1")
	audit := expect(ctrlmsg.OpReceiptRecords, "")
	// 2. The same envelope again: a replay, refused, no ack.
	publish(goodMsg)
	waitRefused(receipts.ReasonReplayed, 1)
	// 3. The same receipt in a fresh envelope (an ack was lost): a
	// duplicate, refused but acknowledged again.
	publish(seal(ctrlmsg.KindReceipt, good))
	expect(ctrlmsg.OpReceiptAck, "1")
	waitRefused(receipts.ReasonDuplicate, 1)
	// 4. Another key's receipt, in the node's envelope: forged.
	publish(seal(ctrlmsg.KindReceipt, mk(other, 2, now.Add(-time.Minute), now, rec("/a", now.Add(-time.Second)))))
	waitRefused(receipts.ReasonForged, 1)
	// 5. Future-dated.
	publish(seal(ctrlmsg.KindReceipt, mk(kp, 2, now, now.Add(time.Hour), rec("/a", now.Add(time.Minute)))))
	waitRefused(receipts.ReasonFuture, 1)
	// 6. Bytes for an object castd never gave the node: accepted, flagged.
	later := time.Now()
	publish(seal(ctrlmsg.KindReceipt, mk(kp, 3, now, later, rec("/never-fetched", later.Add(-time.Millisecond)))))
	expect(ctrlmsg.OpReceiptAck, "3")
	expect(ctrlmsg.OpReceiptRecords, "")
	for len(cmds) > 0 {
		cmd := <-cmds
		t.Errorf("castd also sent %s %q", cmd.Op, cmd.Arg)
	}

	// The honest audit reply passes.
	seq, idx, err := receipt.ParseAudit(audit.Arg)
	if err != nil || seq != 1 {
		t.Fatalf("audit %q: %v", audit.Arg, err)
	}
	recs := []receipt.Record{rec("/a", now.Add(-30*time.Second)), rec("/a", now.Add(-20*time.Second))}
	leaves := []receipt.Hash{recs[0].LeafHash(), recs[1].LeafHash()}
	reply := receipt.Records{Seq: 1, Root: receipt.HexHash(receipt.Root(leaves)), N: 2}
	for _, i := range idx {
		p, _ := receipt.Proof(leaves, int(i))
		it := receipt.Item{I: i, Record: recs[i]}
		for _, h := range p {
			it.Proof = append(it.Proof, receipt.HexHash(h))
		}
		reply.Items = append(reply.Items, it)
	}
	publish(seal(ctrlmsg.KindRecords, reply))
	deadline := time.Now().Add(10 * time.Second)
	for scrapeMetric(t, srv.URL, `castd_receipt_audits_total{result="ok"}`) != 1 {
		if time.Now().After(deadline) {
			t.Fatal("honest audit not counted")
		}
		time.Sleep(20 * time.Millisecond)
	}

	// The node's API view shows the flag and the refusals.
	_, body := do(t, from("127.0.0.35"), "GET", srv.URL+protocol.PathNodes+"/"+kp.ID(), "Bearer "+testToken, "")
	var view struct {
		Receipts struct {
			Accepted uint64            `json:"accepted"`
			Requests uint64            `json:"requests"`
			Refused  map[string]uint64 `json:"refused"`
			Flags    []struct{ Reason string }
		} `json:"receipts"`
	}
	if err := json.Unmarshal([]byte(body), &view); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	v := view.Receipts
	if v.Accepted != 2 || v.Requests != 3 || v.Refused["forged"] != 1 || v.Refused["future"] != 1 || v.Refused["duplicate"] != 1 ||
		len(v.Flags) != 1 || v.Flags[0].Reason != "unknown_object" {
		t.Fatalf("node view receipts: %s", body)
	}
	if got := scrapeMetric(t, srv.URL, `castd_receipts_flagged_total{reason="unknown_object"}`); got != 1 {
		t.Fatalf("flagged metric %v", got)
	}

	// The operator gets receipt 1 with its proof against the day's root;
	// nobody else does.
	proofURL := srv.URL + protocol.PathReceipts + "/" + kp.ID() + "/1"
	if code, _ := do(t, from("127.0.0.35"), "GET", proofURL, "", ""); code != http.StatusUnauthorized {
		t.Fatalf("proof without the token: %d", code)
	}
	code, body := do(t, from("127.0.0.35"), "GET", proofURL, "Bearer "+testToken, "")
	var p receipts.DayProof
	if code != http.StatusOK || json.Unmarshal([]byte(body), &p) != nil {
		t.Fatalf("proof: %d %s", code, body)
	}
	if err := p.Check(); err != nil || p.N != 2 || !bytes.Equal(bytes.TrimSpace(p.Receipt), bytes.TrimSpace(good)) {
		t.Fatalf("proof %+v: %v", p, err)
	}
	root, n, _ := s.receipts.DayRoot(time.Now())
	if n != 2 || receipt.Hash(p.Root) != root {
		t.Fatalf("day root %x of %d, proof's %s", root, n, p.Root)
	}
	if code, _ := do(t, from("127.0.0.35"), "GET", srv.URL+protocol.PathReceipts+"/"+kp.ID()+"/x", "Bearer "+testToken, ""); code != http.StatusBadRequest {
		t.Fatalf("bad seq: %d", code)
	}
}

func scrapeMetric(t *testing.T, base, series string) float64 {
	t.Helper()
	resp, err := http.Get(base + protocol.PathMetrics)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindSubmatch(raw)
	if m == nil {
		if !bytes.Contains(raw, []byte(strings.SplitN(series, "{", 2)[0])) {
			t.Fatalf("no %s in /metrics", series)
		}
		return 0
	}
	v, _ := strconv.ParseFloat(string(m[1]), 64)
	return v
}
