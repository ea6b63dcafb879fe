#!/usr/bin/env bash
# The rlb chat demo in one command.
#
#   scripts/demo.sh            embedded mode: rlb + 3 chat servers sharing one SQLite file
#   scripts/demo.sh --full     full mode: RabbitMQ (already running on 127.0.0.1:5672) for
#                              live delivery; a MariaDB primary + 2 replicas started here,
#                              history-writer filling the primary, the chat servers reading
#                              history through rlb's tcp listener in front of the replicas
#   --no-build                 use the binaries already in target/release
#
# Fixed loopback ports (config/demo.toml, config/demo-full.toml):
#   8080 rlb http listener (the chat page)   9901 rlb admin   9001-9003 chat servers
#   full mode: 3307 rlb tcp listener -> replicas 3317, 3318; primary 3316
#
# Builds with `cargo build --release -p rlb -p rlb-demo`, prints the URLs, and on Ctrl-C
# (or TERM, or any failure) stops everything it started, by pid.
set -euo pipefail

ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
readonly ROOT
MODE=embedded
BUILD=1
for arg in "$@"; do
    case $arg in
        --full) MODE=full ;;
        --no-build) BUILD=0 ;;
        -h | --help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "demo.sh: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
    esac
done

readonly HTTP_PORT=8080 ADMIN_PORT=9901 CHAT_PORTS=(9001 9002 9003)
readonly MYSQL_PORT=3307 PRIMARY_PORT=3316 REPLICA_PORTS=(3317 3318)
readonly AMQP_URL=amqp://guest:guest@127.0.0.1:5672/%2f
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
CONFIG=$ROOT/config/demo.toml
[[ $MODE == full ]] && CONFIG=$ROOT/config/demo-full.toml

