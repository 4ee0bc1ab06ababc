#!/usr/bin/env bash
# Install the system packages the test suite drives as real peers:
# nginx (reverse-proxy test), chromium (browser test of the demo page) and
# redis-server / redis-sentinel (wsharbor.pubsub's broker tests).
# Idempotent: installs only what is missing. Needs root and apt-get (Debian);
# elsewhere it says what is missing and exits 0, and the tests that need a
# missing program are skipped (or fail under CI=true).
set -euo pipefail

want=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || want+=(nginx)
command -v chromium >/dev/null 2>&1 || want+=(chromium)
command -v redis-server >/dev/null 2>&1 || want+=(redis-server)
command -v redis-sentinel >/dev/null 2>&1 || want+=(redis-sentinel)

if [ ${#want[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install-system-deps: missing ${want[*]}; install them with your package manager" >&2
    exit 0
fi
echo "install-system-deps: installing ${want[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
# Debian starts nginx on port 80 and Redis on 6379/26379 after installing them:
# the tests run their own, on free ports.
for service in nginx redis-server redis-sentinel; do
    case " ${want[*]} " in *" $service "*) ;; *) continue ;; esac
    if command -v systemctl >/dev/null 2>&1; then systemctl stop "$service" >/dev/null 2>&1 || true; fi
    for pidfile in "/run/$service.pid" "/run/redis/$service.pid"; do
        if [ -f "$pidfile" ]; then kill "$(cat "$pidfile")" >/dev/null 2>&1 || true; fi
    done
done
