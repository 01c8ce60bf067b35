#!/bin/sh
# Installs the Debian tools that the test suite and benchmarks drive for real
# (MQTT broker, protocol peers, dissector, emulators, browser, baseline servers).
# Needs root; without root it prints what is missing and exits 0 so that
# tests skip (they fail instead when CI=true).
set -eu
pkgs="dnsmasq-base mosquitto vlc-bin vlc-plugin-base ffmpeg tshark qemu-user-static chromium nginx-light wrk iproute2 dpkg-dev systemd busybox shellcheck prometheus"
missing=""
for p in $pkgs; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
	echo "install-deps: not root; missing:$missing (tests that need them will skip)" >&2
	exit 0
fi
echo "install-deps: installing$missing" >&2
export DEBIAN_FRONTEND=noninteractive
echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null
