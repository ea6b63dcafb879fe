#!/usr/bin/env bash
# bench/run.sh — rlb against nginx, HAProxy and no proxy at all ("direct"), one table.
#
# Installs nothing; says what is missing. Everything runs on loopback. Every process it
# starts is stopped by its pid on exit, and every load run is bounded in time.
# See bench/README.md for what is measured and how.
set -uo pipefail   # no -e: a failed measurement is recorded and the run goes on

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
LIB="$HERE/lib/benchlib.py"

ROUNDS=3
DURATION=10
ONLY=http,tcp,ws,mem,siege,l4
CONTENDERS=direct,rlb,nginx,haproxy
RLB=""
NO_BUILD=0
KEEP=0
OUT="$HERE/RESULTS.md"
MEM_CONNS=5000
SIEGE_REPS=""
ARGV="bench/run.sh $*"

usage() {
  cat <<EOF
usage: bench/run.sh [options]
  --rounds N          rounds per measurement, contenders alternating (default 3)
  --duration S        seconds per load run (default 10); iperf3 runs ceil(S/2) s,
                      the memory test idles S s
  --only LIST         workload groups, comma-separated (default $ONLY):
                        http  = wrk keep-alive + connection-per-request via http listeners
                        tcp   = the same via tcp listeners
                        ws    = WebSocket echo via http listeners
                        mem   = RSS per idle connection, http and tcp listeners
                        siege = siege via http listeners
                        l4    = iperf3 via tcp listeners
  --contenders LIST   comma-separated (default $CONTENDERS)
  --rlb PATH          rlb binary (default target/release/rlb, which is first
                      brought up to date with 'cargo build --release')
  --no-build          do not run 'cargo build --release' for the default rlb
  --mem-conns N       connections held in the memory test (default $MEM_CONNS)
  --siege-reps N      requests per siege user (default 170 x --duration: about
                      --duration seconds at the ~8,500 trans/s of the reference run)
  --out FILE          report file (default bench/RESULTS.md)
  --keep              keep the work directory (configs, raw outputs, logs)
EOF
}

while (($#)); do
  case $1 in
    --rounds) ROUNDS=${2:?}; shift 2 ;;
    --duration) DURATION=${2:?}; shift 2 ;;
    --only) ONLY=${2:?}; shift 2 ;;
    --contenders) CONTENDERS=${2:?}; shift 2 ;;
    --rlb) RLB=${2:?}; shift 2 ;;
    --no-build) NO_BUILD=1; shift ;;
    --mem-conns) MEM_CONNS=${2:?}; shift 2 ;;
    --siege-reps) SIEGE_REPS=${2:?}; shift 2 ;;
    --out) OUT=${2:?}; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
  esac
done

die() { echo "bench: $*" >&2; exit 2; }
log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
in_list() { [[ ",$2," == *",$1,"* ]]; }
qcmd() {  # a command line as one string, quoting the words that need it
  local a out=()
  for a; do
    if [[ $a =~ [^A-Za-z0-9_./:=,@%+-] ]]; then out+=("'${a//\'/\'\\\'\'}'"); else out+=("$a"); fi
  done
  echo "${out[*]}"
}

