// Package coverage reads an Apache Traffic Control coverage-zone file (the
// Traffic Router "Coverage Zone Map"), the operator's statement of which
// client networks each cache group serves:
//
//	{"coverageZones": {
//	    "<cache group>": {
//	      "network":  ["192.0.2.0/24", ...],
//	      "network6": ["2001:db8::/32", ...],
//	      "coordinates": {"latitude": 1.1, "longitude": 2.2},
//	      "nodes": ["<relay node ID>", ...]
//	    }},
//	 "revision": "...", "customerName": "..."}
//
// Members other than these are ignored, so a file made for Traffic Router
// works as it is. A cache group names the relay node(s) it covers with the
// "nodes" member, our extension; without it, a group whose name is itself
// a node ID (a base58 ed25519 public key) covers that node, and any other
// group covers no node (it may be there for Traffic Router). An explicit
// "nodes" wins over the name.
//
// Prefixes follow the same rules as everywhere relay coverage comes from:
// CIDR notation, no host bits set, no IPv4-mapped IPv6; IPv4 only in
// "network", IPv6 only in "network6". One bad entry refuses the whole file,
// with an error naming the group and the entry, so that a typo is noticed
// rather than half applied.
package coverage

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"sort"
	"strings"

	"github.com/blockcast/beacon/cloud/registry"
	"github.com/blockcast/beacon/shared/identity"
)

// Bounds on a file: it is read whole into memory and its prefixes go into
// the router.
const (
	MaxFileSize      = 32 << 20
	MaxGroupNameLen  = 256
	MaxNodesPerGroup = 1024
)

// ErrInvalid is wrapped by every error about a file's content.
var ErrInvalid = errors.New("invalid coverage-zone file")

// File is a parsed coverage-zone file.
type File struct {
	Revision     string
	CustomerName string
	Groups       []Group // sorted by name
}

// Group is one cache group.
type Group struct {
	Name     string
	Nodes    []string       // relay node IDs the group covers (see the package doc)
	Network  []netip.Prefix // IPv4, in file order
	Network6 []netip.Prefix // IPv6, in file order
}

// Assignment is a prefix the file gives a node, with the group it comes from.
type Assignment struct {
	Prefix netip.Prefix
	Group  string
}

// Load reads and parses the file at path.
func Load(path string) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("coverage: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("coverage: reading %s: %w", path, err)
	}
	cz, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cz, nil
}

type rawFile struct {
	CoverageZones json.RawMessage `json:"coverageZones"`
	Revision      json.RawMessage `json:"revision"`
	CustomerName  json.RawMessage `json:"customerName"`
}

type rawGroup struct {
	Network  []json.RawMessage `json:"network"`
	Network6 []json.RawMessage `json:"network6"`
	Nodes    *[]string         `json:"nodes"`
}

// Parse parses the content of a coverage-zone file.
func Parse(data []byte) (*File, error) {
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrInvalid, MaxFileSize)
	}
	if t := bytes.TrimLeft(data, " \t\r\n"); len(t) == 0 || t[0] != '{' {
		return nil, fmt.Errorf("%w: not a JSON object", ErrInvalid)
	}
	var raw rawFile
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("%w: not a JSON object: %v", ErrInvalid, err)
	}
	if len(raw.CoverageZones) == 0 || string(raw.CoverageZones) == "null" {
		return nil, fmt.Errorf("%w: no \"coverageZones\" object", ErrInvalid)
	}
	out := &File{}
	var err error
	if out.Revision, err = scalarText(raw.Revision); err != nil {
		return nil, fmt.Errorf("%w: revision: %v", ErrInvalid, err)
	}
	if out.CustomerName, err = scalarText(raw.CustomerName); err != nil {
		return nil, fmt.Errorf("%w: customerName: %v", ErrInvalid, err)
	}
	// Walk the groups by token so that a group defined twice is an error
	// rather than the first definition silently lost.
	dec := json.NewDecoder(bytes.NewReader(raw.CoverageZones))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, fmt.Errorf("%w: \"coverageZones\" is not an object", ErrInvalid)
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("%w: coverageZones: %v", ErrInvalid, err)
		}
		name := tok.(string) // object keys are strings
		if seen[name] {
			return nil, fmt.Errorf("%w: group %q defined twice", ErrInvalid, clip(name))
		}
		seen[name] = true
		var rg rawGroup
		if err := dec.Decode(&rg); err != nil {
			return nil, fmt.Errorf("%w: group %q: %v", ErrInvalid, clip(name), err)
		}
		g, err := parseGroup(name, rg)
		if err != nil {
			return nil, fmt.Errorf("%w: group %q: %v", ErrInvalid, clip(name), err)
		}
		out.Groups = append(out.Groups, g)
	}
	sort.Slice(out.Groups, func(i, j int) bool { return out.Groups[i].Name < out.Groups[j].Name })
	return out, nil
}

