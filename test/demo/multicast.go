package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"time"

	"github.com/blockcast/beacon/shared/protocol"
	"github.com/blockcast/beacon/test/harness"
)

// The multicast part of the demo: castd runs with --multicast and a
// threshold of mcThreshold beacons; mcBeacons beacons (the demo's first one
// and more) ask for one popular object. Each receives through its AMT
// gateway, since loopback carries no native multicast.
const (
	mcThreshold = 2
	mcBeacons   = 4
)

// multicastCastdArgs are castd's flags for the multicast part.
func multicastCastdArgs() ([]string, error) {
	amtAddr, err := harness.FreeAddr()
	if err != nil {
		return nil, err
	}
	dtlsAddr, err := harness.FreeAddr()
	if err != nil {
		return nil, err
	}
	return []string{"--multicast", "--multicast-threshold", strconv.Itoa(mcThreshold), "--multicast-source", "127.0.0.1",
		"--amt-listen", amtAddr, "--dtls-listen", dtlsAddr, "--multicast-rate", "100Mbit"}, nil
}

// multicastBeaconArgs are every beacon's flags for it.
var multicastBeaconArgs = []string{"--multicast-receive", "amt"}

type demoBeacon struct {
	name, addr, admin, log string
	proc                   *harness.Proc
}

// startBeacon starts one more beacon of sys.
func startBeacon(sys *harness.System, i int) (*demoBeacon, error) {
	b := &demoBeacon{name: fmt.Sprintf("beacon%d", i)}
	var err error
	for _, p := range []*string{&b.addr, &b.admin} {
		if *p, err = harness.FreeAddr(); err != nil {
			return nil, err
		}
	}
	b.log = filepath.Join(sys.Dir, b.name+".log")
	b.proc, err = harness.Start(b.name, b.log, sys.Bin.Beacon, append([]string{
		"--cast-url", sys.CastdURL(), "--listen", b.addr, "--lan-url", "http://" + b.addr, "--admin-listen", b.admin,
		"--state-dir", filepath.Join(sys.Dir, b.name), "--cache-size", "64MiB", "--check-interval", "2s",
		"--health-interval", "1s", "--log-level", "debug",
	}, multicastBeaconArgs...)...)
	if err != nil {
		return nil, err
	}
	if err := harness.WaitRegistered(b.admin, 15*time.Second); err != nil {
		b.proc.Stop(10 * time.Second)
		return nil, fmt.Errorf("%s: %w", b.name, err)
	}
	return b, nil
}

