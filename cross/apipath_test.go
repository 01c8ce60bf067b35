package cross

import (
	"strings"
	"testing"
)

func TestAPIPathsRule(t *testing.T) {
	for _, tc := range []struct {
		lit string
		bad bool
	}{
		{`"/v1/route"`, true},
		{`"/v1/"`, true},
		{`"/v1"`, true},
		{`"/v1/route?path=/x"`, true},
		{"`/v1/nodes`", true},
		{`"http://127.0.0.1:1/v1/status"`, true},
		{`"/healthz"`, true},
		{`"/metrics"`, true},
		{`"blockcast/v1/"`, false},
		{`"/v10"`, false},
		{`"/video/v1/a.mp4"`, false},
		{`"/metrics.json"`, false},
	} {
		fset, f := parseSrc(t, "package p\nvar x = "+tc.lit+"\n")
		if got := CheckAPIPaths(fset, f); (len(got) > 0) != tc.bad {
			t.Errorf("%s: findings %v, want bad=%v", tc.lit, got, tc.bad)
		}
	}
}

// TestAPIPathsInProtocol fails when a non-test source outside shared/protocol
// spells an API path instead of using the constant.
func TestAPIPathsInProtocol(t *testing.T) {
	found, err := ScanSources(sourceRoot, append(sourceTrees, "test", "cross"), []string{"shared/protocol", "cross/sourcecheck.go"}, CheckAPIPaths)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range found {
		if strings.HasPrefix(f.Pos.Filename, "shared/protocol") {
			continue
		}
		t.Error(f)
	}
}