[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "--rounds wants a positive integer"
[[ $DURATION =~ ^[1-9][0-9]*$ ]] || die "--duration wants a positive integer (seconds)"
[[ $MEM_CONNS =~ ^[1-9][0-9]*$ ]] || die "--mem-conns wants a positive integer"
[[ -z $SIEGE_REPS ]] && SIEGE_REPS=$((DURATION * 170))
[[ $SIEGE_REPS =~ ^[1-9][0-9]*$ ]] || die "--siege-reps wants a positive integer"
for g in ${ONLY//,/ }; do
  in_list "$g" http,tcp,ws,mem,siege,l4 || die "unknown workload group in --only: $g"
done
for c in ${CONTENDERS//,/ }; do
  in_list "$c" direct,rlb,nginx,haproxy || die "unknown contender: $c"
done
want() { in_list "$1" "$ONLY"; }
has_contender() { in_list "$1" "$CONTENDERS"; }

# ------------------------------------------------------------------ what is needed
(( $(nproc) >= 2 )) || die "needs at least 2 cores (proxy on core 1, load and origin on core 0)"
missing=()
need() { command -v "$1" >/dev/null 2>&1 || missing+=("$1"); }
need python3; need taskset; need wrk; need nginx   # nginx is the origin in every run
has_contender haproxy && need haproxy
want siege && need siege
want l4 && need iperf3
{ want ws || want mem || has_contender rlb; } && need cargo
STREAM_MODULE=""
for m in /usr/lib/nginx/modules/ngx_stream_module.so /usr/share/nginx/modules/ngx_stream_module.so; do
  [[ -f $m ]] && STREAM_MODULE=$m && break
done
NGINX_TCP_OK=0
if [[ -n $STREAM_MODULE ]] || { command -v nginx >/dev/null && nginx -V 2>&1 | grep -qE -- '--with-stream( |$)'; }; then
  NGINX_TCP_OK=1
fi
if has_contender nginx && { want tcp || want l4 || want mem; } && ((NGINX_TCP_OK == 0)); then
  missing+=("libnginx-mod-stream")
fi
if ((${#missing[@]})); then
  echo "bench: missing: ${missing[*]}" >&2
  echo "bench: install with: apt-get install nginx haproxy wrk siege iperf3 libnginx-mod-stream" >&2
  echo "bench: (cargo comes from rustup; it builds bench/wsbench and rlb)" >&2
  exit 2
fi

# Open files: the memory test holds MEM_CONNS connections, twice that in a tcp proxy.
hard=$(ulimit -Hn)
[[ $hard == unlimited ]] && hard=1048576
ulimit -n "$hard" 2>/dev/null || true
NOFILE=$(ulimit -n)
if want mem && (( NOFILE < 2 * MEM_CONNS + 1000 )); then
  log "warning: open-files limit $NOFILE is low for --mem-conns $MEM_CONNS (tcp mode needs ~$((2 * MEM_CONNS + 1000)))"
fi

# ------------------------------------------------------------------ processes
WORK=$(mktemp -d "${TMPDIR:-/tmp}/rlb-bench.XXXXXX")
PIDS=()
NOTES="$WORK/notes.txt"; : >"$NOTES"
RESULTS="$WORK/results.jsonl"; : >"$RESULTS"

alive() {  # true while the process exists and is not a zombie
  local s
  s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  s=${s##*) }
  [[ ${s%% *} != Z ]]
}

stop_pid() {  # TERM, up to 5 s, then KILL; reaps it
  local pid=$1 i
  [[ -n $pid ]] || return 0
  if alive "$pid"; then
    kill -TERM "$pid" 2>/dev/null
    for ((i = 0; i < 100; i++)); do alive "$pid" || break; sleep 0.05; done
    if alive "$pid"; then
      log "pid $pid ignored SIGTERM for 5 s; killing it"
      kill -KILL "$pid" 2>/dev/null
    fi
  fi
  wait "$pid" 2>/dev/null
  return 0
}

cleanup() {
  local i
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${PIDS[i]}"; done
  if ((KEEP)); then log "work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_bg LOG CMD...: runs CMD in the background; its pid in BG_PID.
start_bg() {
  local logf=$1; shift
  "$@" >"$logf" 2>&1 </dev/null &
  BG_PID=$!
  PIDS+=("$BG_PID")
}

listening() {  # true when something listens on 127.0.0.1:PORT (or any address)
  # Read /proc instead of connecting: a probe connection upsets iperf3 -s, which takes
  # any connection for a test's control channel.
  local hex
  hex=$(printf '%04X' "$1")
  awk -v p="$hex" '$4 == "0A" { split($2, a, ":"); if (a[2] == p) { found = 1; exit } }
                   END { exit !found }' /proc/net/tcp
}

# wait_ports PID TIMEOUT_S PORT...: true once every port listens, false if PID dies first.
wait_ports() {
  local pid=$1 port deadline=$((SECONDS + $2))
  shift 2
  for port in "$@"; do
    until listening "$port"; do
      alive "$pid" || return 1
      ((SECONDS < deadline)) || return 1
      sleep 0.05
    done
  done
}

tree_pids() {  # a pid and all its descendants
  ps -e -o pid=,ppid= | awk -v root="$1" '
    { parent[$1] = $2; pids[NR] = $1 }
    END { keep[root] = 1; print root
          do { changed = 0
               for (i in pids) { p = pids[i]
                 if (!(p in keep) && (parent[p] in keep)) { keep[p] = 1; print p; changed = 1 } }
          } while (changed) }'
}

rss_kib() {  # summed VmRSS of a process tree
  local total=0 p v
  for p in $(tree_pids "$1"); do
    v=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null)
    total=$((total + ${v:-0}))
  done
  echo "$total"
}

cpu_snap() { grep -E '^cpu[0-9]+ ' /proc/stat >"$1"; }

# ------------------------------------------------------------------ ports and tools
read -r O1 O2 IPERF_PORT WS_PORT RLB_HTTP RLB_TCP NGX_HTTP NGX_TCP HAP_HTTP HAP_TCP \
  < <(python3 "$LIB" ports 10) || die "could not pick free ports"

WSBENCH=""
if want ws || want mem; then
  log "building bench/wsbench (cargo build --release)"
  if ! (cd "$HERE/wsbench" && cargo build --release --quiet) >"$WORK/wsbench-build.log" 2>&1; then
    cat "$WORK/wsbench-build.log" >&2
    die "building bench/wsbench failed"
  fi
  tdir=$(cd "$HERE/wsbench" && cargo metadata --format-version 1 --no-deps 2>/dev/null \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
  WSBENCH="$tdir/release/wsbench"
  [[ -x $WSBENCH ]] || die "no wsbench binary at $WSBENCH"
fi

# ------------------------------------------------------------------ origin
start_origin() {
  local d="$WORK/origin"
  mkdir -p "$d/logs" "$d/tmp"
  cat >"$d/nginx.conf" <<EOF
# The origin: not a contender. A short 200 with keep-alive, on two ports.
worker_processes 1;
worker_rlimit_nofile $NOFILE;
daemon off;
pid $d/nginx.pid;
error_log $d/logs/error.log warn;
events { worker_connections $((NOFILE - 100)); }
http {
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    client_body_temp_path $d/tmp/body;
    proxy_temp_path $d/tmp/proxy;
    fastcgi_temp_path $d/tmp/fastcgi;
    uwsgi_temp_path $d/tmp/uwsgi;
    scgi_temp_path $d/tmp/scgi;
    default_type text/plain;
    server {
        listen 127.0.0.1:$O1 backlog=4096;
        listen 127.0.0.1:$O2 backlog=4096;
        location / { return 200 "ok\n"; }
    }
}
EOF
  start_bg "$d/logs/stderr.log" taskset -c 0 nginx -p "$d/" -e "$d/logs/error.log" -c "$d/nginx.conf"
  ORIGIN_PID=$BG_PID
  wait_ports "$ORIGIN_PID" 10 "$O1" "$O2" || { cat "$d/logs/"* >&2; die "the origin nginx did not start"; }
}

start_iperf_server() {
  start_bg "$WORK/iperf3-server.log" taskset -c 0 iperf3 -s -B 127.0.0.1 -p "$IPERF_PORT"
  IPERF_PID=$BG_PID
  wait_ports "$IPERF_PID" 10 "$IPERF_PORT" || { cat "$WORK/iperf3-server.log" >&2; die "iperf3 -s did not start"; }
}

start_ws_server() {
  start_bg "$WORK/wsbench-server.log" taskset -c 0 "$WSBENCH" server --listen "127.0.0.1:$WS_PORT"
  WS_PID=$BG_PID
  wait_ports "$WS_PID" 10 "$WS_PORT" || { cat "$WORK/wsbench-server.log" >&2; die "wsbench server did not start"; }
}

# ------------------------------------------------------------------ contenders
# Each proxy gets an http listener and a tcp listener. The variant picks the servers:
#   std: http -> origin O1,O2; tcp -> origin O1
#   l4:  tcp -> the iperf3 server
#   ws:  http -> the wsbench echo server
variant_servers() {  # sets HTTP_SERVERS (space-separated host:port) and TCP_SERVER
  case $1 in
    std) HTTP_SERVERS="127.0.0.1:$O1 127.0.0.1:$O2"; TCP_SERVER="127.0.0.1:$O1" ;;
    l4) HTTP_SERVERS="127.0.0.1:$O1 127.0.0.1:$O2"; TCP_SERVER="127.0.0.1:$IPERF_PORT" ;;
    ws) HTTP_SERVERS="127.0.0.1:$WS_PORT"; TCP_SERVER="127.0.0.1:$O1" ;;
  esac
}

write_nginx_conf() {  # DIR
  local d=$1 s servers="" stream=""
  for s in $HTTP_SERVERS; do servers+="        server $s;"$'\n'; done
  if [[ -n $STREAM_MODULE ]]; then
    stream="load_module $STREAM_MODULE;"
  fi
  mkdir -p "$d/tmp"
  cat >"$d/nginx.conf" <<EOF
$stream
worker_processes 1;
worker_rlimit_nofile $NOFILE;
daemon off;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections $((NOFILE - 100)); }
http {
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path $d/tmp/body;
    proxy_temp_path $d/tmp/proxy;
    fastcgi_temp_path $d/tmp/fastcgi;
    uwsgi_temp_path $d/tmp/uwsgi;
    scgi_temp_path $d/tmp/scgi;
    upstream origin {
$servers        keepalive 128;
        keepalive_requests 1000000;
    }
    map \$http_upgrade \$connection_upgrade { default upgrade; '' ''; }
    server {
        listen 127.0.0.1:$NGX_HTTP;
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Host \$http_host;
            proxy_set_header Upgrade \$http_upgrade;
            proxy_set_header Connection \$connection_upgrade;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_set_header X-Forwarded-Host \$host;
            proxy_read_timeout 300s;
        }
    }
}
EOF
  if ((NGINX_TCP_OK)); then
    cat >>"$d/nginx.conf" <<EOF
stream {
    upstream origin_tcp { server $TCP_SERVER; }
    server {
        listen 127.0.0.1:$NGX_TCP;
        proxy_pass origin_tcp;
    }
}
EOF
  fi
}

write_haproxy_cfg() {  # DIR
  local d=$1 s i=0 servers=""
  for s in $HTTP_SERVERS; do i=$((i + 1)); servers+="    server s$i $s"$'\n'; done
  mkdir -p "$d"
  cat >"$d/haproxy.cfg" <<EOF
global
    maxconn 9000
    nbthread 1
    pidfile $d/haproxy.pid

defaults
    maxconn 9000
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    timeout tunnel 1h

frontend http_in
    mode http
    bind 127.0.0.1:$HAP_HTTP
    option forwardfor
    http-request set-header X-Forwarded-Proto http
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    default_backend origin

backend origin
    mode http
    balance roundrobin
    http-reuse always
$servers
frontend tcp_in
    mode tcp
    bind 127.0.0.1:$HAP_TCP
    default_backend origin_tcp

backend origin_tcp
    mode tcp
    server s1 $TCP_SERVER
EOF
}

write_rlb_toml() {  # DIR
  local d=$1 s list=""
  for s in $HTTP_SERVERS; do list+="${list:+, }\"$s\""; done
  mkdir -p "$d"
  cat >"$d/rlb.toml" <<EOF
[global]
workers = 1
access_log = false
shutdown_timeout = "2s"

[listeners.http]
bind = "127.0.0.1:$RLB_HTTP"
mode = "http"
routes = [{ upstream = "origin" }]

[listeners.tcp]
bind = "127.0.0.1:$RLB_TCP"
mode = "tcp"
upstream = "origin_tcp"

[upstreams.origin]
balance = "round_robin"
servers = [$list]

[upstreams.origin_tcp]
balance = "round_robin"
servers = ["$TCP_SERVER"]
EOF
}

RLB_OK=0
START_LOGGED=""

# start_contender NAME VARIANT: sets CUR_PID, CUR_HTTP, CUR_TCP. False if it did not start.
start_contender() {
  local name=$1 variant=$2 d="$WORK/$1-$2" ports cmd
  variant_servers "$variant"
  case $name in
    direct)
      CUR_PID=""
      case $variant in  # the load goes straight to the server the workload measures
        std) CUR_HTTP=$O1; CUR_TCP=$O1 ;;
        l4) CUR_HTTP=$IPERF_PORT; CUR_TCP=$IPERF_PORT ;;
        ws) CUR_HTTP=$WS_PORT; CUR_TCP=$WS_PORT ;;
      esac
      return 0 ;;
    nginx)
      write_nginx_conf "$d"
      CUR_HTTP=$NGX_HTTP; CUR_TCP=$NGX_TCP
      ports="$NGX_HTTP"; ((NGINX_TCP_OK)) && ports+=" $NGX_TCP"
      cmd=(taskset -c 1 nginx -p "$d/" -e "$d/error.log" -c "$d/nginx.conf") ;;
    haproxy)
      write_haproxy_cfg "$d"
      CUR_HTTP=$HAP_HTTP; CUR_TCP=$HAP_TCP; ports="$HAP_HTTP $HAP_TCP"
      cmd=(taskset -c 1 haproxy -db -f "$d/haproxy.cfg") ;;
    rlb)
      write_rlb_toml "$d"
      CUR_HTTP=$RLB_HTTP; CUR_TCP=$RLB_TCP; ports="$RLB_HTTP $RLB_TCP"
      cmd=(taskset -c 1 "$RLB_BIN" --config "$d/rlb.toml") ;;
  esac
  mkdir -p "$d"
  if ! in_list "$name" "$START_LOGGED"; then
    qcmd "${cmd[@]}" >>"$WORK/start-commands.txt"
    START_LOGGED+=",$name"
  fi
  start_bg "$d/stderr.log" "${cmd[@]}"
  CUR_PID=$BG_PID
  # shellcheck disable=SC2086
  if ! wait_ports "$CUR_PID" 10 $ports; then
    log "$name did not start (variant $variant); last lines of its log:"
    tail -n 15 "$d/stderr.log" "$d/error.log" 2>/dev/null | sed 's/^/    /' >&2
    stop_pid "$CUR_PID"
    CUR_PID=""
    return 1
  fi
}

