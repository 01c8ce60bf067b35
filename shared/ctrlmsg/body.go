package ctrlmsg

import (
	"encoding/json"
	"fmt"
	"math"
	"net/netip"
	"time"
)

// Node states a Status carries.
const (
	StateOnline  = "online"
	StateOffline = "offline"
)

// Status is a node's retained status. The agent publishes "online" after
// each connect and leaves a pre-signed "offline" as its last-will.
type Status struct {
	State   string `json:"state"` // StateOnline or StateOffline
	Version string `json:"version,omitempty"`
	// Interval is the node's health report interval in seconds (fractions
	// allowed; 0 means the default, 30 s). castd's stale and offline
	// timeouts are multiples of it.
	Interval float64 `json:"interval,omitempty"`
}

// IntervalDuration returns Interval as a duration (0 if unset).
func (s Status) IntervalDuration() time.Duration {
	return time.Duration(s.Interval * float64(time.Second))
}

// MaxInterval bounds a Status interval: a node may not ask castd to wait
// longer than this before calling it stale.
const MaxInterval = 24 * time.Hour

// Validate checks s's fields.
func (s Status) Validate() error {
	if s.State != StateOnline && s.State != StateOffline {
		return fmt.Errorf("%w: status state %.20q", ErrBadBody, s.State)
	}
	if math.IsNaN(s.Interval) || s.Interval < 0 || s.Interval > MaxInterval.Seconds() {
		return fmt.Errorf("%w: status interval %v s", ErrBadBody, s.Interval)
	}
	return checkLen("version", s.Version, maxShort)
}

// AMTState is the beacon's AMT tunnel, once it has one.
type AMTState struct {
	State    string   `json:"state"`              // gateway state machine state
	Relay    string   `json:"relay,omitempty"`    // relay address in use
	Channels []string `json:"channels,omitempty"` // joined (S,G) channels
}

// Health is a node's periodic health report. Counters are cumulative since
// the beacon started, so a later report supersedes an earlier one.
type Health struct {
	UptimeS       uint64  `json:"uptime_s"`
	Version       string  `json:"version,omitempty"`
	CacheObjects  uint64  `json:"cache_objects"`
	CacheBytes    uint64  `json:"cache_bytes"`
	HitRatio      float64 `json:"hit_ratio"` // 0..1
	BytesServed   uint64  `json:"bytes_served"`
	UpstreamBytes uint64  `json:"upstream_bytes"`
	// Load is how busy the node is, 0 idle to 1 full (more when
	// overloaded), such as the 1-minute load average over the CPU count.
	Load        float64   `json:"load"`
	MemFree     uint64    `json:"mem_free"`     // bytes
	StorageFree uint64    `json:"storage_free"` // bytes, on the cache's file system
	PublicIP    string    `json:"public_ip,omitempty"`
	AMT         *AMTState `json:"amt,omitempty"`
	// Multicast is the reception of objects castd sends by multicast.
	Multicast *MulticastState `json:"multicast,omitempty"`
	// StorageFullSince (unix ms) is set while the cache's file system
	// refuses writes for lack of space: the node passes misses through
	// uncached, and castd does not route end users to it meanwhile.
	StorageFullSince int64 `json:"storage_full_since,omitempty"`
	// MeasuredAt is when the numbers were taken (unix ms), when that is
	// earlier than the envelope's ts: reports queued while the broker was
	// away are re-signed when sent, and say here how old they are.
	MeasuredAt int64 `json:"measured_at,omitempty"`
}

// Limits on body fields; a payload is bounded by MaxPayload anyway, these
// keep single fields sane.
const (
	maxShort    = 256
	maxArg      = 8 << 10
	maxChannels = 1024
)

// Validate checks h's fields.
func (h Health) Validate() error {
	if math.IsNaN(h.HitRatio) || h.HitRatio < 0 || h.HitRatio > 1 {
		return fmt.Errorf("%w: hit ratio %v", ErrBadBody, h.HitRatio)
	}
	if math.IsNaN(h.Load) || math.IsInf(h.Load, 0) || h.Load < 0 {
		return fmt.Errorf("%w: load %v", ErrBadBody, h.Load)
	}
	if h.MeasuredAt < 0 || h.StorageFullSince < 0 {
		return fmt.Errorf("%w: measured_at %d", ErrBadBody, h.MeasuredAt)
	}
	if h.PublicIP != "" {
		if _, err := netip.ParseAddr(h.PublicIP); err != nil {
			return fmt.Errorf("%w: public ip: %w", ErrBadBody, err)
		}
	}
	if err := checkLen("version", h.Version, maxShort); err != nil {
		return err
	}
	if a := h.AMT; a != nil {
		if len(a.Channels) > maxChannels {
			return fmt.Errorf("%w: %d AMT channels, limit %d", ErrBadBody, len(a.Channels), maxChannels)
		}
		if err := checkLen("amt state", a.State, maxShort); err != nil {
			return err
		}
		if err := checkLen("amt relay", a.Relay, maxShort); err != nil {
			return err
		}
		for _, c := range a.Channels {
			if err := checkLen("amt channel", c, maxShort); err != nil {
				return err
			}
		}
	}
	return nil
}

