#!/usr/bin/env bash
# Install the system packages the test suite drives as real peers:
# nginx (reverse-proxy test) and chromium (browser test of the demo page).
# Idempotent: installs only what is missing. Needs root and apt-get (Debian);
# elsewhere it says what is missing and exits 0, and the tests that need a
# missing program are skipped (or fail under CI=true).
set -euo pipefail

want=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || want+=(nginx)
command -v chromium >/dev/null 2>&1 || want+=(chromium)

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
# Debian starts nginx on port 80 after installing it: the tests run their own.
if command -v systemctl >/dev/null 2>&1; then systemctl stop nginx >/dev/null 2>&1 || true; fi
if [ -f /run/nginx.pid ]; then kill "$(cat /run/nginx.pid)" >/dev/null 2>&1 || true; fi
