#!/usr/bin/env bash
# Load runs against the chat demo's http listener (config/demo.toml), and a reload
# experiment: SIGHUP to rlb every 100 ms while the load runs.
#
#   bench/demo-load.sh [--duration S] [--no-build] [--out FILE]
#
# Starts its own stack on the demo's loopback ports (rlb on 8080/9901, chat servers
# 9001-9003, embedded mode), so the demo must not be running. Then, each run bounded by
# --duration (default 10 s):
#   1. siege -c 50 -t SS -b http://127.0.0.1:8080/
#   2. wrk -t2 -c64 -dSs --latency http://127.0.0.1:8080/
#   3. wrk as in 2 while rlb gets SIGHUP every 100 ms
#   4. siege as in 1 while rlb gets SIGHUP every 100 ms
# Every reload swaps the file between least_conn and round_robin, so each one builds a
# new routing snapshot. Prints one table (and writes it to --out if given) with requests,
# failed requests and reloads. Installs nothing: says what is missing. Everything it
# starts is stopped by pid on exit.
set -euo pipefail

ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
readonly ROOT
DURATION=10
BUILD=1
OUT=
while (($#)); do
    case $1 in
        --duration) DURATION=${2:?}; shift ;;
        --no-build) BUILD=0 ;;
        --out) OUT=${2:?}; shift ;;
        -h | --help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "demo-load.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
    shift
done
[[ $DURATION =~ ^[0-9]+$ ]] && ((DURATION >= 1 && DURATION <= 120)) || { echo "demo-load.sh: --duration must be 1..120 seconds" >&2; exit 2; }

readonly HTTP_PORT=8080 ADMIN_PORT=9901 CHAT_PORTS=(9001 9002 9003)
readonly URL=http://127.0.0.1:$HTTP_PORT/
readonly RELOAD_EVERY_US=100000
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release

