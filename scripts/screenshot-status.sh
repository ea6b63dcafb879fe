#!/usr/bin/env bash
# Checks the admin status page in a real headless browser and refreshes its screenshot,
# docs/status-page.png. Runs the ignored test `status_page_renders_in_chromium`
# (tests/admin.rs): rlb in-process on port 0 with a demo configuration, test servers
# taking traffic, a drained server, a killed one, two reloads and a failed one; then
# Debian's chromium loads http://ADMIN/ headless, the rendered DOM is checked (filled
# from /status and /events, no fetch error) and the screenshot is written.
#
# Needs chromium: with --install (as root, Debian/Ubuntu) it is installed when missing.
# Not part of the default test run, since a CI machine may lack chromium.
#
#   scripts/screenshot-status.sh [--install] [OUTPUT.png]
set -euo pipefail
cd "$(dirname "$0")/.."

install=false
if [[ ${1:-} == --install ]]; then
    install=true
    shift
fi
output=${1:-docs/status-page.png}

browser=
for name in chromium chromium-browser google-chrome; do
    if command -v "$name" >/dev/null 2>&1; then
        browser=$name
        break
    fi
done
if [[ -z $browser ]]; then
    if $install; then
        [[ $(id -u) == 0 ]] || { echo "screenshot-status: must run as root to install chromium" >&2; exit 1; }
        export DEBIAN_FRONTEND=noninteractive
        apt-get update
        apt-get install -y chromium
    else
        echo "screenshot-status: chromium not found; install it (apt-get install -y chromium) or pass --install" >&2
        exit 1
    fi
fi

mkdir -p "$(dirname "$output")"
RLB_SCREENSHOT=$output cargo test --test admin -- --ignored --exact status_page_renders_in_chromium --nocapture
echo "screenshot-status: wrote $output"
