package protocol

// On-chain anchoring (Solana Memo transactions; see shared/onchain).
const (
	// PathCastRecord answers castd's CastRecord: where its CAST key is
	// recorded on chain. 404 while castd has none (no --solana-rpc, or
	// not published yet). A beacon does not trust the answer: it reads
	// the transaction from the chain itself (beacon verify-cast).
	PathCastRecord = "/v1/castkey/record"
)

// HeaderError values of refused registrations under castd
// --solana-rpc / --require-onchain.
const (
	// ErrOnchainRequired: the registration references no transaction
	// and castd requires one (beacon register --onchain).
	ErrOnchainRequired = "onchain-required"
	// ErrOnchainRefused: the referenced transaction does not record this
	// registration (not found, not confirmed, failed, not signed by the
	// node, or another memo).
	ErrOnchainRefused = "onchain-refused"
	// ErrOnchainUnavailable: castd could not reach its RPC endpoint;
	// retry later (503).
	ErrOnchainUnavailable = "onchain-unavailable"
	// ErrOnchainLimited: too many transactions to look up from this
	// address; retry after Retry-After (429).
	ErrOnchainLimited = "onchain-limited"
)

// CastRecord is the body of PathCastRecord.
type CastRecord struct {
	CastKey   string `json:"cast_key"`
	Signature string `json:"signature"` // the transaction ID (base58)
	Slot      uint64 `json:"slot"`
	Memo      string `json:"memo"`
}
