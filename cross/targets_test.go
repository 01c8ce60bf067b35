package cross

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestParseTargets(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []Target
		err  string // substring of the error; "" for success
	}{
		{
			name: "arm and mips variants, comments, blank lines",
			in: "# c\n\nmipsle mipsle softfloat mipsel_24kc mipsel qemu-mipsel-static ipk,apk # trailing\n" +
				"armv6 arm 6 arm_arm1176jzf-s_vfp armhf qemu-arm-static ipk,apk,deb\n" +
				"amd64 amd64 - x86_64 amd64 - deb\n",
			want: []Target{
				{Name: "mipsle", GOARCH: "mipsle", GOMIPS: "softfloat", OpenWrtArch: "mipsel_24kc", DebianArch: "mipsel", QEMU: "qemu-mipsel-static", Formats: []string{"ipk", "apk"}},
				{Name: "armv6", GOARCH: "arm", GOARM: "6", OpenWrtArch: "arm_arm1176jzf-s_vfp", DebianArch: "armhf", QEMU: "qemu-arm-static", Formats: []string{"ipk", "apk", "deb"}},
				{Name: "amd64", GOARCH: "amd64", OpenWrtArch: "x86_64", DebianArch: "amd64", Formats: []string{"deb"}},
			},
		},
		{name: "empty", in: "# nothing\n", err: "no targets"},
		{name: "short line", in: "mipsle mipsle softfloat mipsel_24kc mipsel ipk\n", err: "want 7 columns"},
		{name: "duplicate", in: "a amd64 - x86_64 amd64 - ipk\na amd64 - x86_64 amd64 - ipk\n", err: "duplicate"},
		{name: "unknown goarch", in: "a sparc - x amd64 - ipk\n", err: "unknown GOARCH"},
		{name: "arm without GOARM", in: "a arm - x armhf - ipk\n", err: "GOARM"},
		{name: "arm v8 is not a GOARM", in: "a arm 8 x armhf - ipk\n", err: "GOARM"},
		{name: "mips without GOMIPS", in: "a mips - x mips - ipk\n", err: "GOMIPS"},
		{name: "variant on amd64", in: "a amd64 7 x amd64 - ipk\n", err: "no variant"},
		{name: "missing openwrt arch", in: "a amd64 - - amd64 - ipk\n", err: "both required"},
		{name: "bad format", in: "a amd64 - x amd64 - rpm\n", err: "unknown package format"},
		{name: "format twice", in: "a amd64 - x amd64 - ipk,ipk\n", err: "twice"},
		{name: "bad qemu", in: "a amd64 - x amd64 bochs ipk\n", err: "qemu"},
		{name: "bad name", in: "A/b amd64 - x amd64 - ipk\n", err: "bad name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseTargets(strings.NewReader(tt.in))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) || !errors.Is(err, ErrBadTargets) {
					t.Fatalf("err %v, want ErrBadTargets containing %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %d targets, want %d", len(got), len(tt.want))
			}
			for i := range got {
				g, w := got[i], tt.want[i]
				if g.Name != w.Name || g.GOARCH != w.GOARCH || g.GOARM != w.GOARM || g.GOMIPS != w.GOMIPS ||
					g.OpenWrtArch != w.OpenWrtArch || g.DebianArch != w.DebianArch || g.QEMU != w.QEMU || !slices.Equal(g.Formats, w.Formats) {
					t.Errorf("target %d = %+v, want %+v", i, g, w)
				}
			}
		})
	}
}

