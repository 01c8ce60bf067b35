// Package protocol holds the HTTP API between beacons, relays and castd: paths,
// header names and the JSON bodies both sides encode, so that neither program
// has to import the other.
package protocol

import "time"

// API paths served by castd.
const (
	// PathRegister takes a signed POST of a Registration.
	PathRegister = "/v1/register"
	// PathRoute is the JSON decision API for upstream CDNs:
	// GET /v1/route?path=/a/b&client=203.0.113.7
	PathRoute = "/v1/route"
	// PathObjectPrefix is where a registered node fetches content through the
	// mid-tier cache with a signed GET: /v1/object/<content path>.
	PathObjectPrefix = "/v1/object"
	// PathCastKey returns castd's public key (base58) as text.
	PathCastKey = "/v1/castkey"
	// PathWhoami answers the caller's public address as castd sees it, so a
	// beacon notices that its public IP changed and registers again.
	PathWhoami = "/v1/whoami"
	// PathMetrics serves Prometheus text metrics (castd's API port, the
	// beacon's local status port).
	PathMetrics = "/metrics"
	// PathHealthz answers 200 while the process serves.
	PathHealthz = "/healthz"
	// PathAPIPrefix starts every API path; castd answers an unknown one
	// with a JSON 404 rather than treating it as content.
	PathAPIPrefix = "/v1/"
	// PathMulticastHistory is the operator's (admin token) per-minute byte
	// totals of the last hour by path: origin pulls, unicast to beacons,
	// multicast data, parity, repair, and the copies multicast saved.
	PathMulticastHistory = "/v1/multicast/history"
	// PathDebugProfile + a runtime profile name (heap, goroutine, allocs)
	// gives the operator (admin token) castd's profile in pprof's format.
	PathDebugProfile = "/v1/debug/pprof/"
)

// Roles a node can register with.
//
// "Relay" names two things in this project, and identifiers say which:
//   - a RELAY node (RoleRelay; RelayNode…, relayNode… in code) is the HTTP
//     edge tier the request router sends clients to for the prefixes the
//     operator approved (it registers with role "relay"): approvals, probes, coverage
//     zone, routed prefixes;
//   - an AMT relay (AMTRelay…, amtRelay…; the package cloud/amtrelay) is
//     the RFC 7450 tunnel endpoint that AMT gateways, such as the beacon's,
//     join multicast channels through (castd --amt-listen, beacon
//     --amt-relay, DRIAD's AMTRELAY records).
//
// Wire values, JSON field names, API paths, flags and the `castd relays`
// command keep the bare word "relay": users depend on them.
const (
	RoleBeacon = "beacon"
	RoleRelay  = "relay" // a RELAY node
)

// Header names used on the HTTP paths.
const (
	HeaderCache = "X-Cache" // HIT or MISS
	// HeaderRoute tells an end user (and the demo) how the router decided.
	HeaderRoute = "X-Blockcast-Route"
	// HeaderNode names the node a redirect points at.
	HeaderNode = "X-Blockcast-Node-Target"
	// HeaderError carries a machine-readable reason with an error answer
	// (ErrNotRegistered), so that a node need not parse the message.
	HeaderError = "X-Blockcast-Error"
	// HeaderMulticast is sent ("1") by a beacon that can take a multicast
	// offer on its signed GET of PathObjectPrefix+key; castd may then
	// answer with an offer (mcproto.OfferType) instead of the body.
	HeaderMulticast = "Blockcast-Multicast"
	// HeaderDelivery says how a beacon got an object it fills: "multicast"
	// when the response came from a multicast offer (firmware/mcrecv), so
	// that its delivery receipts count the bytes under that path.
	HeaderDelivery = "X-Blockcast-Delivery"
	// DeliveryMulticast is HeaderDelivery's value for a multicast fill.
	DeliveryMulticast = "multicast"
)

// ErrNotRegistered is castd's HeaderError on a signed request from a node
// it does not know (its registry was lost or restored from an old backup):
// the node registers again and retries.
const ErrNotRegistered = "not-registered"

// Delegation is an owner wallet's Solana off-chain message signature that
// delegates to a node key. Message is the exact signed off-chain message
// (the whole preamble and body), base64; Signature is base58, as the
// solana CLI prints it.
type Delegation struct {
	Owner     string `json:"owner"`
	Message   string `json:"message"`
	Signature string `json:"signature"`
}

// Registration is the body of a signed POST to PathRegister. The node ID is
// the signer of the request; the public IP is taken from the connection.
type Registration struct {
	Role         string      `json:"role"`
	LANURL       string      `json:"lan_url,omitempty"`
	Version      string      `json:"version,omitempty"`
	Capabilities []string    `json:"capabilities,omitempty"`
	CIDRs        []string    `json:"cidrs,omitempty"`
	Delegation   *Delegation `json:"delegation,omitempty"`
	// OnchainSig is the signature (base58) of the Memo transaction that
	// records this registration (shared/onchain.RegistrationMemo), when
	// the node anchored it (beacon register --onchain).
	OnchainSig string `json:"onchain_sig,omitempty"`
}

// RegistrationReply answers a successful registration.
type RegistrationReply struct {
	NodeID   string `json:"node_id"`
	PublicIP string `json:"public_ip"`
	Owner    string `json:"owner,omitempty"`
	CastKey  string `json:"cast_key"`
	// MQTT is the control-plane broker the node connects to (tcp:// or
	// tls://); empty when castd runs without one.
	MQTT      string    `json:"mqtt,omitempty"`
	FirstSeen time.Time `json:"first_seen"`
	LastSeen  time.Time `json:"last_seen"`
}

// Whoami is the body of PathWhoami.
type Whoami struct {
	IP string `json:"ip"`
	// Registered answers a signed whoami: whether castd knows the signer.
	// Absent on an unsigned one.
	Registered *bool `json:"registered,omitempty"`
	// State and Routable answer a signed whoami from a node castd knows:
	// its control-plane state as castd's monitor has it ("online",
	// "offline", "unknown"; empty when castd runs without a control
	// plane), and whether the request router sends users to it now.
	State    string `json:"state,omitempty"`
	Routable *bool  `json:"routable,omitempty"`
}

// Decision kinds returned by the router.
const (
	DecisionBeacon = "beacon" // self-IP unicast distribution
	DecisionRelay  = "relay"  // subnet CIDR unicast distribution
	DecisionOrigin = "origin" // traditional delivery
)

// RouteDecision is the JSON body of PathRoute, and what a redirect is built from.
type RouteDecision struct {
	Decision string `json:"decision"`
	Location string `json:"location"`
	NodeID   string `json:"node_id,omitempty"`
	Client   string `json:"client"`
	Prefix   string `json:"prefix,omitempty"` // the relay CIDR that matched
}

// Command is the body of POST /v1/nodes/{id}/commands (operator API).
type Command struct {
	Op  string `json:"op"`  // purge, prefetch, reregister
	Arg string `json:"arg"` // a URL path, or a prefix ending in '*' for purge
}

// CommandReply answers a Command: the ID its result will carry.
type CommandReply struct {
	ID string `json:"id"`
}

// Error is the JSON body of every 4xx/5xx that castd's API returns.
type Error struct {
	Error string `json:"error"`
}
