package castd

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/blockcast/beacon/shared/ctrlmsg"
	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/protocol"
	"github.com/blockcast/beacon/shared/signedreq"
)

// TestCommandArgRefusedBeforeSending: castd used to sign and publish any
// argument of a known op, and only the beacon refused a bad one (a stray
// command in every node's queue, an audit log of commands that never could
// run). Now castd refuses it with 400 and the parser's error, and publishes
// nothing: a node subscribed to its command topic receives only the good
// command sent after the bad ones.
func TestCommandArgRefusedBeforeSending(t *testing.T) {
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
	body, _ := json.Marshal(protocol.Registration{Role: protocol.RoleBeacon, LANURL: "http://192.168.77.11:8081", Version: "v1"})
	req, _ := http.NewRequest(http.MethodPost, srv.URL+protocol.PathRegister, bytes.NewReader(body))
	signedreq.Sign(req, body, kp, time.Now())
	resp, err := from("127.0.0.27").Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("register: %s", resp.Status)
	}

	got := make(chan ctrlmsg.Command, 32)
	topic := ctrlmsg.Topic(kp.ID(), ctrlmsg.LeafCmd)
	castKey := s.key.Public()
	tok, err := ctrlmsg.MakeToken(kp, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + s.control.broker.Addr()).
		SetClientID(kp.ID()).SetUsername(kp.ID()).SetPassword(tok).SetAutoReconnect(false))
	if tk := c.Connect(); !tk.WaitTimeout(10*time.Second) || tk.Error() != nil {
		t.Fatalf("mqtt connect: %v", tk.Error())
	}
	defer c.Disconnect(0)
	tk := c.Subscribe(topic, 1, func(_ paho.Client, m paho.Message) {
		msg, err := ctrlmsg.Open(m.Payload(), m.Topic(), &castKey, time.Minute, time.Now(), nil)
		if err != nil {
			t.Errorf("command envelope: %v", err)
			return
		}
		cmd, err := msg.Command()
		if err != nil {
			t.Errorf("command body: %v", err)
			return
		}
		got <- cmd
	})
	if !tk.WaitTimeout(10*time.Second) || tk.Error() != nil {
		t.Fatalf("subscribe: %v", tk.Error())
	}

	url := srv.URL + protocol.PathNodes + "/" + kp.ID() + protocol.PathCommandsSuffix
	bearer := "Bearer " + testToken
	for _, tc := range []struct{ op, arg, want string }{
		{ctrlmsg.OpAMTJoin, "198.51.100.1@239.1.1.1", "not a source-specific"},
		{ctrlmsg.OpAMTJoin, "198.51.100.1@232.1.1.1 relay=nowhere", "--amt-relay"},
		{ctrlmsg.OpAMTJoin, "198.51.100.1@232.1.1.1 relay=0.0.0.0", "not a unicast"},
		{ctrlmsg.OpAMTJoin, "198.51.100.1@232.1.1.1 loud", "unknown option"},
		{ctrlmsg.OpAMTJoin, "232.1.1.1@232.1.1.2", "not a unicast"},
		{ctrlmsg.OpAMTJoin, "2001:db8::1@232.1.1.1", "different families"},
		{ctrlmsg.OpAMTJoin, "", "empty channel"},
		{ctrlmsg.OpAMTLeave, "198.51.100.1", "SOURCE@GROUP"},
		{ctrlmsg.OpPurge, "relative", "must start with /"},
		{ctrlmsg.OpPurge, "/a/../b", "dot segment"},
		{ctrlmsg.OpPurge, "/a/../*", "dot segment"},
		{ctrlmsg.OpPurge, "", "must start with /"},
		{ctrlmsg.OpPrefetch, "/a%2fb", "encoded slash"},
		{ctrlmsg.OpPrefetch, "/a\nb", "control byte"},
	} {
		b, _ := json.Marshal(protocol.Command{Op: tc.op, Arg: tc.arg})
		code, body := do(t, from("127.0.0.34"), "POST", url, bearer, string(b))
		if code != http.StatusBadRequest || !strings.Contains(body, tc.want) {
			t.Errorf("%s %q: %d %s, want 400 saying %q", tc.op, tc.arg, code, body, tc.want)
		}
	}
	b, _ := json.Marshal(protocol.Command{Op: ctrlmsg.OpAMTJoin, Arg: "198.51.100.1@232.1.1.1 relay=127.0.0.1:2268 reemit"})
	if code, body := do(t, from("127.0.0.34"), "POST", url, bearer, string(b)); code != http.StatusAccepted {
		t.Fatalf("good amt-join: %d %s", code, body)
	}
	// Commands on one topic arrive in order: the first to arrive shows
	// whether any bad one was published before the good one.
	select {
	case cmd := <-got:
		if cmd.Op != ctrlmsg.OpAMTJoin || !strings.HasSuffix(cmd.Arg, " reemit") {
			t.Errorf("castd published %s %q", cmd.Op, cmd.Arg)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the good command never arrived")
	}
	for len(got) > 0 {
		cmd := <-got
		t.Errorf("castd also published %s %q", cmd.Op, cmd.Arg)
	}
}
