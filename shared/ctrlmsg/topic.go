// Package ctrlmsg is the wire format of Blockcast's MQTT control plane: the
// topic tree, the signed envelope every payload travels in, the message
// bodies (status, health, command, result), and the signed token a node
// presents as its MQTT password.
//
// Everything here is signed at the application layer with the node's (or
// the CAST node's) ed25519 wallet key, so that the security of the control
// plane does not depend on which broker carries it or on that broker's ACLs:
// a node cannot forge another node's health, and nobody but the CAST key can
// command a node, even on a broker that lets anyone publish anywhere.
//
// Topic tree, one subtree per node ID (the base58 public key):
//
//	blockcast/v1/node/<id>/status   node → castd, retained: online, or offline (the last-will)
//	blockcast/v1/node/<id>/health   node → castd, every interval
//	blockcast/v1/node/<id>/cmd      castd → node, signed by the CAST key
//	blockcast/v1/node/<id>/result   node → castd, the outcome of a command
//	blockcast/v1/node/<id>/receipt  node → castd, signed delivery receipts and audit replies (package receipt)
//
// Payload (the envelope):
//
//	{"sig":"<base64 ed25519 signature>","msg":{"signer":"<base58>","kind":"health","ts":<unix ms>,"nonce":"<24 hex>","body":{...}}}
//
// The signature covers "blockcast-mqtt-v1\x00" + topic + "\x00" + the exact
// bytes of msg as sent, so a message cannot be moved to another topic (and
// so to another node or kind) without breaking it. The receiver verifies the
// bytes it got, never a re-encoding.
//
// This package uses only the standard library and shared/identity, amt
// and protocol (for the grammar of command arguments): it is linked into
// router firmware.
package ctrlmsg

import (
	"errors"
	"fmt"
	"strings"

	"github.com/blockcast/beacon/shared/identity"
)

// TopicPrefix starts every per-node topic.
const TopicPrefix = "blockcast/v1/node/"

// Leaf is the last level of a per-node topic.
type Leaf string

// The topics of a node's subtree.
const (
	LeafStatus  Leaf = "status"  // retained online/offline status; the last-will goes here
	LeafHealth  Leaf = "health"  // periodic health report
	LeafCmd     Leaf = "cmd"     // commands from castd, signed by the CAST key
	LeafResult  Leaf = "result"  // command results from the node
	LeafReceipt Leaf = "receipt" // signed delivery receipts and audit replies
)

// ErrBadTopic is wrapped by ParseTopic's errors.
var ErrBadTopic = errors.New("ctrlmsg: bad topic")

func (l Leaf) valid() bool {
	switch l {
	case LeafStatus, LeafHealth, LeafCmd, LeafResult, LeafReceipt:
		return true
	}
	return false
}

// Topic returns the topic of leaf in node id's subtree. It does not check
// id: a topic built from a bad ID is refused where it is parsed.
func Topic(id string, leaf Leaf) string {
	return TopicPrefix + id + "/" + string(leaf)
}

// Filter returns the subscription filter matching leaf for every node, such
// as "blockcast/v1/node/+/health".
func Filter(leaf Leaf) string {
	return TopicPrefix + "+/" + string(leaf)
}

// ParseTopic splits a per-node topic into the node ID and the leaf. The ID
// must be the base58 form of a 32-byte public key (and so canonical: base58
// has one spelling per byte string), the leaf one of the Leaf constants.
func ParseTopic(topic string) (id string, leaf Leaf, err error) {
	id, _, leaf, err = parseTopic(topic)
	return id, leaf, err
}

// parseTopic is ParseTopic that also returns the decoded node key.
func parseTopic(topic string) (id string, key identity.PublicKey, leaf Leaf, err error) {
	rest, ok := strings.CutPrefix(topic, TopicPrefix)
	if !ok {
		return "", key, "", fmt.Errorf("%w: %.80q does not start with %q", ErrBadTopic, topic, TopicPrefix)
	}
	id, l, ok := strings.Cut(rest, "/")
	if !ok {
		return "", key, "", fmt.Errorf("%w: %.80q has no leaf", ErrBadTopic, topic)
	}
	leaf = Leaf(l)
	if !leaf.valid() {
		return "", key, "", fmt.Errorf("%w: unknown leaf %.40q", ErrBadTopic, l)
	}
	if key, err = identity.ParsePublicKey(id); err != nil {
		return "", key, "", fmt.Errorf("%w: node ID: %w", ErrBadTopic, err)
	}
	return id, key, leaf, nil
}