stop_contender() { stop_pid "$CUR_PID"; CUR_PID=""; }

# ------------------------------------------------------------------ rlb
RLB_BIN=${RLB:-$ROOT/target/release/rlb}
skip_rlb() {
  log "rlb skipped: $*"
  echo "rlb skipped: $*" >>"$NOTES"
  CONTENDERS=$(echo ",$CONTENDERS," | sed 's/,rlb,/,/; s/^,//; s/,$//')
}
if has_contender rlb; then
  if [[ -z $RLB && $NO_BUILD == 0 ]]; then
    # Always: a no-op when the binary is fresh, and a stale binary would be measured.
    log "building rlb: cargo build --release (log in the work dir)"
    if ! (cd "$ROOT" && timeout 1800 cargo build --release) >"$WORK/rlb-build.log" 2>&1; then
      tail -n 20 "$WORK/rlb-build.log" | sed 's/^/    /' >&2
      if [[ -x $RLB_BIN ]]; then
        log "warning: cargo build --release failed; measuring the existing $RLB_BIN"
        echo "cargo build --release failed; the existing, possibly stale, $RLB_BIN was measured" >>"$NOTES"
      fi
    fi
  fi
  if [[ ! -x $RLB_BIN ]]; then
    skip_rlb "no executable at $RLB_BIN"
  elif ! start_contender rlb std; then
    skip_rlb "$RLB_BIN did not start or did not open both listeners within 10 s"
  else
    stop_contender
    RLB_OK=1
  fi