// TestShippedTargets pins the list to what the issue asks for: each
// platform with its OpenWrt and Debian labels, and the packages made.
func TestShippedTargets(t *testing.T) {
	ts, err := Targets()
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		name, goarch, variant, openwrt, debian, formats string
	}{
		{"mipsle", "mipsle", "softfloat", "mipsel_24kc", "mipsel", "ipk,apk"},
		{"mips", "mips", "softfloat", "mips_24kc", "mips", "ipk,apk"},
		{"armv5", "arm", "5", "arm_arm926ej-s", "armel", "ipk,apk"},
		{"armv6", "arm", "6", "arm_arm1176jzf-s_vfp", "armhf", "ipk,apk,deb"},
		{"armv7", "arm", "7", "arm_cortex-a7_neon-vfpv4", "armhf", "ipk,apk"},
		{"arm64", "arm64", "", "aarch64_cortex-a53", "arm64", "ipk,apk,deb"},
		{"amd64", "amd64", "", "x86_64", "amd64", "ipk,apk,deb"},
	}
	if len(ts) != len(want) {
		t.Fatalf("%d targets, want %d", len(ts), len(want))
	}
	for i, w := range want {
		g := ts[i]
		if g.Name != w.name || g.GOARCH != w.goarch || g.GOARM+g.GOMIPS != w.variant || g.OpenWrtArch != w.openwrt ||
			g.DebianArch != w.debian || strings.Join(g.Formats, ",") != w.formats {
			t.Errorf("target %d = %+v, want %+v", i, g, w)
		}
	}
	for _, name := range []string{"mipsle", "armv6", "arm64"} {
		if tg, err := Lookup(name); err != nil || tg.QEMU == "" {
			t.Errorf("%s: %v %+v: the qemu tests need a qemu binary for it", name, err, tg)
		}
	}
	if _, err := Lookup("sparc"); err == nil {
		t.Error("Lookup(sparc) found a target")
	}
}

func TestEnv(t *testing.T) {
	tests := []struct {
		target string
		want   []string
	}{
		{"mipsle", []string{"GOOS=linux", "GOARCH=mipsle", "CGO_ENABLED=0", "GOMIPS=softfloat"}},
		{"armv6", []string{"GOOS=linux", "GOARCH=arm", "CGO_ENABLED=0", "GOARM=6"}},
		{"arm64", []string{"GOOS=linux", "GOARCH=arm64", "CGO_ENABLED=0"}},
	}
	for _, tt := range tests {
		tg, err := Lookup(tt.target)
		if err != nil {
			t.Fatal(err)
		}
		if got := tg.Env(); !slices.Equal(got, tt.want) {
			t.Errorf("%s: Env() = %v, want %v", tt.target, got, tt.want)
		}
	}
}

func TestPackageVersion(t *testing.T) {
	tests := []struct{ in, want string }{
		{"v1.2.3", "1.2.3"},
		{"1.2.3", "1.2.3"},
		{"v1.2.3-4-gdeadbee", "1.2.3.4"},
		{"v1.2.3-4-gdeadbee-dirty", "1.2.3.4"},
		{"v1.2.3-dirty", "1.2.3"},
		{"v2.0", "2.0"},
		{"deadbee", "0.0.0"},
		{"deadbee-dirty", "0.0.0"},
		{"dev", "0.0.0"},
		{"", "0.0.0"},
		{"v1.2.3-rc1", "0.0.0"}, // not orderable the same way by opkg, apk and dpkg
		{"v1.2.3; rm -rf /", "0.0.0"},
	}
	for _, tt := range tests {
		if got := PackageVersion(tt.in); got != tt.want {
			t.Errorf("PackageVersion(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func FuzzParseTargets(f *testing.F) {
	f.Add(targetsTxt)
	f.Add("a arm 6 x armhf qemu-arm-static ipk,apk\n")
	f.Add("a mips softfloat x - - ipk")
	f.Fuzz(func(t *testing.T, in string) {
		ts, err := ParseTargets(strings.NewReader(in))
		if err != nil {
			if !errors.Is(err, ErrBadTargets) {
				t.Fatalf("error %v does not wrap ErrBadTargets", err)
			}
			return
		}
		for _, tg := range ts {
			if tg.Name == "" || tg.OpenWrtArch == "" || tg.DebianArch == "" || len(tg.Formats) == 0 {
				t.Fatalf("accepted an incomplete target %+v", tg)
			}
			if (tg.GOARCH == "arm") != (tg.GOARM != "") {
				t.Fatalf("GOARM %q for GOARCH %s", tg.GOARM, tg.GOARCH)
			}
		}
	})
}

func FuzzPackageVersion(f *testing.F) {
	for _, s := range []string{"v1.2.3", "v1.2.3-4-gabc", "dev", "v1.2.3.4.5"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		v := PackageVersion(in)
		if !pkgVersionRE.MatchString(v) {
			t.Fatalf("PackageVersion(%q) = %q: not dotted numbers", in, v)
		}
	})
}