// runMulticast shows the conversion: the first mcThreshold-1 beacons get
// the object by unicast, the rest ask at once and get castd's offer, take
// one session, and every beacon then serves the object as a HIT.
func runMulticast(sys *harness.System, size string) (err error) {
	n, err := harness.ParseSize(size)
	if err != nil {
		return err
	}
	beacons := []*demoBeacon{{name: "beacon0", addr: sys.BeaconAddr, admin: sys.AdminAddr, log: sys.Beacon.Log, proc: sys.Beacon}}
	defer func() {
		for _, b := range beacons[1:] {
			if e := b.proc.Stop(10 * time.Second); e != nil && err == nil {
				err = fmt.Errorf("%s: %w", b.name, e)
			}
		}
	}()
	for i := 1; i < mcBeacons; i++ {
		b, err := startBeacon(sys, i)
		if err != nil {
			return err
		}
		beacons = append(beacons, b)
	}
	path := "/obj/" + size + "/popular-update.bin"
	want := harness.ContentSHA256(path, n)
	fmt.Printf("\n--- multicast: %d beacons ask for %s; castd sends it by multicast once %d distinct beacons asked (--multicast-threshold)\n",
		len(beacons), path, mcThreshold)
	fetchAt := func(b *demoBeacon) (*harness.Result, error) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		return harness.Fetch(ctx, "http://"+b.addr+path, nil)
	}
	check := func(b *demoBeacon, res *harness.Result, err error, wantCache string) error {
		if err != nil {
			return fmt.Errorf("%s: %w", b.name, err)
		}
		verdict := "matches the origin"
		if res.SHA256 != want {
			verdict = "DOES NOT match the origin"
		}
		cache := res.Header.Get(protocol.HeaderCache)
		fmt.Printf("  %s (http://%s): %d, X-Cache: %s, %d bytes in %s, sha256 %s… %s\n", b.name, b.addr, res.Status, cache,
			len(res.Body), res.Took.Round(time.Millisecond), res.SHA256[:12], verdict)
		if res.Status != 200 || res.SHA256 != want {
			return fmt.Errorf("%s: wrong content (status %d)", b.name, res.Status)
		}
		if cache != wantCache {
			return fmt.Errorf("%s: X-Cache %q, want %s", b.name, cache, wantCache)
		}
		return nil
	}
	for _, b := range beacons[:mcThreshold-1] {
		res, err := fetchAt(b)
		if err := check(b, res, err, "MISS"); err != nil {
			return err
		}
	}
	fmt.Printf("  now %d beacons ask at the same time:\n", len(beacons)-(mcThreshold-1))
	rest := beacons[mcThreshold-1:]
	results := make([]*harness.Result, len(rest))
	errs := make([]error, len(rest))
	var wg sync.WaitGroup
	for i, b := range rest {
		wg.Add(1)
		go func() { defer wg.Done(); results[i], errs[i] = fetchAt(b) }()
	}
	wg.Wait()
	for i, b := range rest {
		if err := check(b, results[i], errs[i], "MISS"); err != nil {
			return err
		}
	}
	page, err := get(sys.CastdURL() + protocol.PathMetrics)
	if err != nil {
		return err
	}
	offers, sessions := sample(page, "castd_multicast_offers_total"), sample(page, "castd_multicast_sessions_total")
	fmt.Printf("\ncastd: %v multicast offers, %v session; sent %s data, %s parity, %s early media, %s repairs\n", offers, sessions,
		kb(sample(page, `castd_multicast_bytes_total{kind="data"}`)), kb(sample(page, `castd_multicast_bytes_total{kind="parity"}`)+sample(page, `castd_multicast_bytes_total{kind="nack_parity"}`)),
		kb(sample(page, `castd_multicast_bytes_total{kind="early"}`)), kb(sample(page, `castd_multicast_bytes_total{kind="repair"}`)))
	if offer := offerLine(rest[0].log); offer != "" {
		fmt.Printf("the offer %s took: %s\n", rest[0].name, offer)
	}
	if want := float64(len(rest)); offers != want || sessions != 1 {
		return fmt.Errorf("castd made %v offers in %v sessions, want %v in 1", offers, sessions, want)
	}
	fmt.Println("\nbytes by path at each beacon:")
	for _, b := range beacons {
		page, err := get("http://" + b.admin + protocol.PathMetrics)
		if err != nil {
			return err
		}
		mc := sample(page, `beacon_multicast_bytes_total{path="multicast"}`)
		early := sample(page, `beacon_multicast_bytes_total{path="early"}`)
		repair := sample(page, `beacon_multicast_bytes_total{path="repair"}`)
		fallback := sample(page, `beacon_multicast_bytes_total{path="fallback"}`)
		if mc+early+repair+fallback == 0 {
			fmt.Printf("  %s: unicast (HTTP from castd) %s\n", b.name, kb(float64(n)))
			continue
		}
		fmt.Printf("  %s: multicast %s, early media %s, repair %s, HTTP fallback %s\n", b.name, kb(mc), kb(early), kb(repair), kb(fallback))
	}
	fmt.Println("\nevery beacon again (served from its own cache):")
	for _, b := range beacons {
		res, err := fetchAt(b)
		if err := check(b, res, err, "HIT"); err != nil {
			return err
		}
	}
	pulls := sys.Origin.Hits(path)
	fmt.Printf("origin requests for %s: %d (one pull for %d beacons)\n", path, pulls, len(beacons))
	if pulls != 1 {
		return fmt.Errorf("the origin was asked %d times for %s, want once", pulls, path)
	}
	return nil
}

func get(url string) ([]byte, error) {
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return io.ReadAll(resp.Body)
}

// sample reads one series of a Prometheus page (0 when absent).
func sample(page []byte, series string) float64 {
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindSubmatch(page)
	if m == nil {
		return 0
	}
	v, _ := strconv.ParseFloat(string(m[1]), 64)
	return v
}

func kb(v float64) string { return strconv.FormatFloat(v/1024, 'f', 1, 64) + " KiB" }

// offerLine finds what the beacon logged of the offer it took.
func offerLine(log string) string {
	raw, err := os.ReadFile(log)
	if err != nil {
		return ""
	}
	m := regexp.MustCompile(`multicast offer taken.*?manifest="([^"]*)".*?unicast=(\S+) amt_relay=(\S+)`).FindSubmatch(raw)
	if m == nil {
		return ""
	}
	return fmt.Sprintf("%s; AMT relay %s, DTLS %s", m[1], m[3], m[2])
}
