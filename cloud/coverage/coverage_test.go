package coverage

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata golden files")

// dump renders a parse result (or its error) as the golden text.
func dump(f *File, err error) string {
	if err != nil {
		return "error: " + err.Error() + "\n"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "revision %q customer %q groups %d prefixes %d\n", f.Revision, f.CustomerName, len(f.Groups), f.Prefixes())
	for _, g := range f.Groups {
		fmt.Fprintf(&b, "group %q nodes %v network %v network6 %v\n", g.Name, g.Nodes, g.Network, g.Network6)
	}
	as := f.Assignments()
	var ids []string
	for id := range as {
		ids = append(ids, id)
	}
	sortStrings(ids)
	for _, id := range ids {
		fmt.Fprintf(&b, "node %s:", id)
		for _, a := range as[id] {
			fmt.Fprintf(&b, " %s(%s)", a.Prefix, a.Group)
		}
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "unassigned %v\n", f.Unassigned())
	return b.String()
}

func sortStrings(s []string) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}

// TestGolden parses every testdata/*.json and compares with its .golden:
// the accepted files' groups and node assignments, the refused files'
// errors (which must name the group and the entry).
func TestGolden(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.json")
	if len(files) < 10 {
		t.Fatalf("only %d testdata files", len(files))
	}
	for _, in := range files {
		t.Run(filepath.Base(in), func(t *testing.T) {
			f, err := Load(in)
			if strings.HasPrefix(filepath.Base(in), "bad-") != (err != nil) {
				t.Fatalf("Load: %v", err)
			}
			if err != nil && !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			got := strings.ReplaceAll(dump(f, err), in, "FILE")
			golden := strings.TrimSuffix(in, ".json") + ".golden"
			if *update {
				os.WriteFile(golden, []byte(got), 0o644)
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if got != string(want) {
				t.Errorf("got\n%s\nwant\n%s", got, want)
			}
		})
	}
}

func TestLoadBounds(t *testing.T) {
	dir := t.TempDir()
	if _, err := Load(filepath.Join(dir, "missing.json")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	big := filepath.Join(dir, "big.json")
	pad := strings.Repeat(" ", MaxFileSize)
	os.WriteFile(big, []byte(`{"coverageZones":{}}`+pad), 0o644)
	if _, err := Load(big); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "larger") {
		t.Errorf("oversized file: %v", err)
	}
	long := `{"coverageZones":{"` + strings.Repeat("g", MaxGroupNameLen+1) + `":{}}}`
	if _, err := Parse([]byte(long)); !errors.Is(err, ErrInvalid) {
		t.Errorf("long group name: %v", err)
	}
}

// encode writes a File back in the coverage-zone format, with every group's
// nodes explicit.
func encode(f *File) []byte {
	type group struct {
		Network  []string `json:"network"`
		Network6 []string `json:"network6"`
		Nodes    []string `json:"nodes"`
	}
	zones := map[string]group{}
	for _, g := range f.Groups {
		gr := group{Network: []string{}, Network6: []string{}, Nodes: append([]string{}, g.Nodes...)}
		for _, p := range g.Network {
			gr.Network = append(gr.Network, p.String())
		}
		for _, p := range g.Network6 {
			gr.Network6 = append(gr.Network6, p.String())
		}
		zones[g.Name] = gr
	}
	b, _ := json.Marshal(map[string]any{"coverageZones": zones, "revision": f.Revision, "customerName": f.CustomerName})
	return b
}

func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.json")
	for _, in := range files {
		b, _ := os.ReadFile(in)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cz, err := Parse(data)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		for _, g := range cz.Groups {
			for _, p := range append(append([]netip.Prefix{}, g.Network...), g.Network6...) {
				if p != p.Masked() || p.Addr().Is4In6() || p.Addr().Zone() != "" {
					t.Fatalf("group %q: accepted non-canonical %s", g.Name, p)
				}
			}
			for _, p := range g.Network {
				if !p.Addr().Is4() {
					t.Fatalf("IPv6 %s in network", p)
				}
			}
		}
		// What is accepted survives a round trip unchanged.
		again, err := Parse(encode(cz))
		if err != nil {
			t.Fatalf("re-parse of accepted file: %v", err)
		}
		if !reflect.DeepEqual(dump(cz, nil), dump(again, nil)) {
			t.Fatalf("round trip changed\n%s\ninto\n%s", dump(cz, nil), dump(again, nil))
		}
	})
}

// BenchmarkParse parses a large operator file: 10,000 cache groups of 10
// IPv4 and 2 IPv6 prefixes, each naming one relay.
func BenchmarkParse(b *testing.B) {
	var sb strings.Builder
	sb.WriteString(`{"coverageZones":{`)
	for g := 0; g < 10000; g++ {
		if g > 0 {
			sb.WriteString(",")
		}
		fmt.Fprintf(&sb, `"pop-%d":{"nodes":["BJA8XTvf1QLGv5FXKVSDYGjxxpzcm5F9dWf1BLRdwR8h"],"coordinates":{"latitude":1,"longitude":2},"network":[`, g)
		for i := 0; i < 10; i++ {
			if i > 0 {
				sb.WriteString(",")
			}
			fmt.Fprintf(&sb, `"%d.%d.%d.0/24"`, 10+g>>12, g>>4&0xff, (g&0xf)<<4|i)
		}
		fmt.Fprintf(&sb, `],"network6":["2001:db8:%x::/48","2001:db8:%x:1::/64"]}`, g, g)
	}
	sb.WriteString(`},"revision":"bench"}`)
	data := []byte(sb.String())
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		f, err := Parse(data)
		if err != nil {
			b.Fatal(err)
		}
		if f.Prefixes() != 120000 {
			b.Fatalf("%d prefixes", f.Prefixes())
		}
	}
}