fi

# ------------------------------------------------------------------ measurements
# entries WORKLOAD: "contender:mode" pairs measured for a workload, in round order.
entries() {
  local wl=$1 modes="" c m out=()
  case $wl in
    ka|cpr) want http && modes+=" http"; want tcp && modes+=" tcp" ;;
    ws|siege) modes="http" ;;
    l4) modes="tcp" ;;
    mem) modes="http tcp" ;;
  esac
  if has_contender direct && [[ $wl != mem ]]; then out+=("direct:-"); fi
  for c in rlb nginx haproxy; do
    has_contender "$c" || continue
    for m in $modes; do
      [[ $c == nginx && $m == tcp && $NGINX_TCP_OK == 0 ]] && continue
      out+=("$c:$m")
    done
  done
  echo "${out[@]}"
}

variant_for() { case $1 in l4) echo l4 ;; ws) echo ws ;; *) echo std ;; esac; }

L4_SECS=$(((DURATION + 1) / 2))

record() {  # WORKLOAD CONTENDER MODE ROUND KIND RAW RC CMD [extra k=v ...]
  local wl=$1 c=$2 m=$3 r=$4 kind=$5 raw=$6 rc=$7 cmd=$8
  shift 8
  local extra=() kv
  for kv in "$@"; do extra+=(--extra "$kv"); done
  python3 "$LIB" record --workload "$wl" --contender "$c" --mode "$m" --round "$r" \
    --kind "$kind" --raw "$raw" --rc "$rc" --cmd "$cmd" \
    --cpu-before "$raw.cpu-before" --cpu-after "$raw.cpu-after" "${extra[@]}" >>"$RESULTS"
  tail -n 1 "$RESULTS" | python3 "$LIB" progress >&2
}

