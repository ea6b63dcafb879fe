#!/usr/bin/env bash
# The rlb chat demo in one command.
#
#   scripts/demo.sh            embedded mode: rlb + 3 chat servers sharing one SQLite file
#   scripts/demo.sh --full     full mode: RabbitMQ (already running on 127.0.0.1:5672) for
#                              live delivery; a MariaDB primary + 2 replicas started here,
#                              history-writer filling the primary, the chat servers reading
#                              history through rlb's tcp listener in front of the replicas
#   --no-build                 use the binaries already built (see --bin-dir)
#   --bin-dir DIR              where rlb, chat-server (and history-writer) are; default
#                              target/release ($CARGO_TARGET_DIR/release)
#
# Loopback ports (config/demo.toml, config/demo-full.toml), each overridable:
#   8080 rlb http listener (the chat page)  RLB_DEMO_HTTP_PORT
#   9901 rlb admin                          RLB_DEMO_ADMIN_PORT
#   9001-9003 chat servers                  RLB_DEMO_CHAT_PORTS="9001 9002 9003"
#   full mode: 3307 rlb tcp listener -> replicas 3317, 3318; primary 3316
#
# The first build (cargo build --release, only the binaries the mode runs) takes about
# 9 minutes on 2 cores; later runs start in seconds. A chat server that dies (try the
# printed `kill -9`) is started again after RLB_DEMO_RESTART_DELAY seconds (5). Ctrl-C
# (or TERM) stops everything it started, by pid, removes its work directory and exits 0.
set -euo pipefail

