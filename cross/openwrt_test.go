package cross

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
)

// entry is one member of a tar archive.
type entry struct {
	hdr  *tar.Header
	data []byte
}

// readTar reads every member of an (uncompressed) tar stream, in order.
func readTar(t *testing.T, r io.Reader) ([]string, map[string]entry) {
	t.Helper()
	tr := tar.NewReader(r)
	var names []string
	ents := map[string]entry{}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("tar: %v", err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if _, dup := ents[h.Name]; dup {
			t.Errorf("tar member %s twice", h.Name)
		}
		names = append(names, h.Name)
		ents[h.Name] = entry{hdr: h, data: b}
	}
	return names, ents
}

func readTarGz(t *testing.T, b []byte) ([]string, map[string]entry, int) {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("gzip: %v", err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("gzip: %v", err)
	}
	names, ents := readTar(t, bytes.NewReader(raw))
	return names, ents, len(raw)
}

// controlFields parses a Debian-style control file (as opkg reads it).
func controlFields(t *testing.T, b []byte) map[string]string {
	t.Helper()
	f := map[string]string{}
	last := ""
	for _, line := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		if strings.HasPrefix(line, " ") && last != "" {
			f[last] += "\n" + strings.TrimSpace(line)
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok || k == "" || strings.ContainsAny(k, " \t") {
			t.Fatalf("control line %q is not Field: value", line)
		}
		if _, dup := f[k]; dup {
			t.Errorf("control field %s twice", k)
		}
		f[k] = strings.TrimSpace(v)
		last = k
	}
	return f
}

// feedInstall is one install line of the feed Makefile's
// Package/blockcast-beacon/install.
type feedInstall struct {
	src, dst string
	mode     int64
}

var installRE = regexp.MustCompile(`^\t\$\((INSTALL_BIN|INSTALL_CONF|INSTALL_DATA)\) \$\(CURDIR\)/(files/\S+) \$\(1\)(/\S+)$`)

// feedMakefile reads what the feed package installs from files/, its
// conffiles and its USERID.
func feedMakefile(t *testing.T) (installs []feedInstall, conffiles []string, userid string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root(t), feedDir, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	modes := map[string]int64{"INSTALL_BIN": 0o755, "INSTALL_CONF": 0o600, "INSTALL_DATA": 0o644}
	block := ""
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "define "):
			block = strings.TrimPrefix(line, "define ")
			continue
		case line == "endef":
			block = ""
			continue
		}
		switch block {
		case "Package/blockcast-beacon":
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), "USERID:="); ok {
				userid = v
			}
		case "Package/blockcast-beacon/conffiles":
			conffiles = append(conffiles, strings.TrimSpace(line))
		case "Package/blockcast-beacon/install":
			if m := installRE.FindStringSubmatch(line); m != nil {
				installs = append(installs, feedInstall{src: m[2], dst: m[3], mode: modes[m[1]]})
			}
		}
	}
	if len(installs) != 5 || len(conffiles) != 2 || userid == "" {
		t.Fatalf("feed Makefile: installs %v conffiles %v userid %q", installs, conffiles, userid)
	}
	return installs, conffiles, userid
}

const testCastURL = "https://cast.example.net"