measure() {  # WORKLOAD CONTENDER MODE ROUND
  local wl=$1 c=$2 m=$3 r=$4 port url raw="$WORK/raw/$1-$2-$3-r$4.txt" rc cmd=() kind
  local limit=$((DURATION + 30))
  mkdir -p "$WORK/raw"
  if [[ $c == rlb && $RLB_OK == 0 ]]; then return; fi
  log "$wl round $r/$ROUNDS: $c$([[ $m != - ]] && echo " $m")"
  if ! start_contender "$c" "$(variant_for "$wl")"; then
    if [[ $c == rlb ]]; then skip_rlb "failed to start during the $wl workload"; RLB_OK=0; fi
    echo "{\"workload\":\"$wl\",\"contender\":\"$c\",\"mode\":\"$m\",\"round\":$r,\"failed\":\"did not start\"}" >>"$RESULTS"
    return
  fi
  if [[ $m == tcp ]]; then port=$CUR_TCP; else port=$CUR_HTTP; fi
  url="http://127.0.0.1:$port/"
  case $wl in
    ka) kind=wrk; cmd=(wrk -t1 -c64 "-d${DURATION}s" --latency "$url") ;;
    cpr) kind=wrk; cmd=(wrk -t1 -c16 "-d${DURATION}s" --latency -H "Connection: close" "$url") ;;
    # siege runs a number of requests (-r), not a time (-t): at the end of a timed run
    # siege 4.0.x cancels its threads asynchronously, and one cancelled inside malloc
    # leaves the allocator's lock held, so the others never exit and siege hangs with
    # no summary (JoeDog/siege#4; fixed in siege 4.1.5). bench/RESULTS.md has the
    # evidence. Its run time then depends on the contender's speed (about DURATION s
    # at the reference ~8,500 trans/s; 20 times that on a busy machine): a wider limit.
    siege) kind=siege; limit=$((DURATION * 20 + 60))
      cmd=(siege -R "$WORK/siegerc" -c 50 -r "$SIEGE_REPS" -b "$url") ;;
    l4) kind=iperf; cmd=(iperf3 -c 127.0.0.1 -p "$port" -t "$L4_SECS" -J) ;;
    ws) kind=ws; cmd=("$WSBENCH" client --url "ws://127.0.0.1:$port/" --connections 64 --duration "$DURATION") ;;
    mem) measure_mem "$wl" "$c" "$m" "$r" "$port" "$raw"; stop_contender; return ;;
  esac
  cpu_snap "$raw.cpu-before"
  start_bg "$raw" timeout -k 5 "$limit" taskset -c 0 "${cmd[@]}"
  wait "$BG_PID"; rc=$?
  cpu_snap "$raw.cpu-after"
  if [[ -n $CUR_PID ]] && ! alive "$CUR_PID"; then
    log "$c exited during the run; its log:"; tail -n 15 "$WORK/$c-$(variant_for "$wl")/stderr.log" >&2
  fi
  stop_contender
  record "$wl" "$c" "$m" "$r" "$kind" "$raw" "$rc" "$(qcmd taskset -c 0 "${cmd[@]}")"
}