# Bash cannot trap a signal that was ignored when it started, and a shell that starts this
# script in the background hands it SIGINT ignored: Ctrl-C then reached only rlb and the
# chat servers, which died under the script ("rlb exited", exit 1, work directory left).
# Start again with SIGINT at its default, so the trap below always runs.
sigint_ignored() {
    local key mask
    while read -r key mask; do
        [[ $key == SigIgn: ]] && (((16#$mask >> 1) & 1)) && return 0
    done </proc/$$/status
    return 1
}
if [[ -z ${RLB_DEMO_SIGINT_RESET:-} && -r /proc/$$/status ]] && sigint_ignored &&
    env --default-signal=INT true 2>/dev/null; then
    RLB_DEMO_SIGINT_RESET=1 exec env --default-signal=INT bash "$0" "$@"
fi

ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
readonly ROOT
MODE=embedded
BUILD=1
BIN=${RLB_DEMO_BIN_DIR:-${CARGO_TARGET_DIR:-$ROOT/target}/release}
while (($#)); do
    case $1 in
        --full) MODE=full ;;
        --no-build) BUILD=0 ;;
        --bin-dir) (($# > 1)) || { echo "demo.sh: --bin-dir needs a directory" >&2; exit 2; }; BIN=$2; shift ;;
        --bin-dir=*) BIN=${1#--bin-dir=} ;;
        -h | --help) sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "demo.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
    shift
done

readonly DEFAULT_PORTS=(8080 9901 9001 9002 9003)
HTTP_PORT=${RLB_DEMO_HTTP_PORT:-8080}
ADMIN_PORT=${RLB_DEMO_ADMIN_PORT:-9901}
read -r -a CHAT_PORTS <<<"${RLB_DEMO_CHAT_PORTS:-9001 9002 9003}"
readonly HTTP_PORT ADMIN_PORT CHAT_PORTS
readonly MYSQL_PORT=3307 PRIMARY_PORT=3316 REPLICA_PORTS=(3317 3318)
readonly AMQP_URL=amqp://guest:guest@127.0.0.1:5672/%2f
readonly RESTART_DELAY=${RLB_DEMO_RESTART_DELAY:-5}
CONFIG=$ROOT/config/demo.toml
[[ $MODE == full ]] && CONFIG=$ROOT/config/demo-full.toml
BINARIES=(rlb chat-server)
[[ $MODE == full ]] && BINARIES+=(history-writer)

say() { printf 'demo: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

((${#CHAT_PORTS[@]} == 3)) || die "RLB_DEMO_CHAT_PORTS needs 3 ports, not '${CHAT_PORTS[*]}'"
[[ $RESTART_DELAY =~ ^[0-9]+([.][0-9]+)?$ ]] || die "RLB_DEMO_RESTART_DELAY must be seconds, not '$RESTART_DELAY'"

# --- what it started, stopped on exit ----------------------------------------------------
#
# Every program runs under a small supervisor (a subshell of this script, see `supervise`)
# in a session of its own, so a Ctrl-C on the terminal reaches this script only, and this
# script stops each one by pid, instead of the programs racing it to exit (and the chat
# servers' supervisors restarting them).

SUPERVISORS=()
NAMES=()
CLUSTER_BASE=
WORK=
NAP_FD=

# nap SECONDS: sleeps inside bash (read -t on a FIFO nobody writes), with no child process,
# so a trapped signal is handled at once.
nap() { read -r -t "$1" -u "$NAP_FD" _ || true; }

# pid_of NAME: the pid of NAME's program now (it changes when a chat server is restarted).
pid_of() { cat "$WORK/$1.pid" 2>/dev/null || true; }

# alive PID: the process exists and is not a zombie (kill -0 succeeds on a zombie, and a
# supervisor that exited stays one until this script reaps it).
alive() {
    local rest
    [[ -n $1 && -r /proc/$1/stat ]] || return 1
    rest=$(<"/proc/$1/stat") 2>/dev/null || return 1
    rest=${rest##*) }
    [[ ${rest:0:1} != Z && ${rest:0:1} != X ]]
}

cleanup() {
    local rc=$? i sup pid deadline
    trap - EXIT INT TERM HUP
    if ((${#SUPERVISORS[@]})); then
        say "stopping ${NAMES[*]}"
        # Each supervisor stops its program with SIGTERM and waits for it.
        for sup in "${SUPERVISORS[@]}"; do kill -TERM "$sup" 2>/dev/null || true; done
        deadline=$((SECONDS + 10))
        for i in "${!SUPERVISORS[@]}"; do
            sup=${SUPERVISORS[i]}
            pid=$(pid_of "${NAMES[i]}")
            while alive "$sup" || alive "$pid"; do
                # A supervisor killed by hand leaves its program to this script.
                alive "$sup" || kill -TERM "$pid" 2>/dev/null || true
                if ((SECONDS >= deadline)); then
                    say "${NAMES[i]} (pid $pid) still running: SIGKILL"
                    kill -KILL "$sup" "$pid" 2>/dev/null || true
                    break
                fi
                nap 0.1
            done
            wait "$sup" 2>/dev/null || true
        done
    fi
    if [[ -n $CLUSTER_BASE ]]; then
        say "stopping the MariaDB cluster"
        "$ROOT/scripts/mariadb-cluster.sh" stop "$CLUSTER_BASE" || true
    fi
    if [[ -n $WORK && -d $WORK ]]; then
        if ((rc == 0)); then rm -rf -- "$WORK"; else say "logs kept in $WORK"; fi
    fi
    ((rc == 0)) && ((${#SUPERVISORS[@]})) && say "stopped"
    exit "$rc"
}
trap cleanup EXIT
# Ctrl-C, TERM or a closed terminal: a clean stop, exit 0.
trap 'exit 0' INT TERM HUP

# supervise NAME RESTART COMMAND...: runs COMMAND in a session of its own, logging to
# $WORK/NAME.log, its pid in $WORK/NAME.pid. When it dies, writes $WORK/NAME.status and
# says so in one line; with RESTART=1 starts it again after $RESTART_DELAY s. On SIGTERM
# it stops the program (SIGTERM, then waits for it) and exits. Runs as a background
# subshell, which ignores SIGINT: only this script acts on Ctrl-C.
supervise() {
    local name=$1 restart=$2 child= status how again=0
    shift 2
    # Bash reports a child killed by a signal ("line 123: 4567 Killed ...") on its stderr:
    # that goes to the log; the lines meant for the terminal go to fd 3.
    exec 3>&2 2>>"$WORK/$name.log"
    # A terminal's Ctrl-C or hangup reaches the whole process group: only the script acts.
    trap '' INT HUP
    trap '[[ -z $child ]] || { kill -TERM "$child"; wait "$child"; } 2>/dev/null; exit 0' TERM
    while :; do
        $SETSID "$@" </dev/null >>"$WORK/$name.log" 2>&1 3>&- {NAP_FD}<&- &
        child=$!
        echo "$child" >"$WORK/$name.pid.new" && mv -f "$WORK/$name.pid.new" "$WORK/$name.pid"
        ((again == 0)) || printf 'demo: %s is running again, pid %s\n' "$name" "$child" >&3
        if wait "$child"; then status=0; else status=$?; fi
        if ((status > 128)); then how="was killed by SIG$(kill -l "$((status - 128))")"; else how="exited with status $status"; fi
        echo "$status" >"$WORK/$name.status"
        if ((restart == 0)); then
            printf 'demo: %s (pid %s) %s\n' "$name" "$child" "$how" >&3
            exit 0
        fi
        printf 'demo: %s (pid %s) %s; starting it again in %s s\n' "$name" "$child" "$how" "$RESTART_DELAY" >&3
        child=
        nap "$RESTART_DELAY"
        rm -f "$WORK/$name.status"
        again=1
    done
}

# start NAME RESTART COMMAND...: supervise in the background; returns once the pid is known.
start() {
    local name=$1
    supervise "$@" &
    SUPERVISORS+=($!)
    NAMES+=("$name")
    until [[ -s $WORK/$name.pid ]]; do nap 0.01; done
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

# wait_for NAME PORT PATH SECONDS: until GET PATH answers 200, while NAME runs.
wait_for() {
    local deadline=$((SECONDS + $4))
    until http_ok "$2" "$3"; do
        [[ ! -e $WORK/$1.status ]] || { tail -n 20 "$WORK/$1.log" >&2; die "$1 exited (log above)"; }
        ((SECONDS < deadline)) || { tail -n 20 "$WORK/$1.log" >&2; die "$1 did not answer GET $3 on port $2 within $4 s"; }
        nap 0.1
    done
}

# --- checks --------------------------------------------------------------------------------

ports=("$HTTP_PORT" "$ADMIN_PORT" "${CHAT_PORTS[@]}")
[[ $MODE == full ]] && ports+=("$MYSQL_PORT" "$PRIMARY_PORT" "${REPLICA_PORTS[@]}")
for port in "${ports[@]}"; do
    [[ $port =~ ^[0-9]+$ ]] || die "bad port '$port'"
    port_busy "$port" && die "port $port is already in use (another demo running?); the demo needs ${ports[*]}"
done
if [[ $MODE == full ]]; then
    if ! port_busy 5672; then
        say "full mode needs RabbitMQ on 127.0.0.1:5672 (user guest, password guest); nothing listens there."
        if command -v rabbitmq-server >/dev/null 2>&1 || [[ -x /usr/sbin/rabbitmq-server ]]; then
            say "rabbitmq-server is installed but not running; start it:"
        else
            say "install it (Debian/Ubuntu, as root):  scripts/install-test-deps.sh --rabbitmq"
            say "  (that is: apt-get install rabbitmq-server), then start it:"
        fi
        say "  systemctl start rabbitmq-server      (or, without systemd, as root: rabbitmq-server -detached)"
        die "embedded mode needs none of it: scripts/demo.sh"
    fi
    command -v mariadbd >/dev/null 2>&1 || [[ -x /usr/sbin/mariadbd ]] ||
        die "full mode needs mariadbd: as root, scripts/install-test-deps.sh installs it; embedded mode needs nothing: scripts/demo.sh"
fi

if ((BUILD)); then
    command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust (https://rustup.rs)"
    bins=()
    for b in "${BINARIES[@]}"; do bins+=(--bin "$b"); done
    say "building: cargo build --release -p rlb -p rlb-demo ${bins[*]}"
    say "  (the first build takes about 9 minutes on 2 cores; later runs: seconds)"
    (cd "$ROOT" && cargo build --release -p rlb -p rlb-demo "${bins[@]}") || die "build failed"
fi
for b in "${BINARIES[@]}"; do
    [[ -x $BIN/$b ]] || die "$BIN/$b missing: run without --no-build (or give --bin-dir)"
done
SETSID=
command -v setsid >/dev/null 2>&1 && SETSID=setsid

WORK=$(mktemp -d "${TMPDIR:-/tmp}/rlb-demo.XXXXXX")
mkfifo "$WORK/nap"
exec {NAP_FD}<>"$WORK/nap"

# Ports other than the defaults: a copy of the config with them swapped in (one pass, so
# a new port that equals another default is not swapped twice).
if [[ "$HTTP_PORT $ADMIN_PORT ${CHAT_PORTS[*]}" != "${DEFAULT_PORTS[*]}" ]]; then
    new=("$HTTP_PORT" "$ADMIN_PORT" "${CHAT_PORTS[@]}")
    script=()
    for i in "${!DEFAULT_PORTS[@]}"; do script+=(-e "s/127\.0\.0\.1:${DEFAULT_PORTS[i]}\"/127.0.0.1:@$i@\"/g"); done
    for i in "${!DEFAULT_PORTS[@]}"; do script+=(-e "s/127\.0\.0\.1:@$i@\"/127.0.0.1:${new[i]}\"/g"); done
    sed "${script[@]}" "$CONFIG" >"$WORK/$(basename "$CONFIG")"
    CONFIG=$WORK/$(basename "$CONFIG")
fi

# --- start: the chat servers first, rlb once they answer (so no check fails at start) ----

CHAT_ARGS=()
if [[ $MODE == full ]]; then
    say "starting a MariaDB primary (:$PRIMARY_PORT) and replicas (:${REPLICA_PORTS[0]}, :${REPLICA_PORTS[1]})"
    # The watchdog stops the cluster even if this script is killed with SIGKILL. If the
    # cluster fails, its logs are copied to $WORK/mariadb, which is kept.
    cluster_env=$(RLB_MARIADB_OWNER_PID=$$ RLB_MARIADB_KEEP_LOGS="$WORK/mariadb" \
        "$ROOT/scripts/mariadb-cluster.sh" start "$PRIMARY_PORT" "${REPLICA_PORTS[@]}" \
        2> >(tee -a "$WORK/mariadb-cluster.log" >&2)) ||
        die "the MariaDB cluster did not start (its logs: $WORK/mariadb-cluster.log, $WORK/mariadb/)"
    CLUSTER_BASE=$(sed -n 's/^RLB_MARIADB_BASE=//p' <<<"$cluster_env")
    export RLB_MYSQL_PASSWORD=monitorpass   # rlb_monitor, made by mariadb-cluster.sh
    CHAT_ARGS=(--amqp "$AMQP_URL" --mysql-read "mysql://root@127.0.0.1:$MYSQL_PORT/rlbtest")
    start history-writer 1 "$BIN/history-writer" --amqp "$AMQP_URL" \
        --mysql-primary "mysql://root@127.0.0.1:$PRIMARY_PORT/rlbtest"
else
    CHAT_ARGS=(--db "$WORK/chat.sqlite")
fi

for i in "${!CHAT_PORTS[@]}"; do
    start "s$((i + 1))" 1 "$BIN/chat-server" --name "s$((i + 1))" --port "${CHAT_PORTS[i]}" "${CHAT_ARGS[@]}"
done
for i in "${!CHAT_PORTS[@]}"; do
    wait_for "s$((i + 1))" "${CHAT_PORTS[i]}" /healthz 20
done

start rlb 0 "$BIN/rlb" --config "$CONFIG"
wait_for rlb "$ADMIN_PORT" /status 10
wait_for rlb "$HTTP_PORT" / 10

cat <<EOF_INFO

rlb demo ($MODE mode) is running.

  chat page    http://127.0.0.1:$HTTP_PORT/            open it in two tabs; ?user=ann&room=lobby joins at once
  rlb admin    http://127.0.0.1:$ADMIN_PORT/            status page; /status /events /metrics, POST /reload
  rlb          pid $(pid_of rlb), config $CONFIG
  chat servers s1 :${CHAT_PORTS[0]} (pid $(pid_of s1))  s2 :${CHAT_PORTS[1]} (pid $(pid_of s2))  s3 :${CHAT_PORTS[2]} (pid $(pid_of s3))

  watch a failover:  kill -9 $(pid_of s1)        (s1; the page reconnects through rlb; the demo starts s1 again after $RESTART_DELAY s)
                     curl -X POST http://127.0.0.1:${CHAT_PORTS[1]}/admin/fail   (s2 fails its checks; /admin/recover)
                     curl http://127.0.0.1:$ADMIN_PORT/events
  logs:              $WORK/*.log

Ctrl-C stops everything.
EOF_INFO

# Runs until Ctrl-C or until rlb itself exits (its supervisor does not restart it).
while [[ ! -e $WORK/rlb.status ]]; do nap 1; done
die "rlb exited; its log: $WORK/rlb.log"