// TestOpenWrtPackages builds the mipsle .ipk and .apk as `make
// package-openwrt` does and checks them against what opkg and apk-tools v3
// read, against the feed Makefile, and against the flash budget.
func TestOpenWrtPackages(t *testing.T) {
	art := built(t, "mipsle")
	dir := packages(t, "ipk,apk", []string{"mipsle"}, "--cast-url", testCastURL)
	pkgs, err := PackagesFor(&Manifest{Artifacts: []Artifact{art}}, dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(pkgs) != 2 {
		t.Fatalf("packages %+v, want an ipk and an apk", pkgs)
	}
	bin, err := os.ReadFile(art.Binary)
	if err != nil {
		t.Fatal(err)
	}
	installs, conffiles, userid := feedMakefile(t)
	repo := func(rel string) []byte {
		b, err := os.ReadFile(filepath.Join(root(t), feedDir, rel))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	conf := bytes.Replace(repo("files/blockcast.config"), []byte("option cast_url ''"), []byte("option cast_url '"+testCastURL+"'"), 1)
	// What both formats must carry, path -> (mode, content).
	want := map[string]entry{
		"usr/bin/beacon": {hdr: &tar.Header{Mode: 0o755}, data: bin},
		"lib/upgrade/keep.d/blockcast-beacon": {hdr: &tar.Header{Mode: 0o644},
			data: []byte("/etc/blockcast/wallet.json\n")},
	}
	for _, in := range installs {
		data := repo(in.src)
		if in.dst == "/etc/config/blockcast" {
			data = conf
		}
		want[strings.TrimPrefix(in.dst, "/")] = entry{hdr: &tar.Header{Mode: in.mode}, data: data}
	}
	for _, p := range pkgs {
		t.Run(p.Format, func(t *testing.T) {
			if p.Size > FlashBudget.MaxPackage {
				t.Errorf("%s is %d bytes, over the %d-byte budget", filepath.Base(p.Path), p.Size, FlashBudget.MaxPackage)
			}
			t.Logf("%s: %d bytes", filepath.Base(p.Path), p.Size)
			b, err := os.ReadFile(p.Path)
			if err != nil {
				t.Fatal(err)
			}
			var data map[string]entry
			switch p.Format {
			case FormatIPK:
				data = checkIPK(t, b, art, conffiles, userid)
			case FormatAPK:
				data = checkAPK(t, b, art, conffiles, userid)
			}
			for path, w := range want {
				g, ok := data[path]
				if !ok {
					t.Errorf("%s missing", path)
					continue
				}
				if g.hdr.Mode != w.hdr.Mode {
					t.Errorf("%s mode %o, want %o", path, g.hdr.Mode, w.hdr.Mode)
				}
				if !bytes.Equal(g.data, w.data) {
					t.Errorf("%s differs from its source (%d bytes, want %d)", path, len(g.data), len(w.data))
				}
			}
			// What the init script hands procd: lan_iface gets CAP_NET_RAW,
			// a port below 1024 CAP_NET_BIND_SERVICE, and nothing else ever.
			for file, want := range map[string][]string{
				"blockcast.json":          {"CAP_NET_RAW"},
				"blockcast-bind.json":     {"CAP_NET_BIND_SERVICE"},
				"blockcast-raw-bind.json": {"CAP_NET_RAW", "CAP_NET_BIND_SERVICE"},
			} {
				var caps map[string][]string
				if err := json.Unmarshal(data["etc/capabilities/"+file].data, &caps); err != nil {
					t.Errorf("capabilities %s: %v", file, err)
					continue
				}
				for _, set := range []string{"bounding", "effective", "ambient", "permitted", "inheritable"} {
					if !slices.Equal(caps[set], want) {
						t.Errorf("capabilities %s: %s %q, want %q", file, set, caps[set], want)
					}
				}
			}
		})
	}
}

// checkIPK checks the ipk as opkg (and OpenWrt's ipkg-build) see it and
// returns its data files by path (no leading "./").
func checkIPK(t *testing.T, b []byte, art Artifact, conffiles []string, userid string) map[string]entry {
	t.Helper()
	outer, members, _ := readTarGz(t, b)
	if !slices.Equal(outer, []string{"./debian-binary", "./data.tar.gz", "./control.tar.gz"}) {
		t.Fatalf("ipk members %v, want ./debian-binary ./data.tar.gz ./control.tar.gz", outer)
	}
	if got := string(members["./debian-binary"].data); got != "2.0\n" {
		t.Errorf("debian-binary %q", got)
	}
	cnames, control, _ := readTarGz(t, members["./control.tar.gz"].data)
	if !slices.Equal(cnames, []string{"./", "./conffiles", "./control", "./postinst", "./prerm"}) {
		t.Errorf("control.tar.gz members %v", cnames)
	}
	dnames, data, dataSize := readTarGz(t, members["./data.tar.gz"].data)

	f := controlFields(t, control["./control"].data)
	wantFields := map[string]string{
		"Package":      "blockcast-beacon",
		"Version":      PackageVersion(testVersion) + "-r1",
		"Architecture": art.Target.OpenWrtArch,
		"Depends":      "ca-bundle",
		"Require-User": userid,
		"Section":      "net",
		"SourceName":   "blockcast-beacon",
		"License":      "Apache-2.0",
	}
	for k, v := range wantFields {
		if f[k] != v {
			t.Errorf("control %s = %q, want %q", k, f[k], v)
		}
	}
	for _, k := range []string{"Maintainer", "Description", "Source", "URL"} {
		if f[k] == "" {
			t.Errorf("control has no %s", k)
		}
	}
	if f["Installed-Size"] != fmt.Sprint(dataSize) {
		t.Errorf("Installed-Size %s, want %d (ipkg-build: the uncompressed data.tar)", f["Installed-Size"], dataSize)
	}
	// ipkg-build keeps only the conffiles that the package ships; the wallet,
	// made at first start, is in keep.d (checked by the caller).
	if got := string(control["./conffiles"].data); got != conffiles[0]+"\n" || conffiles[0] != "/etc/config/blockcast" {
		t.Errorf("conffiles %q", got)
	}
	for _, s := range []string{"./postinst", "./prerm"} {
		e := control[s]
		if e.hdr.Mode != 0o755 {
			t.Errorf("%s mode %o", s, e.hdr.Mode)
		}
		name := "ipk." + strings.TrimPrefix(s, "./")
		want, err := os.ReadFile(filepath.Join(root(t), "openwrt", "sdkless", name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(e.data, want) {
			t.Errorf("%s is not openwrt/sdkless/%s", s, name)
		}
	}
	// Every path has its directories before it; everything is root's.
	seen := map[string]bool{}
	out := map[string]entry{}
	for _, n := range dnames {
		e := data[n]
		if e.hdr.Uid != 0 || e.hdr.Gid != 0 {
			t.Errorf("%s owned by %d:%d", n, e.hdr.Uid, e.hdr.Gid)
		}
		if !strings.HasPrefix(n, "./") {
			t.Errorf("data member %q does not start with ./", n)
		}
		if e.hdr.Typeflag == tar.TypeDir {
			seen[filepath.Clean(n)] = true
			continue
		}
		if parent := filepath.Dir(filepath.Clean(n)); !seen[parent] {
			t.Errorf("%s comes before its directory %s", n, parent)
		}
		out[strings.TrimPrefix(n, "./")] = e
	}
	return out
}

// checkAPK checks the apk the way apk-tools v3 reads a v2 package
// (src/extract_v2.c): gzip members for the control part (.PKGINFO and
// scripts) and the data part, the data member's SHA-256 as datahash,
// SHA-1 PAX records per file; plus the /lib/apk/packages files OpenWrt
// 25.12's functions.sh and sysupgrade read.
func checkAPK(t *testing.T, b []byte, art Artifact, conffiles []string, userid string) map[string]entry {
	t.Helper()
	// Split the gzip members: a bytes.Reader is an io.ByteReader, so the
	// gzip reader stops exactly at each member's end.
	br := bytes.NewReader(b)
	var parts [][]byte // raw gzip members
	var tars [][]byte  // their contents
	for br.Len() > 0 {
		start := len(b) - br.Len()
		zr, err := gzip.NewReader(br)
		if err != nil {
			t.Fatalf("gzip member %d: %v", len(parts), err)
		}
		zr.Multistream(false)
		raw, err := io.ReadAll(zr)
		if err != nil {
			t.Fatalf("gzip member %d: %v", len(parts), err)
		}
		parts = append(parts, b[start:len(b)-br.Len()])
		tars = append(tars, raw)
	}
	if len(parts) != 2 {
		t.Fatalf("%d gzip members, want 2 (control, data; unsigned)", len(parts))
	}
	// The control member is a tar without its end blocks: read it through
	// the data member, as apk does.
	names, ents := readTar(t, io.MultiReader(bytes.NewReader(tars[0]), bytes.NewReader(tars[1])))
	var control []string
	for _, n := range names {
		if strings.HasPrefix(n, ".") {
			control = append(control, n)
		}
	}
	sort.Strings(control)
	if !slices.Equal(control, []string{".PKGINFO", ".post-install", ".post-upgrade", ".pre-deinstall"}) {
		t.Errorf("control members %v", control)
	}
	if names[0] != ".PKGINFO" {
		t.Errorf("first member %s, want .PKGINFO", names[0])
	}
	info := map[string][]string{}
	for _, line := range strings.Split(string(ents[".PKGINFO"].data), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, " = ")
		if !ok {
			t.Errorf(".PKGINFO line %q is not key = value", line)
			continue
		}
		info[k] = append(info[k], v)
	}
	one := func(k string) string {
		if len(info[k]) != 1 {
			t.Errorf(".PKGINFO %s: %q, want one value", k, info[k])
			return ""
		}
		return info[k][0]
	}
	sum := sha256.Sum256(parts[1])
	wantInfo := map[string]string{
		"pkgname":  "blockcast-beacon",
		"pkgver":   PackageVersion(testVersion) + "-r1",
		"arch":     art.Target.OpenWrtArch,
		"depend":   "ca-bundle",
		"datahash": hex.EncodeToString(sum[:]),
	}
	for k, v := range wantInfo {
		if got := one(k); got != v {
			t.Errorf(".PKGINFO %s = %q, want %q", k, got, v)
		}
	}
	// apk's version grammar: digits and dots, then -r<release>.
	if v := one("pkgver"); !regexp.MustCompile(`^[0-9]+(\.[0-9]+)*-r[0-9]+$`).MatchString(v) {
		t.Errorf("pkgver %q is not an apk version", v)
	}
	for _, s := range []string{".post-install", ".post-upgrade", ".pre-deinstall"} {
		want, err := os.ReadFile(filepath.Join(root(t), "openwrt", "sdkless", "apk"+s))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(ents[s].data, want) {
			t.Errorf("%s is not openwrt/sdkless/apk%s", s, s)
		}
	}

	out := map[string]entry{}
	for _, n := range names {
		e := ents[n]
		if strings.HasPrefix(n, ".") || e.hdr.Typeflag == tar.TypeDir {
			continue
		}
		h := sha1.Sum(e.data)
		if got := e.hdr.PAXRecords["APK-TOOLS.checksum.SHA1"]; got != hex.EncodeToString(h[:]) {
			t.Errorf("%s: APK-TOOLS.checksum.SHA1 %q, want %x", n, got, h)
		}
		out[n] = e
	}
	meta := "lib/apk/packages/blockcast-beacon."
	if got := string(out[meta+"rusers"].data); got != userid+"\n" {
		t.Errorf("rusers %q, want %q", got, userid)
	}
	if got := string(out[meta+"conffiles"].data); got != strings.Join(conffiles, "\n")+"\n" {
		t.Errorf("conffiles %q, want %q", got, conffiles)
	}
	confSum := sha256.Sum256(out["etc/config/blockcast"].data)
	if got, want := string(out[meta+"conffiles_static"].data), fmt.Sprintf("/etc/config/blockcast %x\n", confSum); got != want {
		t.Errorf("conffiles_static %q, want %q", got, want)
	}
	// The .list is every file but the list and conffiles metadata
	// (package-pack.mk writes those after it).
	var files []string
	for n := range out {
		if !strings.HasSuffix(n, ".list") && !strings.HasSuffix(n, ".conffiles") && !strings.HasSuffix(n, ".conffiles_static") {
			files = append(files, "/"+n)
		}
	}
	sort.Strings(files)
	if got := string(out[meta+"list"].data); got != strings.Join(files, "\n")+"\n" {
		t.Errorf("list %q, want %q", got, files)
	}
	if !slices.Contains(files, "/etc/init.d/blockcast") {
		t.Errorf("no init script in %v: default_postinst would enable nothing", files)
	}
	return out
}

// TestPackageScripts runs the maintainer scripts against a stub
// /lib/functions.sh under IPKG_INSTROOT: they must hand the right package
// name to OpenWrt's default_postinst/default_prerm (which enable, start,
// stop and disable the init scripts) and add the user.
func TestPackageScripts(t *testing.T) {
	busybox := need(t, "busybox")
	instroot := t.TempDir()
	if err := os.MkdirAll(filepath.Join(instroot, "lib"), 0o755); err != nil {
		t.Fatal(err)
	}
	stub := `add_group_and_user() { echo "add_group_and_user pkgname=$pkgname root=$root"; }
default_postinst() { echo "default_postinst pkgname=$pkgname args=$*"; }
default_prerm() { echo "default_prerm pkgname=$pkgname args=$*"; }
`
	if err := os.WriteFile(filepath.Join(instroot, "lib", "functions.sh"), []byte(stub), 0o644); err != nil {
		t.Fatal(err)
	}
	info := filepath.Join(instroot, "usr/lib/opkg/info")
	dir := filepath.Join(root(t), "openwrt", "sdkless")
	tests := []struct {
		script   string
		as       string // $0, as opkg runs it
		noScript bool
		want     string
	}{
		{"ipk.postinst", info + "/blockcast-beacon.postinst", false, "default_postinst pkgname= args=" + info + "/blockcast-beacon.postinst configure"},
		{"ipk.postinst", info + "/blockcast-beacon.postinst", true, ""},
		{"ipk.prerm", info + "/blockcast-beacon.prerm", false, "default_prerm pkgname= args=" + info + "/blockcast-beacon.prerm configure"},
		{"apk.post-install", "post-install", false, "add_group_and_user pkgname=blockcast-beacon root=" + instroot + "\ndefault_postinst pkgname=blockcast-beacon args="},
		{"apk.post-upgrade", "post-upgrade", false, "add_group_and_user pkgname=blockcast-beacon root=" + instroot + "\ndefault_postinst pkgname=blockcast-beacon args="},
		{"apk.pre-deinstall", "pre-deinstall", false, "default_prerm pkgname=blockcast-beacon args="},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/noscript=%v", tt.script, tt.noScript), func(t *testing.T) {
			body, err := os.ReadFile(filepath.Join(dir, tt.script))
			if err != nil {
				t.Fatal(err)
			}
			// sh -c BODY $0 args: the script sees $0 as opkg would pass it.
			cmd := exec.Command(busybox, "sh", "-c", string(body), tt.as, "configure")
			cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "IPKG_INSTROOT=" + instroot}
			if tt.noScript {
				cmd.Env = append(cmd.Env, "IPKG_NO_SCRIPT=1")
			}
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			if got := strings.TrimSpace(string(out)); got != tt.want {
				t.Errorf("output %q, want %q", got, tt.want)
			}
		})
	}
}

