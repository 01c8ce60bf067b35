// Package report makes the payout-period report: per node, per owner and
// per contract figures over [from, to), as JSON rows or CSV, and is the
// `castd report` command that fetches it from a running castd.
package report

import (
	"encoding/csv"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/blockcast/beacon/cloud/contracts"
)

// Row kinds.
const (
	KindNode     = "node"
	KindOwner    = "owner"
	KindContract = "contract"
)

// Row is one line of the report.
type Row struct {
	Kind          string    `json:"kind"`
	ID            string    `json:"id"` // node, owner wallet or contract ID
	Owner         string    `json:"owner,omitempty"`
	Node          string    `json:"node,omitempty"`
	From          time.Time `json:"from"`
	To            time.Time `json:"to"`
	ObservedHours float64   `json:"observed_hours"`
	OnlineHours   float64   `json:"online_hours"`
	BytesServed   uint64    `json:"bytes_served"`
	HitRatio      float64   `json:"hit_ratio"`
	Source        string    `json:"source,omitempty"` // of the served figures
	Nodes         int       `json:"nodes,omitempty"`  // owner rows
	Contracts     int       `json:"contracts,omitempty"`
	ContractsMet  int       `json:"contracts_met,omitempty"`
	Verdict       string    `json:"verdict,omitempty"` // contract rows
	Reasons       string    `json:"reasons,omitempty"`
}

// Node is a node the report covers.
type Node struct{ ID, Owner string }

// Build measures nodes and judges cs over [from, to) at now: one row per
// node, per owner (of nodes and contracts) and per contract, in that
// order, each sorted by ID.
func Build(from, to, now time.Time, nodes []Node, cs []contracts.Contract, m contracts.Measurer, sv contracts.Served) ([]Row, error) {
	end := to
	if now.Before(end) {
		end = now
	}
	owners := map[string]*Row{}
	owner := func(id string) *Row {
		r, ok := owners[id]
		if !ok {
			r = &Row{Kind: KindOwner, ID: id, From: from.UTC(), To: to.UTC()}
			owners[id] = r
		}
		return r
	}
	type hitSum struct{ bytes, hit float64 }
	ownerHits := map[string]*hitSum{}
	var rows []Row
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].ID < nodes[j].ID })
	for _, n := range nodes {
		r := Row{Kind: KindNode, ID: n.ID, Owner: n.Owner, Node: n.ID, From: from.UTC(), To: to.UTC()}
		if from.Before(end) {
			meas, err := m.Measure(n.ID, from, end)
			if err != nil {
				return nil, fmt.Errorf("report: node %s: %w", n.ID, err)
			}
			sf, err := sv.ServedBytes(n.ID, from, end)
			if err != nil {
				return nil, fmt.Errorf("report: node %s: %w", n.ID, err)
			}
			r.ObservedHours, r.OnlineHours = round3(meas.Observed.Hours()), round3(meas.Online.Hours())
			r.BytesServed, r.HitRatio, r.Source = sf.Bytes, round3(sf.HitRatio), sf.Source
		}
		rows = append(rows, r)
		if n.Owner != "" {
			o := owner(n.Owner)
			o.Nodes++
			o.ObservedHours = round3(o.ObservedHours + r.ObservedHours)
			o.OnlineHours = round3(o.OnlineHours + r.OnlineHours)
			o.BytesServed += r.BytesServed
			o.Source = r.Source
			hs := ownerHits[n.Owner]
			if hs == nil {
				hs = &hitSum{}
				ownerHits[n.Owner] = hs
			}
			hs.bytes += float64(r.BytesServed)
			hs.hit += float64(r.BytesServed) * r.HitRatio
		}
	}
	var crows []Row
	for _, c := range cs {
		ev, err := contracts.Evaluate(c, from, to, now, m, sv)
		if err != nil {
			return nil, fmt.Errorf("report: contract %s: %w", c.ID, err)
		}
		if ev.Verdict == contracts.VerdictOutside {
			continue
		}
		crows = append(crows, Row{Kind: KindContract, ID: c.ID, Owner: ev.Owner, Node: ev.Node, From: ev.From, To: ev.To,
			ObservedHours: round3(ev.Observed), OnlineHours: round3(ev.Online), BytesServed: ev.Served.Bytes,
			HitRatio: round3(ev.Served.HitRatio), Source: ev.Served.Source, Verdict: ev.Verdict, Reasons: strings.Join(ev.Reasons, "; ")})
		o := owner(ev.Owner)
		o.Contracts++
		if ev.Verdict == contracts.VerdictMet {
			o.ContractsMet++
		}
	}
	ids := make([]string, 0, len(owners))
	for id := range owners {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		o := owners[id]
		if hs := ownerHits[id]; hs != nil && hs.bytes > 0 {
			o.HitRatio = round3(hs.hit / hs.bytes)
		}
		rows = append(rows, *o)
	}
	sort.Slice(crows, func(i, j int) bool { return crows[i].ID < crows[j].ID })
	return append(rows, crows...), nil
}

