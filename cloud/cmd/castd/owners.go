package main

// The owner and contract flags (castd.Options' owners block).
func init() {
	fieldFlags["OwnerSessionTTL"] = "owner-session-ttl"
	fieldFlags["HistoryInterval"] = "history-interval"
}