// TestPkgtoolRejects feeds pkgtool bad input: each must fail with a clear
// message and write nothing.
func TestPkgtoolRejects(t *testing.T) {
	tool := pkgtool(t)
	dir := t.TempDir()
	good := filepath.Join(dir, "good.json")
	bin := filepath.Join(dir, "beacon")
	if err := os.WriteFile(bin, []byte("\x7fELF"), 0o755); err != nil {
		t.Fatal(err)
	}
	tg, err := Lookup("mipsle")
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteManifest(good, &Manifest{Version: "v1.0.0", PackageVersion: "1.0.0",
		Artifacts: []Artifact{{Target: tg, Binary: bin}}}); err != nil {
		t.Fatal(err)
	}
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	badVersion := write("badver.json", `{"version":"x","package_version":"1.0; rm -rf /","artifacts":[]}`)
	relBinary := write("rel.json", `{"version":"x","package_version":"1.0","artifacts":[{"target":{"name":"mipsle","openwrt_arch":"mipsel_24kc","debian_arch":"mipsel","formats":["ipk"]},"binary":"beacon","size":1}]}`)
	unknownField := write("unknown.json", `{"version":"x","package_version":"1.0","artifacts":[],"extra":1}`)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no manifest flag", []string{"--out", dir}, "required"},
		{"missing manifest", []string{"--manifest", filepath.Join(dir, "none.json"), "--out", dir}, "no such file"},
		{"unknown format", []string{"--manifest", good, "--out", dir, "--formats", "rpm"}, `unknown format "rpm"`},
		{"castd URL with a quote", []string{"--manifest", good, "--out", dir, "--cast-url", "https://x'; reboot; '"}, "--cast-url"},
		{"castd URL not http", []string{"--manifest", good, "--out", dir, "--cast-url", "ftp://cast.example.net"}, "--cast-url"},
		{"bad package version", []string{"--manifest", badVersion, "--out", dir}, "not dotted numbers"},
		{"relative binary", []string{"--manifest", relBinary, "--out", dir}, "not absolute"},
		{"unknown manifest field", []string{"--manifest", unknownField, "--out", dir}, "unknown field"},
		{"no target matches", []string{"--manifest", good, "--out", dir, "--only", "arm64"}, "nothing to package"},
		{"format not made for the target", []string{"--manifest", good, "--out", dir, "--formats", "deb"}, "nothing to package"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command(tool, append([]string{"--root", root(t)}, tt.args...)...)
			out, err := cmd.CombinedOutput()
			if err == nil || !strings.Contains(string(out), tt.want) {
				t.Fatalf("err %v, output %q; want a failure mentioning %q", err, out, tt.want)
			}
			for _, ext := range []string{"ipk", "apk", "deb"} {
				if pkgs, _ := filepath.Glob(filepath.Join(dir, "*."+ext)); len(pkgs) > 0 {
					t.Fatalf("wrote %v", pkgs)
				}
			}
		})
	}
}
