package protocol

import "time"

// Owners' API on castd: an owner wallet signs a castd challenge and gets a
// session token (Authorization: Bearer <token>) that shows only the nodes,
// contracts and figures of that wallet. The operator's admin token sees all.
const (
	// PathOwnerChallenge: POST OwnerChallengeRequest, answers OwnerChallenge.
	PathOwnerChallenge = "/v1/owner/challenge"
	// PathOwnerSession: POST OwnerSignIn, answers OwnerSession; DELETE with
	// the session token signs out.
	PathOwnerSession = "/v1/owner/session"
	// PathOwnerNodes: GET the signed-in owner's nodes, or /{id} one of them.
	PathOwnerNodes = "/v1/owner/nodes"
	// PathContracts: GET contracts (the owner's own, or all for the
	// operator), POST a CapacityOffer; GET /{id}?from=&to= one contract with
	// its evaluation.
	PathContracts = "/v1/contracts"
	// PathReport: GET ?from=&to=&format=csv|json, per node, per owner and
	// per contract figures for a payout period.
	PathReport = "/v1/report"
)

// OwnerChallengeRequest asks for a sign-in challenge for a wallet.
type OwnerChallengeRequest struct {
	Owner string `json:"owner"` // base58 wallet address
}

// OwnerChallenge is the text the wallet signs as a Solana off-chain
// message (`solana sign-offchain-message -k <wallet> "<text>"`, or a
// browser wallet signing the message bytes the page builds).
type OwnerChallenge struct {
	Text    string    `json:"text"`
	Expires time.Time `json:"expires"`
}

// OwnerSignIn answers a challenge. Signature (base58, 64 bytes) is the
// owner's signature of an off-chain message whose body is Text: either of
// Message (base64 of the exact signed bytes, as a browser wallet signs
// them) or, without Message, of the message the solana CLI builds from
// Text (both header layouts are tried).
type OwnerSignIn struct {
	Owner     string `json:"owner"`
	Text      string `json:"text"`
	Message   string `json:"message,omitempty"`
	Signature string `json:"signature"`
}

// OwnerSession is a signed-in owner's bearer token.
type OwnerSession struct {
	Token   string    `json:"token"`
	Owner   string    `json:"owner"`
	Expires time.Time `json:"expires"`
}

// CapacityOffer is an owner's signed offer of a node's capacity: the same
// shape as a Delegation (Text is the offer text, Message optional as in
// OwnerSignIn).
type CapacityOffer struct {
	Owner     string `json:"owner"`
	Text      string `json:"text"`
	Message   string `json:"message,omitempty"`
	Signature string `json:"signature"`
}
