package protocol

// Paths the beacon serves itself: its local API (loopback by default) and,
// on the listener end users reach, the owner's read-only status page.
const (
	// PathStatus answers the beacon's state as JSON (no secrets): on the
	// local API and beside the status page.
	PathStatus = "/v1/status"
	// PathStatusPage is the owner's status page on the beacon's LAN
	// listener. "/" is never a content URL: castd serves its dashboard
	// there, so no user is ever redirected to a beacon's "/".
	PathStatusPage = "/"
	// PathAMT is the beacon's local AMT gateway API: GET PathAMT answers
	// the gateway's state; POST PathAMT + AMTJoin or AMTLeave with
	// {"channel": "<an amt-join argument>"} joins or leaves a channel.
	PathAMT  = "/v1/amt"
	AMTJoin  = "/join"
	AMTLeave = "/leave"
)
