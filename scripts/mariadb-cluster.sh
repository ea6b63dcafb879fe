#!/usr/bin/env bash
# A throwaway MariaDB primary + 2 replicas for rlb's integration tests.
#
#   mariadb-cluster.sh start PRIMARY_PORT REPLICA1_PORT REPLICA2_PORT
#       prints KEY=VALUE lines only: RLB_MARIADB_BASE, RLB_MARIADB_{PRIMARY,REPLICA1,REPLICA2}_{PORT,PID}
#   mariadb-cluster.sh stop    BASE            SIGCONT + SIGTERM by pid, SIGKILL after 10 s, rm -rf BASE
#   mariadb-cluster.sh kill    BASE N          SIGKILL node N (0 primary, 1 and 2 replicas)
#   mariadb-cluster.sh restart BASE N          start node N again with the same command line, wait until ready
#   mariadb-cluster.sh freeze  BASE N          SIGSTOP: TCP connect still succeeds, no greeting ever
#   mariadb-cluster.sh thaw    BASE N          SIGCONT
#   mariadb-cluster.sh lag     BASE N SECONDS  replica N reports Seconds_Behind_Master >= SECONDS (0: catch up)
#   mariadb-cluster.sh sql     BASE N 'QUERY'  runs QUERY as root over node N's socket, tab-separated rows
#                                              (RLB_MARIADB_SQL_HEADERS=1 adds the column names)
#   mariadb-cluster.sh status  BASE
#
# Environment:
#   RLB_MARIADB_TMP        where BASE is made (default /dev/shm if it has room, else /tmp)
#   RLB_MARIADB_TEMPLATE   a directory caching the initial datadir across runs (safe to share
#                          between parallel starts: each version is published with one rename)
#   RLB_MARIADB_OWNER_PID  if set, a watchdog stops the cluster once that process is gone
#   RLB_MARIADB_KEEP_LOGS  if set, a failed start copies its logs (mariadb-install-db's, each
#                          node's error.log and stdio.log) there before removing BASE
#
# Users on every node: root (no password), repl/replpass (REPLICATION SLAVE),
# rlb_check (no password, no privileges), rlb_monitor/monitorpass (REPLICATION CLIENT,
# SLAVE MONITOR); database rlbtest. All state lives under BASE, so every subcommand works
# from a fresh shell. Nothing outside BASE (and the template dir) is read or written; the
# machine's own MariaDB and /etc/mysql are never touched.
#
# Exit status: 0 ok, 1 failure, 2 usage, 3 a port is already in use (the caller may retry
# with other ports).
set -euo pipefail

SELF=$(readlink -f -- "$0")
readonly SELF
readonly MARKER=rlb-mariadb-cluster
readonly READY_TIMEOUT_S=30
readonly STOP_GRACE_S=10
readonly NODE_NAMES=(PRIMARY REPLICA1 REPLICA2)

die() { echo "mariadb-cluster: $*" >&2; exit 1; }
usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

find_bin() {
    local name=$1 dir
    if command -v "$name" >/dev/null 2>&1; then command -v "$name"; return; fi
    for dir in /usr/sbin /usr/bin /usr/local/sbin /usr/local/bin; do
        if [[ -x $dir/$name ]]; then echo "$dir/$name"; return; fi
    done
    return 1
}

need_bins() {
    MARIADBD=$(find_bin mariadbd) || die "mariadbd not found (install mariadb-server-core: scripts/install-test-deps.sh)"
    MARIADB=$(find_bin mariadb) || die "mariadb client not found (install mariadb-client)"
    MARIADB_ADMIN=$(find_bin mariadb-admin) || die "mariadb-admin not found (install mariadb-client)"
}

# --- process state ----------------------------------------------------------------------