say() { printf 'demo: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

# --- what it started, stopped on exit ----------------------------------------------------

PIDS=()
NAMES=()
CLUSTER_BASE=
WORK=

cleanup() {
    local rc=$? i pid deadline
    trap - EXIT INT TERM
    if ((${#PIDS[@]})); then
        say "stopping ${NAMES[*]}"
        for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
        deadline=$((SECONDS + 8))
        for i in "${!PIDS[@]}"; do
            pid=${PIDS[i]}
            while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
            if kill -0 "$pid" 2>/dev/null; then
                say "${NAMES[i]} (pid $pid) still running: SIGKILL"
                kill -KILL "$pid" 2>/dev/null || true
            fi
            wait "$pid" 2>/dev/null || true
        done
    fi
    if [[ -n $CLUSTER_BASE ]]; then
        say "stopping the MariaDB cluster"
        "$ROOT/scripts/mariadb-cluster.sh" stop "$CLUSTER_BASE" || true
    fi
    if [[ -n $WORK && -d $WORK ]]; then
        if ((rc == 0 || rc == 130 || rc == 143)); then rm -rf -- "$WORK"; else say "logs kept in $WORK"; fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start NAME COMMAND...: runs it in the background, logging to $WORK/NAME.log.
start() {
    local name=$1
    shift
    "$@" </dev/null >>"$WORK/$name.log" 2>&1 &
    PIDS+=($!)
    NAMES+=("$name")
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# http_ok PORT PATH: true if GET PATH answers 200 (bash only: no curl needed).
http_ok() {
    local status
    status=$(
        exec 2>/dev/null 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
        printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$2" >&3
        read -r -t 2 _ code _ <&3 && echo "$code"
    ) 2>/dev/null || return 1
    [[ $status == 200 ]]
}

# wait_for NAME PID PORT PATH SECONDS
wait_for() {
    local deadline=$((SECONDS + $5))
    until http_ok "$3" "$4"; do
        kill -0 "$2" 2>/dev/null || { tail -n 20 "$WORK/$1.log" >&2; die "$1 exited (log above)"; }
        ((SECONDS < deadline)) || { tail -n 20 "$WORK/$1.log" >&2; die "$1 did not answer GET $4 on port $3 within $5 s"; }
        sleep 0.1
    done
}

# --- checks --------------------------------------------------------------------------------

ports=("$HTTP_PORT" "$ADMIN_PORT" "${CHAT_PORTS[@]}")
[[ $MODE == full ]] && ports+=("$MYSQL_PORT" "$PRIMARY_PORT" "${REPLICA_PORTS[@]}")
for port in "${ports[@]}"; do
    port_busy "$port" && die "port $port is already in use (another demo running?); the demo needs ${ports[*]}"
done
if [[ $MODE == full ]]; then
    port_busy 5672 || die "full mode needs RabbitMQ on 127.0.0.1:5672 (guest/guest); embedded mode needs nothing: scripts/demo.sh"
    command -v mariadbd >/dev/null 2>&1 || [[ -x /usr/sbin/mariadbd ]] ||
        die "full mode needs mariadbd (scripts/install-test-deps.sh installs it); embedded mode needs nothing: scripts/demo.sh"
fi

if ((BUILD)); then
    command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust (https://rustup.rs)"
    say "building: cargo build --release -p rlb -p rlb-demo"
    (cd "$ROOT" && cargo build --release -p rlb -p rlb-demo) || die "build failed"
fi
for b in rlb chat-server history-writer; do
    [[ -x $BIN/$b ]] || die "$BIN/$b missing: run without --no-build"
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/rlb-demo.XXXXXX")

# --- start ---------------------------------------------------------------------------------

CHAT_ARGS=()
if [[ $MODE == full ]]; then
    say "starting a MariaDB primary (:$PRIMARY_PORT) and replicas (:${REPLICA_PORTS[0]}, :${REPLICA_PORTS[1]})"
    # The watchdog stops the cluster even if this script is killed with SIGKILL.
    cluster_env=$(RLB_MARIADB_OWNER_PID=$$ "$ROOT/scripts/mariadb-cluster.sh" start \
        "$PRIMARY_PORT" "${REPLICA_PORTS[@]}") || die "the MariaDB cluster did not start"
    CLUSTER_BASE=$(sed -n 's/^RLB_MARIADB_BASE=//p' <<<"$cluster_env")
    export RLB_MYSQL_PASSWORD=monitorpass   # rlb_monitor, made by mariadb-cluster.sh
    CHAT_ARGS=(--amqp "$AMQP_URL" --mysql-read "mysql://root@127.0.0.1:$MYSQL_PORT/rlbtest")
else
    CHAT_ARGS=(--db "$WORK/chat.sqlite")
fi

start rlb "$BIN/rlb" --config "$CONFIG"
RLB_PID=${PIDS[-1]}
wait_for rlb "$RLB_PID" "$ADMIN_PORT" /status 10

if [[ $MODE == full ]]; then
    start history-writer "$BIN/history-writer" --amqp "$AMQP_URL" \
        --mysql-primary "mysql://root@127.0.0.1:$PRIMARY_PORT/rlbtest"
fi
for i in "${!CHAT_PORTS[@]}"; do
    start "s$((i + 1))" "$BIN/chat-server" --name "s$((i + 1))" --port "${CHAT_PORTS[i]}" "${CHAT_ARGS[@]}"
done
for i in "${!CHAT_PORTS[@]}"; do
    wait_for "s$((i + 1))" "${PIDS[-3 + i]}" "${CHAT_PORTS[i]}" /healthz 20
done
wait_for rlb "$RLB_PID" "$HTTP_PORT" / 10

cat <<EOF_INFO

rlb demo ($MODE mode) is running.

  chat page    http://127.0.0.1:$HTTP_PORT/            open it in two tabs; ?user=ann&room=lobby joins at once
  rlb admin    http://127.0.0.1:$ADMIN_PORT/            status page; /status /events /metrics, POST /reload
  chat servers s1 :${CHAT_PORTS[0]} (pid ${PIDS[-3]})  s2 :${CHAT_PORTS[1]} (pid ${PIDS[-2]})  s3 :${CHAT_PORTS[2]} (pid ${PIDS[-1]})

  watch a failover:  kill -9 ${PIDS[-3]}        (s1; the page reconnects through rlb)
                     curl -X POST http://127.0.0.1:${CHAT_PORTS[1]}/admin/fail   (s2 fails its checks; /admin/recover)
                     curl http://127.0.0.1:$ADMIN_PORT/events
  logs:              $WORK/*.log

Ctrl-C stops everything.
EOF_INFO

# Runs until Ctrl-C or until rlb itself exits (killing a chat server is part of the demo).
while kill -0 "$RLB_PID" 2>/dev/null; do
    sleep 1 &
    wait $! || true
done
die "rlb exited; its log: $WORK/rlb.log"
