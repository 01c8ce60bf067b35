package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/goreleaser/nfpm/v2"
	_ "github.com/goreleaser/nfpm/v2/deb" // registers the deb packager
	"github.com/goreleaser/nfpm/v2/files"
)

// The Raspberry Pi (and any Debian) package: the beacon, a hardened systemd
// unit, and /etc/blockcast/beacon.env; state in /var/lib/blockcast, which
// the unit's StateDirectory creates.
const (
	rpiDir   = "rpi"
	unitPath = "/lib/systemd/system/blockcast.service"
	envPath  = "/etc/blockcast/beacon.env"
)

func writeDeb(opts options, m *manifest, a artifact) (string, error) {
	env, err := readRepo(opts, rpiDir+"/beacon.env")
	if err != nil {
		return "", err
	}
	if opts.castURL != "" {
		if env, err = setCastURL(env, "\nBEACON_CAST_URL=\n", "\nBEACON_CAST_URL="+opts.castURL+"\n"); err != nil {
			return "", err
		}
	}
	tmp, err := os.MkdirTemp("", "pkgtool-deb-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	envSrc := filepath.Join(tmp, "beacon.env")
	if err := os.WriteFile(envSrc, env, 0o644); err != nil {
		return "", err
	}
	fi := func(mode os.FileMode) *files.ContentFileInfo {
		return &files.ContentFileInfo{Mode: mode, Owner: "root", Group: "root", MTime: opts.mtime}
	}
	repo := func(rel string) string { return filepath.Join(opts.root, filepath.FromSlash(rel)) }
	info := &nfpm.Info{
		Name:          pkgName,
		Arch:          a.Target.DebianArch,
		Platform:      "linux",
		Version:       m.PackageVersion,
		VersionSchema: "none",
		Release:       release,
		Section:       "net",
		Priority:      "optional",
		Maintainer:    maintainer,
		Description:   summary + "\n" + description,
		Homepage:      homepage,
		License:       license,
		MTime:         opts.mtime,
		Overridables: nfpm.Overridables{
			// Static binary: no library dependencies. CA certificates are
			// needed only for an https castd URL.
			Recommends: []string{"ca-certificates"},
			Contents: files.Contents{
				{Source: a.Binary, Destination: "/usr/bin/beacon", FileInfo: fi(0o755)},
				{Source: repo(rpiDir + "/blockcast.service"), Destination: unitPath, FileInfo: fi(0o644)},
				{Source: envSrc, Destination: envPath, Type: files.TypeConfig, FileInfo: fi(0o644)},
			},
			Scripts: nfpm.Scripts{
				PostInstall: repo(rpiDir + "/debian/postinst"),
				PreRemove:   repo(rpiDir + "/debian/prerm"),
				PostRemove:  repo(rpiDir + "/debian/postrm"),
			},
			Deb: nfpm.Deb{Arch: a.Target.DebianArch, Compression: "xz"},
		},
	}
	info = nfpm.WithDefaults(info)
	pkger, err := nfpm.Get("deb")
	if err != nil {
		return "", err
	}
	name := fmt.Sprintf("%s_%s-%s_%s.deb", pkgName, m.PackageVersion, release, a.Target.DebianArch)
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
