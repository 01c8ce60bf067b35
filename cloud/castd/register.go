package castd

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/blockcast/beacon/cloud/broker"
	"github.com/blockcast/beacon/shared/metrics"
	"github.com/blockcast/beacon/shared/protocol"
	"github.com/blockcast/beacon/shared/ratelimit"
	"github.com/blockcast/beacon/shared/signedreq"
)

// Registrations of new nodes are limited per source address (IPv6: per
// /64): DefaultRegistrationBurst at once, then DefaultRegistrationRate a
// minute. A node already registered is not limited (its re-registrations
// after an outage or an address change cost nothing), so what the limit
// meets is new devices, which arrive one installation at a time even
// behind a carrier-grade NAT that puts a few hundred homes on one
// address; an operator provisioning a batch behind one address raises
// --registration-burst. One address can so add at most about
// burst + rate × 60 × 24 never-online nodes a day (8,670), and those
// expire (--registration-ttl).
const (
	DefaultRegistrationBurst = 30
	DefaultRegistrationRate  = 6 // a minute
	DefaultRegistrationTTL   = 24 * time.Hour
)

// checkRegistration checks the registration options.
func (o *Options) checkRegistration() error {
	if o.RegistrationBurst < 0 {
		return fieldError("RegistrationBurst", errors.New("must not be negative"))
	}
	if math.IsNaN(o.RegistrationRate) || math.IsInf(o.RegistrationRate, 0) {
		return fieldError("RegistrationRate", errors.New("must be a number"))
	}
	return nil
}

// registrationLimit is the per-address limiter, nil when turned off.
func (o *Options) registrationLimit() *ratelimit.PerAddr {
	if o.RegistrationRate < 0 {
		return nil
	}
	return ratelimit.NewPerAddr(o.RegistrationRate/60, max(o.RegistrationBurst, 1))
}

// retryAfter is how long an address waits for its next token, in whole
// seconds for the Retry-After header.
func (o *Options) retryAfter() int {
	return max(1, int(math.Ceil(60/o.RegistrationRate)))
}

// allowRegistration spends one of the source address's registrations
// unless the request claims a node that is registered already (its
// signature is checked next, like everyone's). It answers 429 with
// Retry-After and returns false when the address has none left. It runs
// before the body is read or any signature checked, so a flood of fresh
// keys costs castd no more than this.
func (s *Server) allowRegistration(w http.ResponseWriter, r *http.Request) bool {
	if s.regLimit == nil || s.router.Has(r.Header.Get(signedreq.HeaderNode)) {
		return true
	}
	src, err := s.ips.Addr(r)
	if err != nil {
		src = netip.IPv6Unspecified() // refused later, with the reason
	}
	if s.regLimit.Allow(src, time.Now()) {
		return true
	}
	s.regLimited.Add(1)
	s.refused.Add(1)
	if n, ok := s.regLimitLog.due(time.Now()); ok {
		// One line per interval, not one per refusal: a flood must not
		// become a flood of logs.
		s.log.Warn("registrations rate limited (count since the last such line)", "refused", n, "latest_from", src)
	}
	after := s.opts.retryAfter()
	w.Header().Set("Retry-After", strconv.Itoa(after))
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusTooManyRequests)
	json.NewEncoder(w).Encode(protocol.Error{Error: fmt.Sprintf(
		"too many new registrations from %s (at most %d at once, then %g a minute); retry in %d s",
		src, s.opts.RegistrationBurst, s.opts.RegistrationRate, after)})
	return false
}

// summaryLog lets a repeated event be logged at most once per interval,
// with how many happened since the last line.
type summaryLog struct {
	mu    sync.Mutex
	last  time.Time
	count uint64
}

// summaryEvery is how often, at most, a summaryLog line is written.
const summaryEvery = 10 * time.Second

// due counts one event and reports whether to log now, with the count.
func (l *summaryLog) due(now time.Time) (uint64, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.count++
	if now.Sub(l.last) < summaryEvery {
		return 0, false
	}
	n := l.count
	l.count, l.last = 0, now
	return n, true
}

// errTrailingData refuses a body with more than one JSON value.
var errTrailingData = errors.New("data after the JSON object")

// decodeRegistration reads a registration body: exactly one JSON object,
// with nothing but white space after it. Trailing bytes are refused rather
// than ignored, because what castd ignores another parser (a proxy, a log
// pipeline, a later castd) might read.
func decodeRegistration(body []byte) (protocol.Registration, error) {
	var reg protocol.Registration
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&reg); err != nil {
		return protocol.Registration{}, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return protocol.Registration{}, fmt.Errorf("%w (at byte %d)", errTrailingData, dec.InputOffset())
	}
	return reg, nil
}

// registerGuardMetrics exports the flood defences' counters.
func (s *Server) registerGuardMetrics(m *metrics.Registry) {
	m.Collect("castd_mqtt_connections_shed_total", "Connections the embedded broker closed in or before the MQTT handshake, by reason.", metrics.Counter, func() []metrics.Sample {
		if s.control == nil || s.control.broker == nil {
			return nil
		}
		by := s.control.broker.Stats().ShedBy
		out := make([]metrics.Sample, 0, len(broker.ShedReasons))
		for _, r := range broker.ShedReasons {
			out = append(out, metrics.Sample{Labels: []string{"reason", r}, Value: float64(by[r])})
		}
		return out
	})
	m.Func("castd_registrations_rate_limited_total", "Registrations of new nodes refused with 429 by the per-address limit.", metrics.Counter, func() float64 {
		return float64(s.regLimited.Load())
	})
	m.Func("castd_registrations_expired_total", "Registrations removed because the control plane never saw the node online (--registration-ttl).", metrics.Counter, func() float64 {
		if e := s.expiry.Load(); e != nil {
			return float64(e.expired.Load())
		}
		return 0
	})
}
