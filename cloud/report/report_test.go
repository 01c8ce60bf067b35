package report

import (
	"bytes"
	"encoding/csv"
	"flag"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/blockcast/beacon/cloud/contracts"
	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/offchain"
)

var update = flag.Bool("update", false, "rewrite testdata/report.csv")

// fixed is a Measurer and Served with set figures per node (a fake inside
// this package's unit test; castd's is package history).
type fixed map[string]contracts.Measured

func (f fixed) Measure(node string, from, to time.Time) (contracts.Measured, error) {
	return f[node], nil
}

func (f fixed) ServedBytes(node string, from, to time.Time) (contracts.ServedFigures, error) {
	m := f[node]
	return contracts.ServedFigures{Bytes: uint64(m.Online.Seconds()) * 1000, HitRatio: 0.5, Source: "test"}, nil
}

func key(t *testing.T, b byte) *identity.Keypair {
	k, err := identity.FromSeed(bytes.Repeat([]byte{b}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestReportGolden(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	owner, cast := key(t, 1), key(t, 3)
	n1, n2 := key(t, 2), key(t, 4)
	var cs []contracts.Contract
	for _, n := range []*identity.Keypair{n1, n2} {
		o := contracts.Offer{Owner: owner.Public(), Node: n.Public(), Cast: cast.Public(), BandwidthMbps: 10, AvailabilityHours: 200, StorageGB: 10,
			Start: t0, End: t0.Add(10 * 24 * time.Hour)}
		m, s, _ := offchain.SignText(owner, o.Text())
		c, err := contracts.Accept(cast, owner.Public(), o.Text(), m, s, t0)
		if err != nil {
			t.Fatal(err)
		}
		cs = append(cs, c)
	}
	day := 24 * time.Hour
	meas := fixed{
		n1.ID(): {Observed: day, Online: 23 * time.Hour, PeakMbps: 50, StorageMinBytes: 20e9, StorageSamples: 100},
		n2.ID(): {Observed: day, Online: 12 * time.Hour, PeakMbps: 1, StorageMinBytes: 5e9, StorageSamples: 100},
	}
	nodes := []Node{{ID: n2.ID(), Owner: owner.ID()}, {ID: n1.ID(), Owner: owner.ID()}, {ID: "=HYPERLINK(\"x\")"}}
	rows, err := Build(t0, t0.Add(day), t0.Add(2*day), nodes, cs, meas, meas)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := WriteCSV(&buf, rows); err != nil {
		t.Fatal(err)
	}
	if *update {
		os.WriteFile("testdata/report.csv", buf.Bytes(), 0o644)
	}
	want, _ := os.ReadFile("testdata/report.csv")
	if !bytes.Equal(buf.Bytes(), want) {
		t.Errorf("report differs from testdata/report.csv:\n%s", buf.Bytes())
	}
	recs, err := csv.NewReader(&buf).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		for _, c := range r {
			if strings.HasPrefix(c, "=") {
				t.Errorf("cell %q would run as a spreadsheet formula", c)
			}
		}
	}
}

func TestParsePeriod(t *testing.T) {
	for _, tc := range []struct {
		from, to string
		ok       bool
	}{
		{"2026-12-01", "2027-01-01", true},
		{"2026-12-01T00:00:00Z", "2026-12-01T01:00:00+01:00", false}, // empty
		{"2026-12-01", "2026-11-01", false},
		{"2020-01-01", "2026-01-01", false}, // too long
		{"yesterday", "2026-01-01", false},
	} {
		if _, _, err := ParsePeriod(tc.from, tc.to); (err == nil) != tc.ok {
			t.Errorf("%s..%s: %v", tc.from, tc.to, err)
		}
	}
}

func TestRunRefusesBadInput(t *testing.T) {
	for _, args := range [][]string{
		{"--from", "2026-12-01", "--to", "2027-01-01"},                                          // no token
		{"--admin-token", "x", "--from", "2026-12-01"},                                          // no end
		{"--admin-token", "x", "--from", "2026-12-01", "--to", "2027-01-01", "--format", "xls"}, // format
		{"--admin-token", "x", "--from", "2027-01-01", "--to", "2026-12-01"},                    // reversed
	} {
		var out, errb bytes.Buffer
		if code := Run(args, &out, &errb, func(string) string { return "" }); code != 2 || !strings.Contains(errb.String(), "castd report:") {
			t.Errorf("%q: exit %d, stderr %q", args, code, errb.String())
		}
	}
}