// Command operations a beacon implements.
const (
	OpPurge      = "purge"      // Arg: a URL, or a prefix ending in '*'
	OpPrefetch   = "prefetch"   // Arg: a URL
	OpReregister = "reregister" // Arg: unused
	// OpAMTJoin and OpAMTLeave drive the AMT gateway. Arg: "SOURCE@GROUP",
	// optionally followed by " relay=ADDR[:PORT]" and " reemit" (join only).
	OpAMTJoin  = "amt-join"
	OpAMTLeave = "amt-leave"
	// OpReceiptAck tells the beacon castd has stored receipts (Arg:
	// receipt.FormatAck); OpReceiptRecords asks for records of one receipt
	// with their Merkle proofs (Arg: receipt.FormatAudit), answered with a
	// KindRecords message on the receipt topic.
	OpReceiptAck     = "receipt-ack"
	OpReceiptRecords = "receipt-records"
)

// ops lists every Op constant; KnownOp and Ops read it, so that a new op
// is added in one place.
var ops = [...]string{OpPurge, OpPrefetch, OpReregister, OpAMTJoin, OpAMTLeave, OpReceiptAck, OpReceiptRecords}

// KnownOp reports whether op is one of the Op constants.
func KnownOp(op string) bool {
	for _, o := range ops {
		if op == o {
			return true
		}
	}
	return false
}

// Ops returns the Op constants, for messages that list what is accepted.
func Ops() []string { return append([]string(nil), ops[:]...) }

// Command is an order from castd, signed by the CAST key.
type Command struct {
	ID  string `json:"id"` // chosen by castd; the Result echoes it
	Op  string `json:"op"`
	Arg string `json:"arg,omitempty"`
}

// Validate checks the ID and argument; it does not check Op, so that a
// node can answer an unknown (but signed) op with a refusal.
func (c Command) Validate() error {
	if err := validID(c.ID); err != nil {
		return err
	}
	if err := checkLen("op", c.Op, maxShort); err != nil {
		return err
	}
	return checkLen("arg", c.Arg, maxArg)
}

// Result is a node's answer to a Command.
type Result struct {
	ID     string `json:"id"`
	OK     bool   `json:"ok"`
	Error  string `json:"error,omitempty"`
	Detail string `json:"detail,omitempty"`
}

// Validate checks r's fields.
func (r Result) Validate() error {
	if err := validID(r.ID); err != nil {
		return err
	}
	if err := checkLen("error", r.Error, maxArg); err != nil {
		return err
	}
	return checkLen("detail", r.Detail, maxArg)
}

// validID accepts 1..64 characters of [A-Za-z0-9_-].
func validID(id string) error {
	if id == "" || len(id) > 64 {
		return fmt.Errorf("%w: command id length %d, want 1..64", ErrBadBody, len(id))
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return fmt.Errorf("%w: command id has %q", ErrBadBody, c)
		}
	}
	return nil
}

func checkLen(what, s string, limit int) error {
	if len(s) > limit {
		return fmt.Errorf("%w: %s is %d bytes, limit %d", ErrBadBody, what, len(s), limit)
	}
	return nil
}

// decode decodes m's body into v after checking m's kind. Unknown fields
// are ignored so that a newer beacon can add some without breaking an older
// castd.
func (m *Msg) decode(kind Kind, v any) error {
	if m.Kind != kind {
		return fmt.Errorf("%w: message is a %q, not a %q", ErrBadBody, m.Kind, kind)
	}
	if err := json.Unmarshal(m.Body, v); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrBadBody, kind, err)
	}
	return nil
}

// Status decodes and checks a status message's body.
func (m *Msg) Status() (Status, error) {
	var s Status
	if err := m.decode(KindStatus, &s); err != nil {
		return Status{}, err
	}
	if err := s.Validate(); err != nil {
		return Status{}, err
	}
	return s, nil
}

// Health decodes and checks a health message's body.
func (m *Msg) Health() (Health, error) {
	var h Health
	if err := m.decode(KindHealth, &h); err != nil {
		return Health{}, err
	}
	if err := h.Validate(); err != nil {
		return Health{}, err
	}
	return h, nil
}

// Command decodes and checks a command message's body.
func (m *Msg) Command() (Command, error) {
	var c Command
	if err := m.decode(KindCmd, &c); err != nil {
		return Command{}, err
	}
	if err := c.Validate(); err != nil {
		return Command{}, err
	}
	return c, nil
}

// Result decodes and checks a result message's body.
func (m *Msg) Result() (Result, error) {
	var r Result
	if err := m.decode(KindResult, &r); err != nil {
		return Result{}, err
	}
	if err := r.Validate(); err != nil {
		return Result{}, err
	}
	return r, nil
}