# State letter of PID from /proc (R, S, D, T, t, Z, ...), empty if gone. A SIGKILLed
# mariadbd whose parent has exited stays a zombie until PID 1 reaps it (about 1.5 s here),
# and kill -0 succeeds on a zombie, so state is read from /proc instead.
proc_state() {
    local line
    [[ -r /proc/$1/status ]] || return 0
    while IFS= read -r line; do
        if [[ $line == State:* ]]; then
            line=${line#State:}
            line=${line#"${line%%[![:space:]]*}"}
            echo "${line:0:1}"
            return 0
        fi
    done < "/proc/$1/status" 2>/dev/null || true
}

node_dir() { echo "$BASE/node$1"; }

node_pid() { cat "$(node_dir "$1")/pid" 2>/dev/null || true; }

# True if node N's recorded pid is a live (not zombie) mariadbd of this BASE. The
# command-line check guards against signalling an unrelated process that reused the pid.
node_alive() {
    local pid state
    pid=$(node_pid "$1")
    [[ -n $pid ]] || return 1
    state=$(proc_state "$pid")
    [[ -n $state && $state != Z && $state != X ]] || return 1
    tr '\0' '\n' < "/proc/$pid/cmdline" 2>/dev/null | grep -qxF -- "--datadir=$(node_dir "$1")/data"
}

node_frozen() {
    local state
    node_alive "$1" || return 1
    state=$(proc_state "$(node_pid "$1")")
    [[ $state == T || $state == t ]]
}

# Wait until node N's process is gone (or a zombie); SIGKILL after $2 seconds.
wait_gone() {
    local n=$1 pid deadline killed=0
    pid=$(node_pid "$n")
    deadline=$((SECONDS + $2))
    while node_alive "$n"; do
        if ((SECONDS >= deadline)); then
            ((killed == 0)) || die "node $n (pid $pid) survives SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            killed=1
            deadline=$((SECONDS + 5))
        fi
        sleep 0.02
    done
}

# --- ports ------------------------------------------------------------------------------

port_in_use() {
    # A connect succeeds on any listening socket, even one whose process is stopped.
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    if command -v ss >/dev/null 2>&1 && [[ -n $(ss -Hltn "sport = :$1" 2>/dev/null) ]]; then
        return 0
    fi
    return 1
}

check_port() {
    [[ $1 =~ ^[0-9]+$ ]] && (($1 >= 1 && $1 <= 65535)) || { echo "mariadb-cluster: bad port '$1'" >&2; exit 2; }
    [[ $1 != 3306 ]] || { echo "mariadb-cluster: port 3306 belongs to the machine's own MariaDB" >&2; exit 3; }
    if port_in_use "$1"; then
        echo "mariadb-cluster: port $1 is already in use" >&2
        exit 3
    fi
}

# --- clients ----------------------------------------------------------------------------

# Run SQL as root over node N's socket; rows tab-separated, no column names.
node_sql() {
    local n=$1 query=$2 headers=(-N)
    [[ ${RLB_MARIADB_SQL_HEADERS:-0} == 1 ]] && headers=()
    "$MARIADB" --no-defaults --connect-timeout=5 -S "$(node_dir "$n")/mysqld.sock" -uroot -B "${headers[@]}" -e "$query"
}

node_ping() {
    "$MARIADB_ADMIN" --no-defaults --connect-timeout=1 -S "$(node_dir "$1")/mysqld.sock" -uroot ping >/dev/null 2>&1
}

# --- datadir ----------------------------------------------------------------------------

users_sql() {
    # --extra-file runs in bootstrap mode with grants disabled; CREATE USER fails there
    # (ERROR 1290) unless privileges are loaded first.
    cat <<'SQL'
FLUSH PRIVILEGES;
CREATE USER IF NOT EXISTS 'root'@'127.0.0.1';
GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
CREATE USER 'repl'@'127.0.0.1' IDENTIFIED BY 'replpass';
GRANT REPLICATION SLAVE ON *.* TO 'repl'@'127.0.0.1';
CREATE USER 'rlb_check'@'127.0.0.1';
CREATE USER 'rlb_monitor'@'127.0.0.1' IDENTIFIED BY 'monitorpass';
-- Since MariaDB 10.5.9 REPLICATION CLIENT is an alias of BINLOG MONITOR and no longer
-- allows SHOW SLAVE STATUS; SLAVE MONITOR does. MySQL 8 needs REPLICATION CLIENT.
GRANT REPLICATION CLIENT, SLAVE MONITOR ON *.* TO 'rlb_monitor'@'127.0.0.1';
CREATE DATABASE rlbtest;
CREATE TABLE rlbtest.probe (id INT PRIMARY KEY, v VARCHAR(64)) ENGINE=InnoDB;
CREATE TABLE rlbtest.lag_marker (id INT AUTO_INCREMENT PRIMARY KEY, note VARCHAR(64)) ENGINE=InnoDB;
SQL
}

install_db() {
    local dest=$1 extra=$2 install
    install=$(find_bin mariadb-install-db) || die "mariadb-install-db not found (install mariadb-server-core)"
    users_sql > "$extra"
    # A private tmpdir: parallel bootstraps sharing /tmp collide on their temporary
    # table files ("Unknown table 'mysql.tmp_user_sys'", seen with 6 at once).
    mkdir -p "$dest.tmp"
    if ! "$install" --no-defaults --datadir="$dest" --tmpdir="$dest.tmp" --user=root \
        --auth-root-authentication-method=normal --skip-test-db --skip-name-resolve \
        --innodb-log-file-size=4M --extra-file="$extra" >"$dest.install.log" 2>&1; then
        cat "$dest.install.log" >&2
        echo "mariadb-cluster: mariadb-install-db failed" >&2
        return 1
    fi
    rm -rf -- "$dest.install.log" "$dest.tmp"
}

# Prints the path of a complete initial datadir. With RLB_MARIADB_TEMPLATE, the datadir is
# kept in TEMPLATE/<key>, where the key covers the server version and this script, so a
# stale template is never used. It is built beside its final place and published with a
# single rename(2): a parallel start either sees the finished directory or none; the loser
# of a race throws its copy away.
initial_datadir() {
    local template=${RLB_MARIADB_TEMPLATE:-} key final tmp
    if [[ -z $template ]]; then
        install_db "$BASE/template" "$BASE/users.sql" || exit 1
        echo "$BASE/template"
        return
    fi
    key=$( { "$MARIADBD" --no-defaults --version; declare -f users_sql install_db; } | cksum | cut -d' ' -f1)
    final=$template/v$key
    if [[ ! -d $final ]]; then
        mkdir -p "$template"
        # Parallel first starts wait for one builder instead of all building (the lock
        # only saves work; the rename alone keeps readers safe).
        if command -v flock >/dev/null 2>&1; then
            exec 9>>"$template/.lock"
            flock -w 120 9 || true
        fi
        if [[ ! -d $final ]]; then
            tmp=$(mktemp -d "$template/.building.XXXXXX")
            install_db "$tmp/data" "$tmp/users.sql" ||
                { cp -- "$tmp/data.install.log" "$BASE/install.log" 2>/dev/null; rm -rf -- "$tmp"; exit 1; }
            if ! mv -T "$tmp/data" "$final" 2>/dev/null; then
                [[ -d $final ]] || die "cannot publish template $final"
            fi
            rm -rf -- "$tmp"
        fi
        exec 9>&-
    fi
    echo "$final"
}

# --- nodes ------------------------------------------------------------------------------

write_cmdline() {
    local n=$1 port=$2 dir args
    dir=$(node_dir "$n")
    # --no-defaults must come first; without --user=root mariadbd refuses to run as root.
    args=(
        "$MARIADBD" --no-defaults --user=root --datadir="$dir/data"
        --bind-address=127.0.0.1 --port="$port" --socket="$dir/mysqld.sock"
        --pid-file="$dir/mysqld.pid" --log-error="$dir/error.log" --tmpdir="$dir/tmp"
        --server-id=$((n + 1))
        --skip-name-resolve --innodb-buffer-pool-size=16M --innodb-log-file-size=4M
        --innodb-flush-log-at-trx-commit=2 --innodb-doublewrite=0
        --innodb-buffer-pool-load-at-startup=0 --innodb-buffer-pool-dump-at-shutdown=0
        --performance-schema=0 --key-buffer-size=1M --aria-pagecache-buffer-size=8M
        --max-connections=100 --max-connect-errors=1000000
    )
    if ((n == 0)); then
        args+=(--log-bin=mysql-bin --binlog-format=ROW)
    else
        args+=(--read-only --relay-log=relay-bin)
    fi
    printf '%s\n' "${args[@]}" > "$dir/cmdline"
    echo "$port" > "$dir/port"
}

spawn_node() {
    local n=$1 dir args
    dir=$(node_dir "$n")
    mapfile -t args < "$dir/cmdline"
    rm -f "$dir/mysqld.sock" "$dir/mysqld.pid"
    "${args[@]}" </dev/null >>"$dir/stdio.log" 2>&1 &
    echo $! > "$dir/pid"
}

wait_ready() {
    local n=$1 dir deadline
    dir=$(node_dir "$n")
    deadline=$((SECONDS + READY_TIMEOUT_S))
    # mariadbd creates its socket once it accepts connections; test for it before paying
    # for a client process.
    until [[ -S $dir/mysqld.sock ]] && node_ping "$n"; do
        if ! node_alive "$n"; then
            tail -n 20 "$dir/stdio.log" "$dir/error.log" >&2 2>/dev/null || true
            if grep -qi 'address already in use' "$dir/error.log" 2>/dev/null; then
                echo "mariadb-cluster: node $n: port $(cat "$dir/port") is already in use" >&2
                exit 3
            fi
            die "node $n exited during startup (log: $dir/error.log)"
        fi
        if ((SECONDS >= deadline)); then
            tail -n 20 "$dir/error.log" >&2 2>/dev/null || true
            die "node $n not ready after ${READY_TIMEOUT_S}s"
        fi
        sleep 0.02
    done
}

primary_gtid_pos() { node_sql 0 'SELECT @@GLOBAL.gtid_binlog_pos'; }

# Wait until replica N has applied everything the primary has logged.
replica_catch_up() {
    local n=$1 pos got
    pos=$(primary_gtid_pos)
    got=$(node_sql "$n" "SELECT MASTER_GTID_WAIT('$pos', 20)")
    [[ $got == 0 ]] || die "replica $n did not reach GTID $pos within 20 s (MASTER_GTID_WAIT=$got)"
}

print_env() {
    local n
    echo "RLB_MARIADB_BASE=$BASE"
    for n in 0 1 2; do
        echo "RLB_MARIADB_${NODE_NAMES[n]}_PORT=$(cat "$(node_dir "$n")/port")"
        echo "RLB_MARIADB_${NODE_NAMES[n]}_PID=$(node_pid "$n")"
    done
}

load_base() {
    BASE=${1:-}
    [[ -n $BASE ]] || usage
    BASE=${BASE%/}
    [[ -f $BASE/$MARKER ]] || die "$BASE is not a cluster made by this script"
}

check_node() {
    [[ $1 =~ ^[012]$ ]] || { echo "mariadb-cluster: node must be 0 (primary), 1 or 2, not '$1'" >&2; exit 2; }
}

# Copies the logs that explain a failed start into $RLB_MARIADB_KEEP_LOGS, if set, before
# BASE is removed: without them the caller is left with "node 0 exited" and nothing to read.
keep_logs() {
    local dest=${RLB_MARIADB_KEEP_LOGS:-} f rel
    [[ -n $dest && -d $BASE ]] || return 0
    mkdir -p -- "$dest" || return 0
    while IFS= read -r -d '' f; do
        rel=${f#"$BASE"/}
        mkdir -p -- "$dest/$(dirname -- "$rel")" && cp -- "$f" "$dest/$rel" || true
    done < <(find "$BASE" \( -name data -o -name tmp -o -name template \) -prune -o -type f -name '*.log' -print0 2>/dev/null)
    echo "mariadb-cluster: logs of the failed start kept in $dest" >&2
}

# --- subcommands ------------------------------------------------------------------------

stop_nodes() {
    local n pid
    for n in 0 1 2; do
        pid=$(node_pid "$n")
        if [[ -n $pid ]] && node_alive "$n"; then
            kill -CONT "$pid" 2>/dev/null || true
            kill -TERM "$pid" 2>/dev/null || true
        fi
    done
    for n in 0 1 2; do
        wait_gone "$n" "$STOP_GRACE_S"
    done
}

stop_watchdog() {
    local pid
    pid=$(cat "$BASE/watchdog.pid" 2>/dev/null || true)
    [[ -n $pid && $pid != "$$" ]] || return 0
    if tr '\0' '\n' < "/proc/$pid/cmdline" 2>/dev/null | grep -qxF -- "$BASE"; then
        kill -TERM "$pid" 2>/dev/null || true
    fi
}

cmd_stop() {
    load_base "${1:-}"
    need_bins
    stop_watchdog
    stop_nodes
    rm -rf -- "$BASE"
}

# A separate process whose command line names BASE, which stop_watchdog checks before
# signalling it. It stops the cluster when the owner (a test process that was killed
# before it could run its teardown) is gone.
start_watchdog() {
    local owner=$1
    [[ $owner =~ ^[0-9]+$ ]] || die "RLB_MARIADB_OWNER_PID must be a pid, not '$owner'"
    "$SELF" _watchdog "$BASE" "$owner" </dev/null >>"$BASE/watchdog.log" 2>&1 &
    echo $! > "$BASE/watchdog.pid"
}

cmd_watchdog() {
    load_base "$1"
    local owner=$2 state
    while :; do
        state=$(proc_state "$owner")
        [[ -n $state && $state != Z ]] || break
        sleep 1
    done
    cmd_stop "$BASE"
}

cmd_start() {
    (($# == 3)) || usage
    local ports=("$@") tmp avail n template
    [[ $1 != "$2" && $1 != "$3" && $2 != "$3" ]] || { echo "mariadb-cluster: ports must differ" >&2; exit 2; }
    for n in 0 1 2; do check_port "${ports[n]}"; done
    need_bins

    tmp=${RLB_MARIADB_TMP:-}
    if [[ -z $tmp ]]; then
        tmp=/tmp
        if [[ -d /dev/shm && -w /dev/shm ]]; then
            avail=$(df -Pk /dev/shm 2>/dev/null | awk 'NR == 2 { print $4 }')
            # 100 MB per cluster; keep room for a few running at once.
            if [[ ${avail:-0} =~ ^[0-9]+$ ]] && ((avail > 1024 * 1024)); then tmp=/dev/shm; fi
        fi
    fi
    BASE=$(mktemp -d "$tmp/rlb-mariadb.XXXXXX")
    touch "$BASE/$MARKER"
    # A socket path longer than sun_path (108 bytes) would fail late and obscurely.
    ((${#BASE} + 20 < 108)) || { rm -rf -- "$BASE"; die "RLB_MARIADB_TMP path too long for a unix socket: $BASE"; }
    trap 'rc=$?; if ((rc != 0)); then stop_nodes >/dev/null 2>&1 || true; keep_logs; rm -rf -- "$BASE"; fi; exit $rc' EXIT

    template=$(initial_datadir)
    for n in 0 1 2; do
        mkdir -p "$(node_dir "$n")/tmp"
        cp -a "$template" "$(node_dir "$n")/data"
        write_cmdline "$n" "${ports[n]}"
    done
    rm -rf -- "$BASE/template" "$BASE/users.sql"
    for n in 0 1 2; do spawn_node "$n"; done
    for n in 0 1 2; do wait_ready "$n"; done

    for n in 1 2; do
        node_sql "$n" "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=${ports[0]}, \
MASTER_USER='repl', MASTER_PASSWORD='replpass', MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1; START SLAVE;"
    done
    node_sql 0 "INSERT INTO rlbtest.probe VALUES (1, 'replicated')"
    for n in 1 2; do
        replica_catch_up "$n"
        [[ $(node_sql "$n" 'SELECT v FROM rlbtest.probe WHERE id = 1') == replicated ]] \
            || die "replica $n does not have the row written on the primary"
    done

    if [[ -n ${RLB_MARIADB_OWNER_PID:-} ]]; then start_watchdog "$RLB_MARIADB_OWNER_PID"; fi
    print_env | tee "$BASE/env"
    trap - EXIT
}

cmd_kill() {
    (($# == 2)) || usage
    load_base "$1"; check_node "$2"
    local pid
    pid=$(node_pid "$2")
    node_alive "$2" || die "node $2 is not running"
    kill -KILL "$pid"
    wait_gone "$2" 5
}

cmd_restart() {
    (($# == 2)) || usage
    load_base "$1"; check_node "$2"
    need_bins
    if node_alive "$2"; then
        kill -CONT "$(node_pid "$2")" 2>/dev/null || true
        kill -TERM "$(node_pid "$2")" 2>/dev/null || true
        wait_gone "$2" "$STOP_GRACE_S"
    fi
    check_port "$(cat "$(node_dir "$2")/port")"
    spawn_node "$2"
    wait_ready "$2"
}

cmd_signal() {
    local sig=$1
    shift
    (($# == 2)) || usage
    load_base "$1"; check_node "$2"
    node_alive "$2" || die "node $2 is not running"
    kill "-$sig" "$(node_pid "$2")"
}

cmd_lag() {
    (($# == 3)) || usage
    load_base "$1"; check_node "$2"
    local n=$2 secs=$3 deadline sbm
    ((n != 0)) || { echo "mariadb-cluster: lag applies to a replica (1 or 2)" >&2; exit 2; }
    [[ $secs =~ ^[0-9]+$ ]] || { echo "mariadb-cluster: SECONDS must be a whole number, not '$secs'" >&2; exit 2; }
    need_bins
    # Catch up first: an event still pending would otherwise be delayed, and shown, first.
    node_sql "$n" 'STOP SLAVE; CHANGE MASTER TO MASTER_DELAY=0; START SLAVE'
    replica_catch_up "$n"
    ((secs > 0)) || return 0
    # Seconds_Behind_Master is now minus the timestamp of the event the SQL thread holds:
    # a huge MASTER_DELAY holds the next event, and back-dating that event makes the lag
    # read SECONDS at once and grow by one per second, with both threads running.
    node_sql "$n" 'STOP SLAVE; CHANGE MASTER TO MASTER_DELAY=864000; START SLAVE'
    node_sql 0 "SET timestamp = UNIX_TIMESTAMP() - $secs; INSERT INTO rlbtest.lag_marker (note) VALUES ('lag $secs s on replica $n')"
    deadline=$((SECONDS + 10))
    while :; do
        sbm=$(RLB_MARIADB_SQL_HEADERS=1 node_sql "$n" 'SHOW SLAVE STATUS' | slave_field Seconds_Behind_Master)
        if [[ $sbm =~ ^[0-9]+$ ]] && ((sbm >= secs)); then break; fi
        ((SECONDS < deadline)) || die "replica $n: Seconds_Behind_Master is '$sbm', expected >= $secs"
        sleep 0.05
    done
}

# Reads `SHOW SLAVE STATUS` in batch mode with headers on stdin, prints field $1.
slave_field() {
    awk -F'\t' -v want="$1" 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == want) col = i; next }
                             NR == 2 && col { print $col }'
}

cmd_sql() {
    (($# == 3)) || usage
    load_base "$1"; check_node "$2"
    need_bins
    node_sql "$2" "$3"
}

cmd_status() {
    (($# == 1)) || usage
    load_base "$1"
    need_bins
    local n pid state status io sql sbm
    echo "base $BASE"
    for n in 0 1 2; do
        pid=$(node_pid "$n")
        if node_frozen "$n"; then state=frozen
        elif node_alive "$n"; then state=running
        else state=dead
        fi
        printf '%s %-8s port %s pid %s %s' "$n" "${NODE_NAMES[n],,}" "$(cat "$(node_dir "$n")/port")" "${pid:--}" "$state"
        if [[ $state == running ]] && ((n > 0)); then
            status=$(RLB_MARIADB_SQL_HEADERS=1 node_sql "$n" 'SHOW SLAVE STATUS' 2>/dev/null || true)
            io=$(slave_field Slave_IO_Running <<<"$status")
            sql=$(slave_field Slave_SQL_Running <<<"$status")
            sbm=$(slave_field Seconds_Behind_Master <<<"$status")
            printf ' io %s sql %s seconds_behind_master %s' "${io:-?}" "${sql:-?}" "${sbm:-?}"
        fi
        echo
    done
}

main() {
    local cmd=${1:-}
    (($# > 0)) && shift
    case $cmd in
        start) cmd_start "$@" ;;
        stop) (($# == 1)) || usage; cmd_stop "$1" ;;
        kill) cmd_kill "$@" ;;
        restart) cmd_restart "$@" ;;
        freeze) cmd_signal STOP "$@" ;;
        thaw) cmd_signal CONT "$@" ;;
        lag) cmd_lag "$@" ;;
        sql) cmd_sql "$@" ;;
        status) cmd_status "$@" ;;
        _watchdog) cmd_watchdog "$@" ;;
        *) usage ;;
    esac
}

main "$@"
