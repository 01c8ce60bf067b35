package protocol

// The operator's node API on castd. PathNodes without a token answers only
// fleet totals (NodeSummary); the node list, GET PathNodes/{id} and
// POST PathNodes/{id}/commands need Authorization: Bearer <admin token>.
const (
	// PathNodes lists nodes: GET /v1/nodes?state=&role=&q=&limit=&offset=.
	PathNodes = "/v1/nodes"
	// PathCommandsSuffix ends a command path: POST /v1/nodes/{id}/commands.
	PathCommandsSuffix = "/commands"
)
