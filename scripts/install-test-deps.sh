#!/usr/bin/env bash
# Installs what rlb's integration tests need, if it is missing: mariadbd and
# mariadb-install-db (mariadb-server-core), the mariadb and mariadb-admin clients
# (mariadb-client). Idempotent: with everything present it changes nothing and runs no
# apt-get at all. Installing needs root and apt-get (Debian/Ubuntu).
#
# The packaged service is never started by this script, and the tests never use it:
# scripts/mariadb-cluster.sh runs its own servers on its own ports.
set -euo pipefail

have() {
    local name=$1 dir
    command -v "$name" >/dev/null 2>&1 && return 0
    for dir in /usr/sbin /usr/bin /usr/local/sbin /usr/local/bin; do
        [[ -x $dir/$name ]] && return 0
    done
    return 1
}

missing=()
have mariadbd && have mariadb-install-db || missing+=(mariadb-server-core)
have mariadb && have mariadb-admin || missing+=(mariadb-client)
# The health tests run small HTTP servers in their own processes (SIGKILL, SIGSTOP).
have python3 || missing+=(python3)

if ((${#missing[@]} == 0)); then
    echo "install-test-deps: mariadb-server-core, mariadb-client and python3 already installed"
    exit 0
fi

echo "install-test-deps: installing ${missing[*]}"
if [[ $(id -u) != 0 ]]; then
    echo "install-test-deps: must run as root to install ${missing[*]}" >&2
    exit 1
fi
command -v apt-get >/dev/null 2>&1 || { echo "install-test-deps: no apt-get; install ${missing[*]} by hand" >&2; exit 1; }

export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends "${missing[@]}"

have mariadbd && have mariadb-install-db && have mariadb && have mariadb-admin || {
    echo "install-test-deps: ${missing[*]} installed, but a MariaDB program is still missing" >&2
    exit 1
}
