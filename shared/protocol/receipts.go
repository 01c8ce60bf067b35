package protocol

// PathReceipts is the operator's receipt API on castd:
// GET /v1/receipts/{node}/{seq} answers a stored delivery receipt with its
// inclusion proof in the tree of the day castd accepted it (the root the
// daily anchor publishes). It needs the admin token.
const PathReceipts = "/v1/receipts"
