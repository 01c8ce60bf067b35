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
# LiteSVM (npm) for the Solana tests, from test/solana/package-lock.json;
# the stamp is the one test/solana/solanatest checks, so that tests do not
# run npm again (they install it themselves when this did not).
sol="$(dirname "$0")/solana"
if command -v npm >/dev/null 2>&1 && [ -f "$sol/package-lock.json" ]; then
	sum=$(sha256sum <"$sol/package-lock.json" | cut -d' ' -f1)
	if [ "$(cat "$sol/node_modules/.lock-sha256" 2>/dev/null)" != "$sum" ]; then
		echo "install-deps: npm ci in test/solana" >&2
		if (cd "$sol" && npm ci --no-audit --no-fund --prefer-offline --loglevel=error >&2); then
			echo "$sum" >"$sol/node_modules/.lock-sha256"
		else
			echo "install-deps: npm ci in test/solana failed (the Solana tests will retry)" >&2
		fi
	fi
fi
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