func parseGroup(name string, rg rawGroup) (Group, error) {
	g := Group{Name: name}
	if name == "" || len(name) > MaxGroupNameLen {
		return g, fmt.Errorf("name must be 1 to %d bytes", MaxGroupNameLen)
	}
	var err error
	if g.Network, err = parseNetworks("network", rg.Network, false); err != nil {
		return g, err
	}
	if g.Network6, err = parseNetworks("network6", rg.Network6, true); err != nil {
		return g, err
	}
	switch {
	case rg.Nodes != nil:
		if len(*rg.Nodes) > MaxNodesPerGroup {
			return g, fmt.Errorf("nodes: more than %d", MaxNodesPerGroup)
		}
		dup := map[string]bool{}
		for i, id := range *rg.Nodes {
			if k, err := identity.ParsePublicKey(id); err != nil || k.String() != id {
				return g, fmt.Errorf("nodes[%d] %q: not a node ID (a base58 public key)", i, clip(id))
			}
			if dup[id] {
				return g, fmt.Errorf("nodes[%d] %q listed twice", i, clip(id))
			}
			dup[id] = true
			g.Nodes = append(g.Nodes, id)
		}
	default:
		if k, err := identity.ParsePublicKey(name); err == nil && k.String() == name {
			g.Nodes = []string{name}
		}
	}
	return g, nil
}

func parseNetworks(member string, in []json.RawMessage, v6 bool) ([]netip.Prefix, error) {
	var out []netip.Prefix
	seen := map[netip.Prefix]bool{}
	for i, r := range in {
		var s string
		if err := json.Unmarshal(r, &s); err != nil {
			return nil, fmt.Errorf("%s[%d] %s: not a string", member, i, clip(string(r)))
		}
		p, err := registry.ParseCIDR(s)
		if err != nil {
			return nil, fmt.Errorf("%s[%d]: %v", member, i, err)
		}
		if p.Addr().Is6() != v6 {
			want := "IPv4 prefixes only (IPv6 go in \"network6\")"
			if v6 {
				want = "IPv6 prefixes only (IPv4 go in \"network\")"
			}
			return nil, fmt.Errorf("%s[%d] %q: %s", member, i, s, want)
		}
		if seen[p] {
			return nil, fmt.Errorf("%s[%d] %s listed twice", member, i, p)
		}
		seen[p] = true
		out = append(out, p)
	}
	return out, nil
}

// scalarText accepts a string or number (Traffic Ops writes the revision
// as either) and returns its text.
func scalarText(r json.RawMessage) (string, error) {
	if len(r) == 0 || string(r) == "null" {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(r, &s); err == nil {
		return s, nil
	}
	var n json.Number
	if err := json.Unmarshal(r, &n); err == nil {
		return n.String(), nil
	}
	return "", errors.New("want a string")
}

// Assignments maps each node the file names to the prefixes it is given,
// IPv4 before IPv6, each prefix once (with the first group, by name, that
// gives it).
func (f *File) Assignments() map[string][]Assignment {
	out := map[string][]Assignment{}
	seen := map[string]map[netip.Prefix]bool{}
	for _, g := range f.Groups {
		for _, id := range g.Nodes {
			if seen[id] == nil {
				seen[id] = map[netip.Prefix]bool{}
			}
			for _, list := range [][]netip.Prefix{g.Network, g.Network6} {
				for _, p := range list {
					if !seen[id][p] {
						seen[id][p] = true
						out[id] = append(out[id], Assignment{Prefix: p, Group: g.Name})
					}
				}
			}
		}
	}
	return out
}

// Unassigned lists the groups that name no node.
func (f *File) Unassigned() []string {
	var out []string
	for _, g := range f.Groups {
		if len(g.Nodes) == 0 {
			out = append(out, g.Name)
		}
	}
	return out
}

// Prefixes is the number of prefixes in the file.
func (f *File) Prefixes() int {
	n := 0
	for _, g := range f.Groups {
		n += len(g.Network) + len(g.Network6)
	}
	return n
}

// clip shortens hostile input before it goes into an error message.
func clip(s string) string {
	const max = 80
	if len(s) > max {
		s = s[:max] + "…"
	}
	return strings.ToValidUTF8(s, "?")
}
