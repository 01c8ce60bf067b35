package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/goreleaser/nfpm/v2"
	_ "github.com/goreleaser/nfpm/v2/apk" // registers the apk packager
	"github.com/goreleaser/nfpm/v2/files"
)

// The OpenWrt package, as the feed Makefile (openwrt/net/blockcast-beacon)
// installs it.
const (
	feedDir    = "openwrt/net/blockcast-beacon"
	scriptsDir = "openwrt/sdkless"
	uciConfig  = "/etc/config/blockcast"
	keepFile   = "/lib/upgrade/keep.d/" + pkgName
	apkMetaDir = "/lib/apk/packages/"
	// USERID in the feed Makefile: user and group blockcast, IDs picked at
	// install time by add_group_and_user.
	requireUser = "blockcast:blockcast"
	owrtDepends = "ca-bundle" // Go's crypto/x509 reads /etc/ssl/certs/ca-certificates.crt
	owrtSection = "net"
	owrtSource  = "feeds/packages/net/" + pkgName
)

// owrtConffiles is Package/blockcast-beacon/conffiles of the feed Makefile.
var owrtConffiles = []string{uciConfig, walletPath}

// file is one file of a package.
type file struct {
	Path string // absolute, inside the package
	Mode int64
	Data []byte
}

func readRepo(opts options, rel string) ([]byte, error) {
	return os.ReadFile(filepath.Join(opts.root, filepath.FromSlash(rel)))
}

// setCastURL writes url into the default configuration's empty castd URL.
func setCastURL(conf []byte, from, to string) ([]byte, error) {
	if !bytes.Contains(conf, []byte(from)) {
		return nil, fmt.Errorf("default configuration has no %q line to set the castd URL in", from)
	}
	return bytes.Replace(conf, []byte(from), []byte(to), 1), nil
}

// capsFiles are the procd capability sets in files/, installed in
// /etc/capabilities as the feed Makefile does.
var capsFiles = []string{"blockcast.json", "blockcast-bind.json", "blockcast-raw-bind.json"}

// openwrtFiles lists the payload both OpenWrt formats carry. apk packages
// also carry the metadata files OpenWrt 25.12's package-pack.mk adds under
// /lib/apk/packages (apk has no per-package file list or conffiles of its
// own that /lib/functions.sh and sysupgrade could read).
func openwrtFiles(opts options, a artifact, forAPK bool) ([]file, error) {
	bin, err := os.ReadFile(a.Binary)
	if err != nil {
		return nil, err
	}
	initScript, err := readRepo(opts, feedDir+"/files/blockcast.init")
	if err != nil {
		return nil, err
	}
	conf, err := readRepo(opts, feedDir+"/files/blockcast.config")
	if err != nil {
		return nil, err
	}
	if opts.castURL != "" {
		if conf, err = setCastURL(conf, "option cast_url ''", "option cast_url '"+opts.castURL+"'"); err != nil {
			return nil, err
		}
	}
	fs := []file{
		{Path: "/usr/bin/beacon", Mode: 0o755, Data: bin},
		{Path: "/etc/init.d/blockcast", Mode: 0o755, Data: initScript},
		{Path: uciConfig, Mode: 0o600, Data: conf}, // INSTALL_CONF
	}
	// The init script picks one by what the configuration needs:
	// CAP_NET_RAW for lan_iface, CAP_NET_BIND_SERVICE for a port below 1024.
	for _, name := range capsFiles {
		caps, err := readRepo(opts, feedDir+"/files/"+name)
		if err != nil {
			return nil, err
		}
		fs = append(fs, file{Path: "/etc/capabilities/" + name, Mode: 0o644, Data: caps})
	}
	// As package-pack.mk does: conffiles the package does not ship (the
	// wallet, made at first start) go to keep.d so sysupgrade keeps them.
	var keep []string
	for _, c := range owrtConffiles {
		if !hasFile(fs, c) {
			keep = append(keep, c)
		}
	}
	if len(keep) > 0 {
		fs = append(fs, file{Path: keepFile, Mode: 0o644, Data: []byte(strings.Join(keep, "\n") + "\n")})
	}
	if !forAPK {
		return fs, nil
	}
	fs = append(fs, file{Path: apkMetaDir + pkgName + ".rusers", Mode: 0o644, Data: []byte(requireUser + "\n")})
	var list []string
	for _, f := range fs {
		list = append(list, f.Path)
	}
	sort.Strings(list)
	var static strings.Builder
	for _, c := range owrtConffiles {
		for _, f := range fs {
			if f.Path == c {
				sum := sha256.Sum256(f.Data)
				fmt.Fprintf(&static, "%s %s\n", c, hex.EncodeToString(sum[:]))
			}
		}
	}
	fs = append(fs,
		file{Path: apkMetaDir + pkgName + ".list", Mode: 0o644, Data: []byte(strings.Join(list, "\n") + "\n")},
		file{Path: apkMetaDir + pkgName + ".conffiles", Mode: 0o644, Data: []byte(strings.Join(owrtConffiles, "\n") + "\n")},
		file{Path: apkMetaDir + pkgName + ".conffiles_static", Mode: 0o644, Data: []byte(static.String())},
	)
	return fs, nil
}