measure_mem() {  # WORKLOAD CONTENDER MODE ROUND PORT RAW
  local wl=$1 c=$2 m=$3 r=$4 port=$5 raw=$6 idle loaded v i rc hold_pid deadline
  local cmd=("$WSBENCH" hold --addr "127.0.0.1:$port" --connections "$MEM_CONNS" --idle "$DURATION")
  sleep 0.5
  idle=$(rss_kib "$CUR_PID")
  cpu_snap "$raw.cpu-before"
  start_bg "$raw" timeout -k 5 $((DURATION + 150)) taskset -c 0 "${cmd[@]}"
  hold_pid=$BG_PID
  deadline=$((SECONDS + 140))
  until grep -q '^ready' "$raw" 2>/dev/null; do
    if ! alive "$hold_pid" || ((SECONDS > deadline)); then break; fi
    sleep 0.1
  done
  sleep 1
  loaded=0
  for i in 1 2 3; do  # the highest of three samples half a second apart
    v=$(rss_kib "$CUR_PID")
    ((v > loaded)) && loaded=$v
    sleep 0.5
  done
  wait "$hold_pid"; rc=$?
  cpu_snap "$raw.cpu-after"
  record "$wl" "$c" "$m" "$r" mem "$raw" "$rc" "$(qcmd taskset -c 0 "${cmd[@]}")" \
    "idle_kib=$idle" "loaded_kib=$loaded"
}

