package cross

import (
	"context"
	"slices"
	"testing"
	"time"
)

func TestCheckLayers(t *testing.T) {
	const (
		fw     = Module + "/firmware/agent"
		cl     = Module + "/cloud/broker"
		sh     = Module + "/shared/ctrlmsg"
		solana = "github.com/gagliardetto/solana-go"
	)
	tests := []struct {
		name string
		pkgs []ListedPackage
		want []string // "package dep"
	}{
		{"clean", []ListedPackage{
			{ImportPath: fw, Imports: []string{sh}, Deps: []string{sh, "fmt"}},
			{ImportPath: cl, Imports: []string{sh}, Deps: []string{sh, solana}},
			{ImportPath: sh, Deps: []string{"fmt"}},
		}, nil},
		{"firmware imports cloud", []ListedPackage{
			{ImportPath: fw, Imports: []string{cl}, Deps: []string{cl}},
		}, []string{fw + " " + cl}},
		{"cloud imports firmware through shared", []ListedPackage{
			{ImportPath: cl, Imports: []string{sh}, Deps: []string{sh, fw}},
			{ImportPath: sh, Imports: []string{fw}, Deps: []string{fw}},
		}, []string{cl + " " + fw, sh + " " + fw}},
		{"shared imports cloud", []ListedPackage{
			{ImportPath: sh, Imports: []string{cl}, Deps: []string{cl}},
		}, []string{sh + " " + cl}},
		{"a firmware test imports cloud", []ListedPackage{
			{ImportPath: fw + " [" + fw + ".test]", ForTest: fw, Imports: []string{cl}, Deps: []string{cl}},
			{ImportPath: fw + "_test [" + fw + ".test]", ForTest: fw, Deps: []string{cl + " [" + fw + ".test]"}},
		}, []string{fw + " [" + fw + ".test] " + cl, fw + "_test [" + fw + ".test] " + cl}},
		{"a firmware package links solana-go", []ListedPackage{
			{ImportPath: Module + "/firmware/castclient", Deps: []string{solana + "/rpc"}},
		}, []string{Module + "/firmware/castclient " + solana + "/rpc"}},
		{"a firmware test may use miekg/dns", []ListedPackage{
			{ImportPath: Module + "/firmware/driad [" + Module + "/firmware/driad.test]", ForTest: Module + "/firmware/driad", Deps: []string{"github.com/miekg/dns"}},
		}, nil},
		{"cloud may link solana-go", []ListedPackage{
			{ImportPath: cl, Deps: []string{solana, "go.uber.org/zap"}},
		}, nil},
		{"cloudy is not cloud", []ListedPackage{
			{ImportPath: fw, Deps: []string{Module + "/cloudy"}},
		}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, v := range CheckLayers(tt.pkgs, LayerRules) {
				got = append(got, v.Package+" "+v.Dep)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("violations %q, want %q", got, tt.want)
			}
		})
	}
	// The failure names the import to remove.
	v := CheckLayers([]ListedPackage{
		{ImportPath: cl, Imports: []string{sh}, Deps: []string{sh, fw}},
		{ImportPath: sh, Imports: []string{fw}, Deps: []string{fw}},
	}, LayerRules)
	if got, want := v[0].String(), "cloud never imports firmware: "+cl+" → "+sh+" → "+fw; got != want {
		t.Errorf("message %q, want %q", got, want)
	}
}

// TestLayering is the dependency guard for the whole tree, as tailscale's
// deptest: every package and test build of the module, for the host and
// for the smallest router (build tags choose different files).
func TestLayering(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, name := range []string{"", "mipsle"} {
		var env []string
		if name != "" {
			tg, err := Lookup(name)
			if err != nil {
				t.Fatal(err)
			}
			env = tg.Env()
		}
		pkgs, err := ListPackages(ctx, root(t), env, "./...")
		if err != nil {
			t.Fatal(err)
		}
		// The guard must see the tree it guards: a pattern that matched
		// nothing would pass every rule.
		seen := map[string]bool{}
		for _, p := range pkgs {
			seen[p.ImportPath] = true
		}
		for _, must := range []string{"/firmware/cmd/beacon", "/cloud/cmd/castd", "/shared/identity", "/firmware/agent [" + Module + "/firmware/agent.test]"} {
			if !seen[Module+must] {
				t.Fatalf("%s: go list did not list %s", name, Module+must)
			}
		}
		for _, v := range CheckLayers(pkgs, LayerRules) {
			t.Errorf("%s: %s", name, v)
		}
	}
}
