package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/blockcast/beacon/shared/protocol"
	"github.com/blockcast/beacon/test/harness"
)

const (
	adminToken = "soak-admin-token-0123456789"
	routeToken = "soak-route-token-0123456789"
	// The caches are small next to the key space (hot set ~14 MiB, cold
	// set ~90 MiB) so that they are full and evicting within the first
	// minutes: memory is then judged at steady state, not while each
	// cached object still adds its index entry.
	castdCache  = "24MiB"
	beaconCache = "20MiB"
)

// node is one beacon: its own state directory, ports and public address.
type node struct {
	idx       int
	name      string
	listen    string
	admin     string
	stateDir  string
	fwd       *forwarder
	proc      *harness.Proc
	id        string
	metricURL string
}

// system is everything the soak runs: origin, castd (with its embedded
// broker or next to a Mosquitto process), and the beacons.
type system struct {
	mu        sync.Mutex // guards the *harness.Proc fields, replaced by restarts
	dir       string
	bin       harness.Binaries
	origin    *origin
	castdAddr string
	mqttAddr  string
	castd     *harness.Proc
	mosq      *harness.Proc
	mosqConf  string
	nodes     []*node
	start     time.Duration // readiness timeout
	amt       *amtSoak      // the AMT channel, nil when off
}

func (s *system) castdURL() string { return "http://" + s.castdAddr }

func (s *system) startCastd() error {
	args := []string{
		"--listen", s.castdAddr,
		"--state-dir", filepath.Join(s.dir, "castd"),
		"--origin", s.origin.URL,
		"--cache-size", castdCache,
		"--admin-token", adminToken,
		"--route-token", routeToken,
		"--amt-listen", "",
		"--log-level", "info",
		"--allow-private-nodes",
	}
	if s.mosq != nil {
		args = append(args, "--mqtt-listen", "", "--mqtt-broker", "tcp://"+s.mqttAddr)
	} else {
		args = append(args, "--mqtt-listen", s.mqttAddr)
	}
	if s.amt != nil {
		args = append(args, s.amt.castdArgs()...) // the later --amt-listen wins
	}
	p, err := harness.Start("castd", filepath.Join(s.dir, "castd.log"), s.bin.Castd, args...)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.castd = p
	s.mu.Unlock()
	if err := harness.WaitHTTP(s.castdURL()+protocol.PathHealthz, s.start); err != nil {
		return fmt.Errorf("castd: %w\n%s", err, p.Tail(2000))
	}
	return nil
}

// startMosquitto runs the external broker castd and the beacons use with
// --mqtt-broker: a real Mosquitto, no persistence.
func (s *system) startMosquitto() error {
	if s.mosqConf == "" {
		_, port, _ := strings.Cut(s.mqttAddr, ":")
		s.mosqConf = filepath.Join(s.dir, "mosquitto.conf")
		conf := fmt.Sprintf("listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest stdout\n", port)
		if err := os.WriteFile(s.mosqConf, []byte(conf), 0o644); err != nil {
			return err
		}
	}
	p, err := harness.Start("mosquitto", filepath.Join(s.dir, "mosquitto.log"), mosquittoPath, "-c", s.mosqConf)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.mosq = p
	s.mu.Unlock()
	if !harness.WaitFor(s.start, func() bool { return dialable(s.mqttAddr) }) {
		return fmt.Errorf("mosquitto does not accept connections on %s\n%s", s.mqttAddr, p.Tail(2000))
	}
	return nil
}

const mosquittoPath = "/usr/sbin/mosquitto"

func (s *system) startBeacon(n *node) error {
	args := []string{
		"--cast-url", "http://" + n.fwd.Addr(),
		"--listen", n.listen,
		"--lan-url", "http://" + n.listen,
		"--admin-listen", n.admin,
		"--state-dir", n.stateDir,
		"--cache-size", beaconCache,
		"--check-interval", "2s",
		"--health-interval", "1s",
		"--log-level", "info",
		"--amt-driad=false",
	}
	if s.mosq != nil {
		args = append(args, "--mqtt-url", "tcp://"+s.mqttAddr)
	}
	if s.amt != nil {
		args = append(args, s.amt.beaconArgs(n.idx)...)
	}
	p, err := harness.Start(n.name, filepath.Join(s.dir, n.name+".log"), s.bin.Beacon, args...)
	if err != nil {
		return err
	}
	s.mu.Lock()
	n.proc = p
	s.mu.Unlock()
	if err := harness.WaitHTTP("http://"+n.admin+protocol.PathHealthz, s.start); err != nil {
		return fmt.Errorf("%s: %w\n%s", n.name, err, p.Tail(2000))
	}
	return nil
}

// routed reports whether castd sends the end users behind n to n.
func (s *system) routed(n *node) bool {
	req, _ := http.NewRequest(http.MethodGet, s.castdURL()+protocol.PathRoute+"?path=/probe&client="+hostIPString(n.idx), nil)
	req.Header.Set("Authorization", "Bearer "+routeToken)
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	var d protocol.RouteDecision
	json.NewDecoder(resp.Body).Decode(&d)
	return d.Decision == protocol.DecisionBeacon && (n.id == "" || d.NodeID == n.id)
}

// waitRouted waits until castd routes every beacon's users to it again.
func (s *system) waitRouted(timeout time.Duration) error {
	for _, n := range s.nodes {
		if !harness.WaitFor(timeout, func() bool { return s.routed(n) }) {
			return fmt.Errorf("castd does not route %s's users (%s) to it after %s", n.name, hostIPString(n.idx), timeout)
		}
	}
	return nil
}

// stop ends every process: beacons, castd, the broker.
func (s *system) stop() error {
	var errs []string
	for _, n := range s.nodes {
		if n.proc != nil {
			if err := n.proc.Stop(10 * time.Second); err != nil {
				errs = append(errs, n.name+": "+err.Error())
			}
		}
		if n.fwd != nil {
			n.fwd.Close()
		}
	}
	if s.castd != nil {
		if err := s.castd.Stop(10 * time.Second); err != nil {
			errs = append(errs, "castd: "+err.Error())
		}
	}
	if s.mosq != nil {
		s.mosq.Kill()
	}
	if s.origin != nil {
		s.origin.Close()
	}
	if len(errs) > 0 {
		return fmt.Errorf("shutdown: %s", strings.Join(errs, "; "))
	}
	return nil
}
