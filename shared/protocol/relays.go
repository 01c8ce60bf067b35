package protocol

import "time"

// The operator's relay-approval API (castd's admin token). A relay's
// registered CIDRs are only a request; clients are routed to it only for
// the prefixes the operator approved here or assigned in the
// coverage-zone file.
const (
	// PathRelayNodes lists relays: GET, a RelayList.
	PathRelayNodes = "/v1/relays"
	// RelayNodeApprove and RelayRevoke end the path of a POST of a RelayChange
	// to PathRelays + "/{id}": approve or revoke prefixes, answered with
	// the relay's RelayView.
	RelayNodeApprove = "/approve"
	RelayNodeRevoke  = "/revoke"
)

// RelayNodePath is the approve or revoke URL path (action is RelayApprove or
// RelayRevoke) of relay id.
func RelayNodePath(id, action string) string { return PathRelayNodes + "/" + id + action }

// Relay states in a RelayView.
const (
	RelayNodePending       = "pending"        // registered, routed for nothing yet
	RelayNodePartial       = "partial"        // routed for some prefixes; some it requested are not approved
	RelayNodeApproved      = "approved"       // routed for every prefix it requested (and maybe more)
	RelayNodeNotRegistered = "not-registered" // named by the coverage-zone file, but not registered as a relay
)

// RelayNodeChange is the body of an approve or revoke. An empty CIDRs approves
// everything the relay requests, or revokes everything approved. By names
// the operator, for the record.
type RelayNodeChange struct {
	CIDRs []string `json:"cidrs"`
	By    string   `json:"by,omitempty"`
}

// RelayNodeApproval is one prefix the operator approved: by whom, from which
// address, when.
type RelayNodeApproval struct {
	CIDR string    `json:"cidr"`
	By   string    `json:"by,omitempty"`
	From string    `json:"from,omitempty"`
	At   time.Time `json:"at"`
}

// RelayNodeZonePrefix is one prefix the coverage-zone file assigns, with its
// cache group.
type RelayNodeZonePrefix struct {
	CIDR  string `json:"cidr"`
	Group string `json:"group"`
}

// RelayNodeView is one relay as the approval API shows it.
type RelayNodeView struct {
	ID        string                `json:"id"`
	State     string                `json:"state"`
	LANURL    string                `json:"lan_url,omitempty"`
	LastSeen  time.Time             `json:"last_seen"`
	Requested []string              `json:"requested"`          // what the relay registered with
	Approved  []RelayNodeApproval   `json:"approved"`           // by the admin API
	Zone      []RelayNodeZonePrefix `json:"from_coverage_zone"` // by the coverage-zone file
	Effective []string              `json:"effective"`          // approved ∪ zone: what clients are routed for
	Pending   []string              `json:"pending"`            // requested but not effective
	Added     []string              `json:"added,omitempty"`    // in an approve reply: newly approved
	Removed   []string              `json:"removed,omitempty"`  // in a revoke reply: no longer approved
}

// RelayNodeList is the body of GET PathRelays.
type RelayNodeList struct {
	RelayNodes []RelayNodeView `json:"relays"`
	// CoverageZone describes the coverage-zone file in force, if any.
	CoverageZone *CoverageZoneStatus `json:"coverage_zone,omitempty"`
}

// CoverageZoneStatus is the coverage-zone file castd routes by.
type CoverageZoneStatus struct {
	Path       string    `json:"path"`
	Revision   string    `json:"revision,omitempty"`
	LoadedAt   time.Time `json:"loaded_at"`
	Groups     int       `json:"groups"`
	Prefixes   int       `json:"prefixes"`
	Unassigned []string  `json:"unassigned,omitempty"` // groups that name no node
	LastError  string    `json:"last_error,omitempty"` // of the last reload that failed (the file in force is older)
}
