#!/usr/bin/env bash
# Installs what rlb's integration tests need, if it is missing: mariadbd and
# mariadb-install-db (mariadb-server-core), the mariadb and mariadb-admin clients
# (mariadb-client). Idempotent: with everything present it changes nothing and runs no
# apt-get at all. Installing needs root and apt-get (Debian/Ubuntu).
#
#   --rabbitmq   also rabbitmq-server, for `scripts/demo.sh --full` and the full-mode tests
#                (they are skipped without it). Not installed by default: it brings the Erlang
#                runtime, and CI does not need it.
#
# The packaged services are never started by this script, and the MariaDB tests never use
# the packaged one: scripts/mariadb-cluster.sh runs its own servers on its own ports.
set -euo pipefail

RABBITMQ=0
for arg in "$@"; do
    case $arg in
        --rabbitmq) RABBITMQ=1 ;;
        -h | --help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "install-test-deps: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
    esac
done

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
if ((RABBITMQ)); then have rabbitmq-server || missing+=(rabbitmq-server); fi

rabbitmq_hint() {
    ((RABBITMQ)) || return 0
    echo "install-test-deps: RabbitMQ is installed; start it (as root) with"
    echo "  systemctl start rabbitmq-server     or, without systemd:  rabbitmq-server -detached"
    echo "  (it listens on 127.0.0.1:5672, user guest, password guest; stop: rabbitmqctl stop)"
}

if ((${#missing[@]} == 0)); then
    echo "install-test-deps: mariadb-server-core, mariadb-client, python3$( ((RABBITMQ)) && echo ", rabbitmq-server") already installed"
    rabbitmq_hint
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
if ((RABBITMQ)) && ! have rabbitmq-server; then
    echo "install-test-deps: rabbitmq-server installed, but rabbitmq-server is still missing" >&2
    exit 1
fi
rabbitmq_hint
