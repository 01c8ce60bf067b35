package harness

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"time"

	"github.com/blockcast/beacon/shared/protocol"
)

// System is an origin, castd and one beacon on loopback, with all state and
// logs under Dir.
type System struct {
	Dir    string
	Bin    Binaries
	Origin *Origin

	CastdAddr  string // host:port of castd
	MQTTAddr   string // host:port of castd's embedded MQTT broker
	BeaconAddr string // host:port end users reach the beacon at
	AdminAddr  string // beacon's local status endpoint
	Castd      *Proc
	Beacon     *Proc

	// BeaconCacheSize is passed as --cache-size (default 256MiB).
	BeaconCacheSize string
	// BeaconExec, when set, runs the beacon through it, e.g.
	// []string{"qemu-mipsel-static"} for a cross-built binary.
	BeaconExec []string
	// BeaconArgs are extra flags for the beacon.
	BeaconArgs []string
	// BeaconCastURL, when set, is the castd URL given to the beacon (e.g. a
	// proxy in front of castd); CastdArgs are extra flags for castd.
	BeaconCastURL string
	CastdArgs     []string
	// PublicIP is the address castd sees the beacon at (default 127.0.0.1).
	PublicIP string
}

// NewSystem picks ports and starts the origin; call StartCastd and
// StartBeacon next (or Start for both).
func NewSystem(dir string, bin Binaries) (*System, error) {
	s := &System{Dir: dir, Bin: bin, BeaconCacheSize: "256MiB"}
	var err error
	if s.Origin, err = StartOrigin(); err != nil {
		return nil, err
	}
	for _, p := range []*string{&s.CastdAddr, &s.MQTTAddr, &s.BeaconAddr, &s.AdminAddr} {
		if *p, err = FreeAddr(); err != nil {
			s.Origin.Close()
			return nil, err
		}
	}
	return s, nil
}

// RouteToken is the --route-token System gives castd: the bearer that
// lets a test ask GET /v1/route about an address other than its own.
const RouteToken = "harness-route-token-0123456789"

// GetRoute GETs a /v1/route URL with the route token.
func GetRoute(url string) (*http.Response, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+RouteToken)
	return http.DefaultClient.Do(req)
}

// CastdURL is castd's base URL.
func (s *System) CastdURL() string { return "http://" + s.CastdAddr }

// Start starts castd, then the beacon, and waits until the beacon is registered.
func (s *System) Start() error {
	if err := s.StartCastd(); err != nil {
		return err
	}
	if err := s.StartBeacon(); err != nil {
		return err
	}
	if err := WaitRegistered(s.AdminAddr, 15*time.Second); err != nil {
		return err
	}
	return s.WaitRoutable(15 * time.Second)
}

func (s *System) publicIP() string {
	if s.PublicIP != "" {
		return s.PublicIP
	}
	return "127.0.0.1"
}

// WaitRoutable waits until castd routes the beacon's own address to the
// beacon: registered and heard online on the control plane.
func (s *System) WaitRoutable(timeout time.Duration) error {
	var last string
	if WaitFor(timeout, func() bool {
		resp, err := GetRoute(s.CastdURL() + protocol.PathRoute + "?path=/probe&client=" + s.publicIP())
		if err != nil {
			last = err.Error()
			return false
		}
		defer resp.Body.Close()
		var d struct{ Decision string }
		json.NewDecoder(resp.Body).Decode(&d)
		last = d.Decision
		return d.Decision == "beacon"
	}) {
		return nil
	}
	return fmt.Errorf("castd does not route to the beacon after %s (decision %q)", timeout, last)
}

// StartCastd starts castd and waits until it answers.
func (s *System) StartCastd() error {
	args := append([]string{
		"--listen", s.CastdAddr,
		"--state-dir", filepath.Join(s.Dir, "castd"),
		"--origin", s.Origin.URL,
		"--cache-size", "512MiB",
		"--mqtt-listen", s.MQTTAddr,
		"--amt-listen", "",
		"--log-level", "debug",
		"--route-token", RouteToken,
		"--allow-private-nodes", // relays in tests listen on loopback; "--allow-private-nodes=false" in CastdArgs undoes it
	}, s.CastdArgs...)
	p, err := Start("castd", filepath.Join(s.Dir, "castd.log"), s.Bin.Castd, args...)
	if err != nil {
		return err
	}
	s.Castd = p
	if err := WaitHTTP(s.CastdURL()+protocol.PathHealthz, 15*time.Second); err != nil {
		return fmt.Errorf("castd: %w\n%s", err, p.Tail(2000))
	}
	return nil
}

// StartBeacon starts the beacon and waits until its status endpoint answers.
func (s *System) StartBeacon() error {
	castURL := s.CastdURL()
	if s.BeaconCastURL != "" {
		castURL = s.BeaconCastURL
	}
	args := []string{
		"--cast-url", castURL,
		"--listen", s.BeaconAddr,
		"--lan-url", "http://" + s.BeaconAddr,
		"--admin-listen", s.AdminAddr,
		"--state-dir", filepath.Join(s.Dir, "beacon"),
		"--cache-size", s.BeaconCacheSize,
		"--check-interval", "2s",
		"--health-interval", "1s",
		"--log-level", "debug",
	}
	args = append(args, s.BeaconArgs...)
	bin := s.Bin.Beacon
	if len(s.BeaconExec) > 0 {
		args = append(append(append([]string{}, s.BeaconExec[1:]...), bin), args...)
		bin = s.BeaconExec[0]
	}
	p, err := Start("beacon", filepath.Join(s.Dir, "beacon.log"), bin, args...)
	if err != nil {
		return err
	}
	s.Beacon = p
	if err := WaitHTTP("http://"+s.AdminAddr+protocol.PathHealthz, 15*time.Second); err != nil {
		return fmt.Errorf("beacon: %w\n%s", err, p.Tail(2000))
	}
	return nil
}

// Close stops everything (SIGTERM, then SIGKILL after a grace period) and
// reports processes that did not exit cleanly.
func (s *System) Close() error {
	var errs []error
	for _, p := range []*Proc{s.Beacon, s.Castd} {
		if p != nil {
			if err := p.Stop(10 * time.Second); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", p.Name, err))
			}
		}
	}
	if s.Origin != nil {
		s.Origin.Close()
	}
	return errors.Join(errs...)
}