func hasFile(fs []file, p string) bool {
	for _, f := range fs {
		if f.Path == p {
			return true
		}
	}
	return false
}

// tarGz writes entries (sorted by name, owned by 0:0) as a gzipped GNU tar,
// the way ipkg-build runs tar: directories first as "./" entries.
func tarGz(fs []file, opts options) ([]byte, int64, error) {
	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	dirs := map[string]bool{".": true}
	for _, f := range fs {
		for d := path.Dir(strings.TrimPrefix(f.Path, "/")); d != "." && d != "/"; d = path.Dir(d) {
			dirs[d] = true
		}
	}
	type entry struct {
		name string
		f    *file
	}
	var ents []entry
	for d := range dirs {
		name := "./"
		if d != "." {
			name = "./" + d + "/"
		}
		ents = append(ents, entry{name: name})
	}
	for i := range fs {
		ents = append(ents, entry{name: "." + fs[i].Path, f: &fs[i]})
	}
	sort.Slice(ents, func(i, j int) bool { return ents[i].name < ents[j].name })
	for _, e := range ents {
		h := &tar.Header{Name: e.name, ModTime: opts.mtime, Format: tar.FormatGNU, Uname: "root", Gname: "root"}
		if e.f == nil {
			h.Typeflag, h.Mode = tar.TypeDir, 0o755
		} else {
			h.Typeflag, h.Mode, h.Size = tar.TypeReg, e.f.Mode, int64(len(e.f.Data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, 0, err
		}
		if e.f != nil {
			if _, err := tw.Write(e.f.Data); err != nil {
				return nil, 0, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, 0, err
	}
	gz, err := gzipBytes(raw.Bytes())
	return gz, int64(raw.Len()), err
}

func gzipBytes(b []byte) ([]byte, error) {
	var out bytes.Buffer
	zw, err := gzip.NewWriterLevel(&out, gzip.BestCompression)
	if err != nil {
		return nil, err
	}
	if _, err := zw.Write(b); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// ipkControl is the control file, fields in the order package-pack.mk
// writes them.
func ipkControl(m *manifest, a artifact, installedSize int64) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "Package: %s\n", pkgName)
	fmt.Fprintf(&b, "Version: %s-r%s\n", m.PackageVersion, release)
	fmt.Fprintf(&b, "Depends: %s\n", owrtDepends)
	fmt.Fprintf(&b, "Source: %s\n", owrtSource)
	fmt.Fprintf(&b, "SourceName: %s\n", pkgName)
	fmt.Fprintf(&b, "License: %s\n", license)
	fmt.Fprintf(&b, "Section: %s\n", owrtSection)
	fmt.Fprintf(&b, "Require-User: %s\n", requireUser)
	fmt.Fprintf(&b, "URL: %s\n", homepage)
	fmt.Fprintf(&b, "Maintainer: %s\n", maintainer)
	fmt.Fprintf(&b, "Architecture: %s\n", a.Target.OpenWrtArch)
	fmt.Fprintf(&b, "Installed-Size: %d\n", installedSize)
	b.WriteString("Description: ")
	for i, line := range strings.Split(description, "\n") {
		if i > 0 {
			b.WriteString(" ")
		}
		b.WriteString(line + "\n")
	}
	return []byte(b.String())
}

// writeIPK builds the .ipk as OpenWrt's scripts/ipkg-build does: a gzipped
// tar of ./debian-binary, ./data.tar.gz and ./control.tar.gz. nfpm writes
// .ipk too, but lists only shipped files as conffiles and knows nothing of
// OpenWrt's Require-User; building it here keeps the result identical in
// shape to what the SDK makes from the feed Makefile.
func writeIPK(opts options, m *manifest, a artifact, payload []file) (string, error) {
	data, installed, err := tarGz(payload, opts)
	if err != nil {
		return "", err
	}
	// ipkg-build keeps only the conffiles the package ships; keep.d covers
	// the rest.
	var conffiles []string
	for _, c := range owrtConffiles {
		if hasFile(payload, c) {
			conffiles = append(conffiles, c)
		}
	}
	postinst, err := readRepo(opts, scriptsDir+"/ipk.postinst")
	if err != nil {
		return "", err
	}
	prerm, err := readRepo(opts, scriptsDir+"/ipk.prerm")
	if err != nil {
		return "", err
	}
	control, _, err := tarGz([]file{
		{Path: "/control", Mode: 0o644, Data: ipkControl(m, a, installed)},
		{Path: "/conffiles", Mode: 0o644, Data: []byte(strings.Join(conffiles, "\n") + "\n")},
		{Path: "/postinst", Mode: 0o755, Data: postinst},
		{Path: "/prerm", Mode: 0o755, Data: prerm},
	}, opts)
	if err != nil {
		return "", err
	}
	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	for _, e := range []struct {
		name string
		data []byte
	}{{"./debian-binary", []byte("2.0\n")}, {"./data.tar.gz", data}, {"./control.tar.gz", control}} {
		h := &tar.Header{Name: e.name, Mode: 0o644, Size: int64(len(e.data)), ModTime: opts.mtime,
			Typeflag: tar.TypeReg, Format: tar.FormatGNU, Uname: "root", Gname: "root"}
		if err := tw.WriteHeader(h); err != nil {
			return "", err
		}
		if _, err := tw.Write(e.data); err != nil {
			return "", err
		}
	}
	if err := tw.Close(); err != nil {
		return "", err
	}
	out, err := gzipBytes(raw.Bytes())
	if err != nil {
		return "", err
	}
	name := fmt.Sprintf("%s_%s-r%s_%s.ipk", pkgName, m.PackageVersion, release, a.Target.OpenWrtArch)
	p := filepath.Join(opts.out, name)
	return p, os.WriteFile(p, out, 0o644)
}

// writeAPK builds the .apk with nfpm: the v2 format (gzip streams of
// .PKGINFO plus scripts, then the data tar with per-file SHA-1 PAX records,
// bound by the datahash), which apk-tools v3 still installs. The scripts
// are those package-pack.mk generates for apk.
func writeAPK(opts options, m *manifest, a artifact, payload []file) (string, error) {
	tmp, err := os.MkdirTemp("", "pkgtool-apk-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	var contents files.Contents
	for i, f := range payload {
		src := filepath.Join(tmp, fmt.Sprintf("f%d", i))
		if err := os.WriteFile(src, f.Data, 0o600); err != nil {
			return "", err
		}
		contents = append(contents, &files.Content{Source: src, Destination: f.Path, Type: files.TypeFile,
			FileInfo: &files.ContentFileInfo{Mode: os.FileMode(f.Mode), Owner: "root", Group: "root", MTime: opts.mtime}})
	}
	script := func(name string) string { return filepath.Join(opts.root, scriptsDir, name) }
	info := &nfpm.Info{
		Name:          pkgName,
		Arch:          a.Target.OpenWrtArch,
		Platform:      "linux",
		Version:       m.PackageVersion,
		VersionSchema: "none", // keep 1.2.3.4 as it is: apk orders it like opkg and dpkg
		Release:       release,
		Maintainer:    maintainer,
		Description:   summary,
		Homepage:      homepage,
		License:       license,
		MTime:         opts.mtime,
		Overridables: nfpm.Overridables{
			Depends:  []string{owrtDepends},
			Contents: contents,
			Scripts: nfpm.Scripts{
				PostInstall: script("apk.post-install"),
				PreRemove:   script("apk.pre-deinstall"),
			},
			APK: nfpm.APK{
				Arch:    a.Target.OpenWrtArch,
				Scripts: nfpm.APKScripts{PostUpgrade: script("apk.post-upgrade")},
			},
		},
	}
	info = nfpm.WithDefaults(info)
	pkger, err := nfpm.Get("apk")
	if err != nil {
		return "", err
	}
	name := fmt.Sprintf("%s-%s-r%s_%s.apk", pkgName, m.PackageVersion, release, a.Target.OpenWrtArch)
	p := filepath.Join(opts.out, name)
	f, err := os.Create(p)
	if err != nil {
		return "", err
	}
	if err := pkger.Package(info, f); err != nil {
		f.Close()
		return "", err
	}
	return p, f.Close()
}