cat >"$WORK/siegerc" <<'EOF'
verbose = false
color = off
quiet = false
json_output = true
show-logfile = false
logging = false
parser = false
protocol = HTTP/1.1
connection = close
limit = 255
EOF

# A machine that is already busy (a compiler, another benchmark) makes every figure noise.
cpu_snap "$WORK/idle-before"; sleep 1; cpu_snap "$WORK/idle-after"
busy=$(python3 -c '
import sys; sys.path.insert(0, sys.argv[1]); import benchlib
b = benchlib.cpu_busy(sys.argv[2], sys.argv[3])
print(" ".join(f"{k}={v:.0f}" for k, v in b.items() if v is not None and v > 25))
' "$HERE/lib" "$WORK/idle-before" "$WORK/idle-after")
if [[ -n $busy ]]; then
  log "warning: the machine was already busy before the run ($busy %): figures will be noisy"
  echo "the machine was already busy before the run (${busy// /, } % busy over 1 s): figures are noisy" >>"$NOTES"
fi

start_origin
want l4 && start_iperf_server
want ws && start_ws_server
log "origin on $O1,$O2; contenders: $CONTENDERS; groups: $ONLY; $ROUNDS round(s) of ${DURATION}s; work dir $WORK"

for wl in ka cpr l4 ws mem siege; do
  case $wl in
    ka|cpr) want http || want tcp || continue ;;
    *) want "$wl" || continue ;;
  esac
  read -ra list <<<"$(entries "$wl")"
  ((${#list[@]})) || continue
  for ((r = 1; r <= ROUNDS; r++)); do
    for e in "${list[@]}"; do
      measure "$wl" "${e%%:*}" "${e#*:}" "$r"
    done
  done
done

mkdir -p "$HERE/results"
cp "$RESULTS" "$HERE/results/last.jsonl"
python3 "$LIB" report --results "$RESULTS" --out "$OUT" --notes "$NOTES" --work "$WORK" \
  --meta "rounds=$ROUNDS" --meta "duration=$DURATION" --meta "argv=$ARGV" \
  --meta "rlb=$( ((RLB_OK)) && echo "$RLB_BIN")"
