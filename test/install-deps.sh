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
# The tests start the daemons they need themselves, on loopback ports of
# their own. The packages' services (Prometheus on :9090 and nginx on :80,
# on every interface; Mosquitto) must not start now or at boot: deny starts
# while installing, then disable the services this run installed.
if [ ! -e /usr/sbin/policy-rc.d ]; then
	printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
	chmod 755 /usr/sbin/policy-rc.d
	trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null
for p in $missing; do
	case $p in
	prometheus | mosquitto) svc=$p ;;
	nginx-light) svc=nginx ;;
	*) continue ;;
	esac
	if command -v systemctl >/dev/null 2>&1; then
		systemctl disable --now "$svc" >/dev/null 2>&1 || true
	fi
done
