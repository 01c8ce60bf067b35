package ctrlmsg

// MulticastState is the beacon's multicast object reception in a health
// report: counters since start, bytes by the path they came by.
type MulticastState struct {
	BytesMulticast  uint64 `json:"bytes_multicast"`
	BytesParityUsed uint64 `json:"bytes_parity_used"` // also counted under their path
	BytesEarly      uint64 `json:"bytes_early"`
	BytesRepair     uint64 `json:"bytes_repair"`
	BytesFallback   uint64 `json:"bytes_fallback"` // HTTP range requests after a stall
	PacketsRejected uint64 `json:"packets_rejected"`
	OffersTaken     uint64 `json:"offers_taken"`
	OffersRefused   uint64 `json:"offers_refused"` // bad signature, replay, ...
	Channels        uint64 `json:"channels"`       // joined now
}
