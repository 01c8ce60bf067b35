package broker

import (
	"bytes"
	"sync"
	"sync/atomic"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/blockcast/beacon/shared/ctrlmsg"
	"github.com/blockcast/beacon/shared/ratelimit"
)

// authHook is the wallet authentication and the per-node ACL.
type authHook struct {
	mqtt.HookBase
	b      *Broker
	replay *ctrlmsg.ReplayCache

	limits sync.Map // client ID → *ratelimit.Bucket

	authOK, authRefused, aclDenied, rateLimited atomic.Uint64
}

func (h *authHook) ID() string { return "blockcast-auth" }

func (h *authHook) Provides(b byte) bool {
	return bytes.IndexByte([]byte{
		mqtt.OnConnectAuthenticate, mqtt.OnACLCheck, mqtt.OnPublish, mqtt.OnDisconnect,
	}, b) >= 0
}

// isAdmin reports whether an authenticated client logged in as admin. The
// username alone decides: authentication already proved it.
func (h *authHook) isAdmin(cl *mqtt.Client) bool {
	user := string(cl.Properties.Username)
	o := &h.b.opts
	return o.AdminUser != "" && user == o.AdminUser ||
		!o.AdminKey.IsZero() && user == o.AdminKey.String()
}

func (h *authHook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	user, pass := string(pk.Connect.Username), string(pk.Connect.Password)
	reason, ok := h.authenticate(user, pass, pk)
	if !ok {
		h.authRefused.Add(1)
		h.b.log.Debug("mqtt login refused", "user", truncate(user, 64), "client", truncate(pk.Connect.ClientIdentifier, 64),
			"remote", cl.Net.Remote, "reason", reason)
		return false
	}
	h.authOK.Add(1)
	h.b.log.Debug("mqtt login", "user", user, "remote", cl.Net.Remote)
	return true
}

func (h *authHook) authenticate(user, pass string, pk packets.Packet) (reason string, ok bool) {
	o := &h.b.opts
	now := o.Now()
	if o.AdminUser != "" && user == o.AdminUser {
		if !h.b.checkAdmin(user, pass) {
			return "bad admin password", false
		}
		return "", true
	}
	if !o.AdminKey.IsZero() && user == o.AdminKey.String() {
		if _, err := ctrlmsg.VerifyToken(user, pass, o.TokenWindow, now, h.replay); err != nil {
			return "admin token: " + err.Error(), false
		}
		return "", true
	}
	// A node. Cheap checks first: an unknown or misconfigured client costs
	// no signature verification.
	if pk.Connect.ClientIdentifier != user {
		return "client ID must be the node ID", false
	}
	if o.Known != nil && user != "" && !o.Known(user) {
		return "unknown node", false
	}
	if pk.Connect.WillFlag && pk.Connect.WillTopic != ctrlmsg.Topic(user, ctrlmsg.LeafStatus) {
		// Wills are published without an ACL check, so the topic is
		// checked here.
		return "last-will must be on the node's own status topic", false
	}
	if _, err := ctrlmsg.VerifyToken(user, pass, o.TokenWindow, now, h.replay); err != nil {
		return "token: " + err.Error(), false
	}
	return "", true
}

// OnACLCheck lets a node publish only under its own subtree (not to its cmd
// topic) and subscribe only to its own cmd topic.
func (h *authHook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	if h.isAdmin(cl) {
		return true
	}
	user := string(cl.Properties.Username)
	var ok bool
	if write {
		id, leaf, err := ctrlmsg.ParseTopic(topic)
		ok = err == nil && id == user && leaf != ctrlmsg.LeafCmd
	} else {
		ok = topic == ctrlmsg.Topic(user, ctrlmsg.LeafCmd)
	}
	if !ok {
		h.aclDenied.Add(1)
		h.b.log.Debug("mqtt acl denied", "node", user, "topic", truncate(topic, 200), "write", write)
	}
	return ok
}

// OnPublish applies the per-node rate limit and keeps nodes from retaining
// anything but their status (so the retained store holds at most one
// message per node).
func (h *authHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline || h.isAdmin(cl) {
		return pk, nil
	}
	if o := &h.b.opts; o.PublishRate > 0 {
		v, ok := h.limits.Load(cl.ID)
		if !ok {
			v, _ = h.limits.LoadOrStore(cl.ID, ratelimit.NewBucket(o.PublishRate, o.PublishBurst, o.Now()))
		}
		if !v.(*ratelimit.Bucket).Allow(o.Now()) {
			h.rateLimited.Add(1)
			h.b.log.Debug("mqtt publish rate limited", "node", cl.ID, "topic", pk.TopicName)
			return pk, packets.CodeSuccessIgnore // acknowledged, not delivered
		}
	}
	if pk.FixedHeader.Retain {
		if _, leaf, err := ctrlmsg.ParseTopic(pk.TopicName); err != nil || leaf != ctrlmsg.LeafStatus {
			pk.FixedHeader.Retain = false
		}
	}
	return pk, nil
}

func (h *authHook) OnDisconnect(cl *mqtt.Client, err error, expire bool) {
	h.limits.Delete(cl.ID)
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