say() { printf 'demo-load: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

missing=()
for tool in siege wrk; do command -v "$tool" >/dev/null 2>&1 || missing+=("$tool"); done
if ((${#missing[@]})); then
    die "missing: ${missing[*]} (install with: apt-get update && apt-get install -y ${missing[*]})"
fi
for port in "$HTTP_PORT" "$ADMIN_PORT" "${CHAT_PORTS[@]}"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        die "port $port is in use (is scripts/demo.sh running?); this script starts its own stack there"
    fi
done
if ((BUILD)); then
    command -v cargo >/dev/null 2>&1 || die "cargo not found"
    (cd "$ROOT" && cargo build --release -p rlb -p rlb-demo) || die "build failed"
fi
for b in rlb chat-server; do [[ -x $BIN/$b ]] || die "$BIN/$b missing (run without --no-build)"; done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/rlb-demo-load.XXXXXX")
PIDS=()
cleanup() {
    local rc=$? pid deadline
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    deadline=$((SECONDS + 8))
    for pid in "${PIDS[@]}"; do
        while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if ((rc == 0)); then rm -rf -- "$WORK"; else say "logs kept in $WORK"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

http_ok() {
    local status
    status=$(
        exec 2>/dev/null 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
        printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$2" >&3
        read -r -t 2 _ code _ <&3 && echo "$code"
    ) 2>/dev/null || return 1
    [[ $status == 200 ]]
}
http_get() {
    (
        exec 2>/dev/null 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
        printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$2" >&3
        timeout 5 cat <&3
    ) 2>/dev/null
}
wait_ok() {
    local deadline=$((SECONDS + 20))
    until http_ok "$1" "$2"; do
        ((SECONDS < deadline)) || die "nothing answered GET $2 on port $1 (logs: $WORK)"
        sleep 0.1
    done
}

# The config reloads swap between: the demo's file (least_conn) and round_robin.
cp "$ROOT/config/demo.toml" "$WORK/a.toml"
sed 's/^balance = "least_conn"/balance = "round_robin"/' "$ROOT/config/demo.toml" > "$WORK/b.toml"
grep -q 'round_robin' "$WORK/b.toml" || die "config/demo.toml has no least_conn balance line to swap"
cp "$WORK/a.toml" "$WORK/rlb.toml"

for i in "${!CHAT_PORTS[@]}"; do
    "$BIN/chat-server" --name "s$((i + 1))" --port "${CHAT_PORTS[i]}" --db "$WORK/chat.sqlite" \
        </dev/null >>"$WORK/s$((i + 1)).log" 2>&1 &
    PIDS+=($!)
done
RLB_LOG=warn "$BIN/rlb" --config "$WORK/rlb.toml" </dev/null >>"$WORK/rlb.log" 2>&1 &
RLB_PID=$!
PIDS+=("$RLB_PID")
for port in "${CHAT_PORTS[@]}"; do wait_ok "$port" /healthz; done
wait_ok "$ADMIN_PORT" /status
wait_ok "$HTTP_PORT" /

# reloader SECONDS: SIGHUP to rlb every 100 ms for SECONDS, swapping the file each time.
# Paced by the clock (bash's EPOCHREALTIME), so the copying does not stretch the period.
reloader() {
    local start_us now_us wait_us n=0 end_us
    start_us=${EPOCHREALTIME/./}
    end_us=$((start_us + $1 * 1000000))
    while kill -0 "$RLB_PID" 2>/dev/null; do
        now_us=${EPOCHREALTIME/./}
        ((now_us < end_us)) || break
        if ((n % 2)); then cp "$WORK/a.toml" "$WORK/next.toml"; else cp "$WORK/b.toml" "$WORK/next.toml"; fi
        mv -f "$WORK/next.toml" "$WORK/rlb.toml"
        kill -HUP "$RLB_PID"
        n=$((n + 1))
        now_us=${EPOCHREALTIME/./}
        wait_us=$((start_us + n * RELOAD_EVERY_US - now_us))
        if ((wait_us > 0)); then sleep "$(printf '%d.%06d' $((wait_us / 1000000)) $((wait_us % 1000000)))"; fi
    done
    echo "$n" > "$WORK/reloads.sent"
}

count_events() { http_get "$ADMIN_PORT" /events | grep -c "\"event\":\"$1\"" || true; }

cat > "$WORK/siegerc" <<'RC'
verbose = false
logging = false
parser = false
protocol = HTTP/1.1
RC

ROWS=()
row() { ROWS+=("$(printf '%-28s %10s %9s %9s %8s %10s' "$@")"); }
row "run" "requests" "failed" "non-2xx" "reloads" "req/s"

# run_siege LABEL RELOAD(0|1)
run_siege() {
    local label=$1 reload=$2 out rpid=
    local ok_before failed_before
    ok_before=$(count_events reload_ok); failed_before=$(count_events reload_failed)
    say "$label: siege -c 50 -t ${DURATION}S -b $URL"
    if ((reload)); then reloader "$DURATION" & rpid=$!; fi
    out=$(timeout $((DURATION + 30)) siege -R "$WORK/siegerc" -c 50 -t "${DURATION}S" -b -j "$URL" 2>"$WORK/siege.err") || true
    if [[ -n $rpid ]]; then wait "$rpid"; fi
    echo "$out" > "$WORK/${label//[^a-zA-Z0-9]/_}.siege.json"
    local tx ok failed rate reloads=-
    tx=$(sed -n 's/.*"transactions":[[:space:]]*\([0-9]*\).*/\1/p' <<<"$out" | head -1)
    ok=$(sed -n 's/.*"successful_transactions":[[:space:]]*\([0-9]*\).*/\1/p' <<<"$out" | head -1)
    failed=$(sed -n 's/.*"failed_transactions":[[:space:]]*\([0-9]*\).*/\1/p' <<<"$out" | head -1)
    rate=$(sed -n 's/.*"transaction_rate":[[:space:]]*\([0-9.]*\).*/\1/p' <<<"$out" | head -1)
    [[ -n $tx ]] || { cat "$WORK/siege.err" >&2; die "siege printed no result"; }
    if ((reload)); then
        reloads="$(($(count_events reload_ok) - ok_before))/$(cat "$WORK/reloads.sent")"
        local bad=$(($(count_events reload_failed) - failed_before))
        ((bad == 0)) || reloads="$reloads ($bad bad)"
    fi
    row "$label" "$tx" "$failed" "$((tx - ok))" "$reloads" "$rate"
}

# run_wrk LABEL RELOAD(0|1)
run_wrk() {
    local label=$1 reload=$2 out rpid=
    local ok_before
    ok_before=$(count_events reload_ok)
    say "$label: wrk -t2 -c64 -d${DURATION}s --latency $URL"
    if ((reload)); then reloader "$DURATION" & rpid=$!; fi
    out=$(timeout $((DURATION + 30)) wrk -t2 -c64 -d"${DURATION}s" --latency "$URL") || true
    if [[ -n $rpid ]]; then wait "$rpid"; fi
    echo "$out" > "$WORK/${label//[^a-zA-Z0-9]/_}.wrk.txt"
    local total non2xx sock rate reloads=-
    total=$(sed -n 's/^[[:space:]]*\([0-9]*\) requests in.*/\1/p' <<<"$out")
    non2xx=$(sed -n 's/.*Non-2xx or 3xx responses:[[:space:]]*\([0-9]*\).*/\1/p' <<<"$out")
    sock=$(sed -n 's/.*Socket errors: connect \([0-9]*\), read \([0-9]*\), write \([0-9]*\), timeout \([0-9]*\).*/\1 \2 \3 \4/p' <<<"$out")
    rate=$(sed -n 's/^Requests\/sec:[[:space:]]*\([0-9.]*\).*/\1/p' <<<"$out")
    [[ -n $total ]] || { echo "$out" >&2; die "wrk printed no result"; }
    local errors=0 n
    for n in $sock; do errors=$((errors + n)); done
    if ((reload)); then reloads="$(($(count_events reload_ok) - ok_before))/$(cat "$WORK/reloads.sent")"; fi
    row "$label" "$total" "$errors" "${non2xx:-0}" "$reloads" "$rate"
    if [[ -n $sock ]]; then say "$label: wrk socket errors (connect read write timeout): $sock"; fi
}

run_siege siege 0
run_wrk wrk 0
run_wrk "wrk + SIGHUP/100ms" 1
run_siege "siege + SIGHUP/100ms" 1

kill -0 "$RLB_PID" 2>/dev/null || die "rlb died during the runs (log: $WORK/rlb.log)"
{
    echo
    echo "demo load, $(date -u +%FT%TZ), ${DURATION} s per run, $URL (GET /, the chat page), 3 chat servers"
    printf '%s\n' "${ROWS[@]}"
    echo "failed: siege's failed transactions; wrk's socket errors (connect+read+write+timeout)."
    echo "non-2xx: answers that were not 2xx/3xx. reloads: reload_ok events in rlb's /events during the run / SIGHUPs sent"
    echo "(signals sent while a reload is under way coalesce into one)."
} | tee ${OUT:+"$OUT"}