func round3(f float64) float64 {
	v, _ := strconv.ParseFloat(strconv.FormatFloat(f, 'f', 3, 64), 64)
	return v
}

// Header is the CSV header.
var Header = []string{"kind", "id", "owner", "node", "from", "to", "observed_hours", "online_hours", "availability_pct",
	"bytes_served", "hit_ratio", "source", "nodes", "contracts", "contracts_met", "verdict", "reasons"}

// WriteCSV writes rows as CSV (RFC 4180) with Header. Cells that a
// spreadsheet would run as a formula are prefixed with a quote: reasons
// quote nothing a node chose today, but IDs and text are not the place to
// trust that.
func WriteCSV(w io.Writer, rows []Row) error {
	cw := csv.NewWriter(w)
	if err := cw.Write(Header); err != nil {
		return err
	}
	f := func(v float64) string { return strconv.FormatFloat(v, 'f', 3, 64) }
	for _, r := range rows {
		pct := ""
		if r.ObservedHours > 0 {
			pct = f(100 * r.OnlineHours / r.ObservedHours)
		}
		rec := []string{r.Kind, r.ID, r.Owner, r.Node, r.From.UTC().Format(time.RFC3339), r.To.UTC().Format(time.RFC3339),
			f(r.ObservedHours), f(r.OnlineHours), pct, strconv.FormatUint(r.BytesServed, 10), f(r.HitRatio), r.Source,
			strconv.Itoa(r.Nodes), strconv.Itoa(r.Contracts), strconv.Itoa(r.ContractsMet), r.Verdict, r.Reasons}
		for i, c := range rec {
			if c != "" && strings.ContainsRune("=+-@\t\r", rune(c[0])) {
				rec[i] = "'" + c
			}
		}
		if err := cw.Write(rec); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

// MaxPeriod bounds a report's window.
const MaxPeriod = 400 * 24 * time.Hour

// ParsePeriod parses from and to (RFC 3339, or a date YYYY-MM-DD meaning
// its UTC midnight).
func ParsePeriod(from, to string) (time.Time, time.Time, error) {
	parse := func(name, s string) (time.Time, error) {
		if t, err := time.Parse(time.RFC3339, s); err == nil {
			return t.UTC(), nil
		}
		t, err := time.Parse(time.DateOnly, s)
		if err != nil {
			return time.Time{}, fmt.Errorf("%s %q is neither RFC 3339 nor YYYY-MM-DD", name, clip(s))
		}
		return t, nil
	}
	f, err := parse("from", from)
	if err != nil {
		return f, f, err
	}
	t, err := parse("to", to)
	if err != nil {
		return f, t, err
	}
	if !f.Before(t) || t.Sub(f) > MaxPeriod {
		return f, t, fmt.Errorf("from must be before to, and the period at most %d days", int(MaxPeriod.Hours()/24))
	}
	return f, t, nil
}

func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}
