#!/usr/bin/env bash
# `make bench`: SIP parse/serialize throughput, PUBLISH latency under a steady open-loop
# load through the three services, then NOTIFY fan-out: PUBLISH->NOTIFY delay with many
# watchers of one presentity, and NOTIFYs/s with 1 and then 3 notifier replicas.
# Reuses PostgreSQL, Redis and Kafka when they run and stops only what it started. The
# services run here on free ports, in their own database (BENCH_DB) and Kafka
# namespace, so a running `make run` is neither used nor disturbed.
# Results: var/bench/<UTC timestamp>.json.
#
# Environment: BENCH_PARTS (parse,publish,fanout,dialog,throughput,compare,overload,scale;
# "throughput" is both throughput1 and throughput3, which can also be named alone;
# "dialog" is a PBX's dialog PUBLISHes at BENCH_RATE for BENCH_DURATION, the same
# from sipp (bench/sipp/publish-dialog.xml) for BENCH_DIALOG_SIPP_SECONDS (20), then the
# fan-out part with dialog state), BENCH_RATE (PUBLISH/s,
# 200), BENCH_DURATION (s, 30), BENCH_USERS (1000), BENCH_WATCHERS (dialogs of the
# NOTIFY parts, 1000), BENCH_CHANGES (fan-out changes, one every 2 s, 10),
# BENCH_PRESENTITIES (throughput, 200: BENCH_WATCHERS/200 watchers each),
# BENCH_NOTIFY_RATE (throughput PUBLISH/s, 200), BENCH_NOTIFY_DURATION (s, 20),
# BENCH_LOG_LEVEL (the services', WARNING), BENCH_DB (the PostgreSQL database the run
# drops and recreates, presence_bench) and BENCH_REDIS_DB (the Redis database it uses and
# flushes at the end, 9): give concurrent runs on one PostgreSQL and Redis their own.
# BENCH_PROFILE=1: py-spy (requirements-dev.txt) samples the three services during the
# PUBLISH part; flame graphs in var/bench/<timestamp>-<service>.svg (the sampling costs
# some CPU: compare numbers only between runs that both profile or both do not).
# BENCH_SERVICE_ENV: extra settings for the services, e.g. "PRESENCE_EVENT_LOOP=asyncio"
# (space-separated; the caller's own PRESENCE_* variables are not passed on). Where the PUBLISH time went is read back
# from the bench topics' record timestamps (benchctl.py breakdown), not from logs.
#
# The part "compare" runs the same load against this project's stack and then against
# Kamailio 5.6 with its presence module (scripts/kamailio.sh, bench/kamailio.cfg), one
# after the other, the other server stopped meanwhile: a sipp rate search for initial
# PUBLISHes and one for subscription flows (bench/compare.py, bench/sipp/), PUBLISH->200
# and subscription flows at a steady rate (publish_bench.py, sipp) and the 1,000-watcher
# fan-out (notify_bench.py),
# then prints both columns and the ratio. Knobs: BENCH_COMPARE_SERVERS (ours,kamailio),
# BENCH_COMPARE_STEP_SECONDS (calls per step = rate x this, 8), BENCH_COMPARE_COOLDOWN
# (s between steps, 3), BENCH_COMPARE_PUBLISH_START and BENCH_COMPARE_SUBSCRIBE_START
# (first step's rate, 50), BENCH_COMPARE_REFINE (bisection steps after the first unclean
# one, 2), BENCH_COMPARE_MAX_RATE (4000), BENCH_COMPARE_STEADY_RATE (PUBLISH/s, 200),
# BENCH_COMPARE_FLOW_RATE (subscription flows/s, 100: SUBSCRIBE->first NOTIFY),
# BENCH_COMPARE_STEADY_DURATION (s, 20), BENCH_COMPARE_WATCHERS (1000),
# BENCH_COMPARE_CHANGES (fan-out changes, one every 2 s, 5); Kamailio's own in
# scripts/kamailio.sh (KAMAILIO_CHILDREN, KAMAILIO_SUBS_DB_MODE). sipp's files of every
# step stay in var/bench/<timestamp>-compare/.
#
# The part "overload" (bench/overload_bench.py) sends half the sustainable PUBLISH rate
# for 10 s, BENCH_OVERLOAD_FACTOR (2) times it for BENCH_OVERLOAD_SECONDS (30), then
# half again for 20 s, from clients that retransmit as RFC 3261 says, and checks that
# what is refused is refused early with 503 and never applied, and how soon latency is
# normal again. The sustainable rate: BENCH_OVERLOAD_RATE, else this run's PUBLISH
# search result (compare), else 300/s.
#
# The part "scale" (last) measures the same figures with a stored population: for each
# size in BENCH_SCALE_SIZES (0,10000,100000) it loads that many presentities and active
# subscriptions straight into the bench database (bench/scale_bench.py load), restarts
# the services, reads the tables' bytes and the services' RSS, times the clean_period
# sweep and a /metrics scrape, then runs PUBLISH->200 at BENCH_SCALE_RATE (200/s),
# subscription flows at BENCH_SCALE_FLOW_RATE (100/s), each for BENCH_SCALE_DURATION
# (10 s), the PUBLISH rate search of "compare" for this project only (start
# BENCH_SCALE_SEARCH_START 100/s, BENCH_SCALE_STEP_SECONDS 5, BENCH_SCALE_REFINE 1) and
# the fan-out (BENCH_SCALE_WATCHERS 1000, BENCH_SCALE_CHANGES 3, its SUBSCRIBEs at
# BENCH_SCALE_SETUP_RATE 200/s: lower it where the edge refuses some). BENCH_SCALE_ROUNDS
# (1) repeats the sizes, interleaved (0, 10k, 100k, 0, ...). sipp's files in
# var/bench/<timestamp>-scale/.
set -euo pipefail
source "$(dirname "$0")/common.sh"
S="$REPO_ROOT/scripts"
PY="$REPO_ROOT/.venv/bin/python"
CTL="$REPO_ROOT/bench/benchctl.py"

BENCH_RATE="${BENCH_RATE:-200}"
BENCH_DURATION="${BENCH_DURATION:-30}"
BENCH_USERS="${BENCH_USERS:-1000}"
BENCH_LOG_LEVEL="${BENCH_LOG_LEVEL:-WARNING}"
BENCH_WATCHERS="${BENCH_WATCHERS:-1000}"
BENCH_CHANGES="${BENCH_CHANGES:-10}"
BENCH_PRESENTITIES="${BENCH_PRESENTITIES:-200}"
BENCH_NOTIFY_RATE="${BENCH_NOTIFY_RATE:-200}"
BENCH_NOTIFY_DURATION="${BENCH_NOTIFY_DURATION:-20}"
BENCH_PARTS="${BENCH_PARTS:-parse,publish,fanout,dialog,throughput,compare,overload,scale}"
BENCH_REDIS_DB="${BENCH_REDIS_DB:-9}"
BENCH_DB="${BENCH_DB:-presence_bench}"
BENCH_PROFILE="${BENCH_PROFILE:-0}"
PARTS=",${BENCH_PARTS// /},"
PARTS="${PARTS//,throughput,/,throughput1,throughput3,}"
for part in ${PARTS//,/ }; do
    case "$part" in parse|publish|fanout|dialog|throughput1|throughput3|compare|overload|scale) ;; *) die "BENCH_PARTS: unknown part '$part'" ;; esac
done
BENCH_DIALOG_SIPP_SECONDS="${BENCH_DIALOG_SIPP_SECONDS:-20}"
BENCH_OVERLOAD_FACTOR="${BENCH_OVERLOAD_FACTOR:-2}"
BENCH_OVERLOAD_SECONDS="${BENCH_OVERLOAD_SECONDS:-30}"
BENCH_SCALE_SIZES="${BENCH_SCALE_SIZES:-0,10000,100000}"
BENCH_SCALE_ROUNDS="${BENCH_SCALE_ROUNDS:-1}"
BENCH_SCALE_RATE="${BENCH_SCALE_RATE:-200}"
BENCH_SCALE_FLOW_RATE="${BENCH_SCALE_FLOW_RATE:-100}"
BENCH_SCALE_DURATION="${BENCH_SCALE_DURATION:-10}"
BENCH_SCALE_SEARCH_START="${BENCH_SCALE_SEARCH_START:-100}"
BENCH_SCALE_STEP_SECONDS="${BENCH_SCALE_STEP_SECONDS:-5}"
BENCH_SCALE_REFINE="${BENCH_SCALE_REFINE:-1}"
BENCH_SCALE_WATCHERS="${BENCH_SCALE_WATCHERS:-1000}"
BENCH_SCALE_CHANGES="${BENCH_SCALE_CHANGES:-3}"
BENCH_SCALE_SETUP_RATE="${BENCH_SCALE_SETUP_RATE:-200}"
for size in ${BENCH_SCALE_SIZES//,/ }; do
    [[ "$size" =~ ^[0-9]+$ ]] || die "BENCH_SCALE_SIZES: '$size' is not a number of rows"
done
[[ "$BENCH_SCALE_ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "BENCH_SCALE_ROUNDS: a positive count"
BENCH_COMPARE_SERVERS="${BENCH_COMPARE_SERVERS:-ours,kamailio}"
BENCH_COMPARE_STEP_SECONDS="${BENCH_COMPARE_STEP_SECONDS:-8}"
BENCH_COMPARE_COOLDOWN="${BENCH_COMPARE_COOLDOWN:-3}"
BENCH_COMPARE_PUBLISH_START="${BENCH_COMPARE_PUBLISH_START:-50}"
BENCH_COMPARE_SUBSCRIBE_START="${BENCH_COMPARE_SUBSCRIBE_START:-50}"
BENCH_COMPARE_REFINE="${BENCH_COMPARE_REFINE:-2}"
BENCH_COMPARE_MAX_RATE="${BENCH_COMPARE_MAX_RATE:-4000}"
BENCH_COMPARE_STEADY_RATE="${BENCH_COMPARE_STEADY_RATE:-200}"
BENCH_COMPARE_STEADY_DURATION="${BENCH_COMPARE_STEADY_DURATION:-20}"
BENCH_COMPARE_FLOW_RATE="${BENCH_COMPARE_FLOW_RATE:-100}"
BENCH_COMPARE_WATCHERS="${BENCH_COMPARE_WATCHERS:-1000}"
BENCH_COMPARE_CHANGES="${BENCH_COMPARE_CHANGES:-5}"
for server in ${BENCH_COMPARE_SERVERS//,/ }; do
    case "$server" in ours|kamailio) ;; *) die "BENCH_COMPARE_SERVERS: unknown server '$server' (ours, kamailio)" ;; esac
done
has_part() { [[ "$PARTS" == *",$1,"* ]]; }
compares() { has_part compare && [[ ",$BENCH_COMPARE_SERVERS," == *",$1,"* ]]; }
if compares kamailio; then
    # The reference runs only while this script holds it: one started by hand would be
    # measured with another configuration, and stopped here.
    ! pid_alive kamailio || die "kamailio runs already (pid $(cat "$RUN_DIR/kamailio.pid")): scripts/kamailio.sh stop"
    "$S/kamailio.sh" install
fi
command -v sipp >/dev/null || ! { has_part compare || has_part dialog || has_part scale; } || apt_install sip-tester
SERVICES="presence-store notifier sip-edge"   # start order; stop goes in reverse
module_of() { case "$1" in sip-edge) echo sip_edge ;; presence-store) echo presence_store ;; notifier*) echo notifier ;; esac; }

STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
NAMESPACE="bench-$(head -c 4 /dev/urandom | od -An -tx1 | tr -d ' \n')"
ADMIN_TOKEN="$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
BENCH_LOGS="$LOG_DIR/bench"
WORK=""
mkdir -p "$BENCH_LOGS" "$PRESENCE_VAR/bench"
KAFKA_BOOTSTRAP="127.0.0.1:$PRESENCE_KAFKA_PORT"

"$S/venv.sh"
# Other work on this machine (e.g. a `make test` beside it) skews the numbers: record it.
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"

# What runs already is reused; what this script starts, it stops.
started=()
for part in postgres redis kafka; do
    pid_alive "$part" || started+=("$part")
done
declare -A service_pid=()
service_order=()   # names in start order (notifier replicas included): stop goes in reverse

stop_service() {
    local name="$1" pid="${service_pid[$1]:-}" grace=20
    [ -n "$pid" ] || return 0
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        local deadline=$((SECONDS + grace))
        while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then
            say "$name: did not stop within ${grace}s, sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    unset "service_pid[$name]"
}

stop_services() {
    local i
    for ((i = ${#service_order[@]} - 1; i >= 0; i--)); do stop_service "${service_order[i]}"; done
    service_order=()
}

kamailio_started=""
COMPARE_META=()   # what the report records about the reference and sipp
cleanup() {
    local part
    stop_services
    [ -z "$kamailio_started" ] || "$S/kamailio.sh" stop || true
    if pid_alive kafka; then
        "$PY" "$CTL" delete-topics "$KAFKA_BOOTSTRAP" "$NAMESPACE" || say "could not delete the topics of $NAMESPACE"
    fi
    if pid_alive redis; then
        redis-cli -h 127.0.0.1 -p "$PRESENCE_REDIS_PORT" -n "$BENCH_REDIS_DB" flushdb >/dev/null || true
    fi
    for part in "${started[@]}"; do "$S/$part.sh" stop || true; done
    [ -z "$WORK" ] || rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
WORK="$(mktemp -d)"

"$S/stack.sh" infra-up >"$BENCH_LOGS/infra-up.log" 2>&1 \
    || { tail -n 20 "$BENCH_LOGS/infra-up.log" >&2; die "infrastructure did not start, see $BENCH_LOGS/infra-up.log"; }
[ "${#started[@]}" -eq 0 ] || say "started for this run (stopped at the end): ${started[*]}"

# Pure CPU work first, before the services start: their start-up and their idle Kafka
# polling would otherwise share the cores with it.
if has_part parse; then
    "$PY" "$REPO_ROOT/bench/parse_bench.py" --json "$WORK/parse.json"
    echo
fi
report() {
    "$PY" "$CTL" report "$OUT" "$WORK" \
        "timestamp=$STAMP" "git=$(git -C "$REPO_ROOT" describe --always --dirty 2>/dev/null || echo unknown)" \
        "namespace=$NAMESPACE" "cpus=$(nproc)" "log_level=$BENCH_LOG_LEVEL" "python=$("$PY" -V 2>&1)" \
        "parts=$BENCH_PARTS" "service_env=${BENCH_SERVICE_ENV:-}" "loadavg_before=$LOAD_BEFORE" "loadavg_after=$(cut -d' ' -f1-3 /proc/loadavg)" \
        "${COMPARE_META[@]}"
}
OUT="$PRESENCE_VAR/bench/$STAMP.json"
if [ "$PARTS" = ",parse," ]; then report; exit 0; fi

# --- database and services -------------------------------------------------------------
ADMIN_DB_URL="postgresql://presence:presence@127.0.0.1:$PRESENCE_PG_PORT/presence"
BENCH_DB_URL="postgresql://presence:presence@127.0.0.1:$PRESENCE_PG_PORT/$BENCH_DB"
"$PY" "$CTL" recreate-db "$ADMIN_DB_URL" "$BENCH_DB"
PRESENCE_DB_URL="$BENCH_DB_URL" "$PY" -m presence_store.migrate >"$BENCH_LOGS/migrate.log" 2>&1 \
    || { cat "$BENCH_LOGS/migrate.log" >&2; die "migrating $BENCH_DB failed"; }

read -r SIP_PORT EDGE_HTTP STORE_HTTP NOTIFIER_HTTP NOTIFIER_HTTP_2 NOTIFIER_HTTP_3 \
    <<<"$("$PY" "$CTL" free-ports 6)"
# The user's PRESENCE_* settings (and env file) are for `make run`, not for this stack.
mapfile -t unset_presence < <(compgen -e | grep '^PRESENCE_' | sed 's/^/--unset=/')
service_env=(
    PRESENCE_DB_URL="$BENCH_DB_URL"
    # A Redis database of its own (lock keys also carry the namespace), flushed at
    # the end so that bench runs leave no fence counters behind.
    PRESENCE_REDIS_URL="redis://127.0.0.1:$PRESENCE_REDIS_PORT/$BENCH_REDIS_DB"
    PRESENCE_KAFKA_BOOTSTRAP="$KAFKA_BOOTSTRAP"
    PRESENCE_KAFKA_NAMESPACE="$NAMESPACE"
    PRESENCE_SIP_PORT="$SIP_PORT"
    PRESENCE_EDGE_HTTP_PORT="$EDGE_HTTP"
    PRESENCE_STORE_HTTP_PORT="$STORE_HTTP"
    PRESENCE_NOTIFIER_HTTP_PORT="$NOTIFIER_HTTP"
    PRESENCE_EDGE_ID=bench-edge
    # TLS and WebSocket listeners: not measured here, and their default ports may be taken.
    PRESENCE_SIP_WS_PORT=0
    PRESENCE_FORCE_ACTIVE=1
    PRESENCE_AUTH=none  # the protocol path itself; digest adds a challenge round trip
    PRESENCE_LOG_LEVEL="$BENCH_LOG_LEVEL"
    # For the scale part's POST /admin/cleanup (the clean_period sweep, timed).
    PRESENCE_ADMIN_TOKEN="$ADMIN_TOKEN"
)
read -r -a extra_service_env <<<"${BENCH_SERVICE_ENV:-}"
service_env+=("${extra_service_env[@]}")
http_port_of() {
    case "$1" in
        sip-edge) echo "$EDGE_HTTP" ;; presence-store) echo "$STORE_HTTP" ;; notifier) echo "$NOTIFIER_HTTP" ;;
        notifier-2) echo "$NOTIFIER_HTTP_2" ;; notifier-3) echo "$NOTIFIER_HTTP_3" ;;
    esac
}
# SERVER_CPU: --cpu NAME=PID of each running service and of Kafka, PostgreSQL (with
# its backends) and Redis, from their pid files: what the load generators read CPU of.
server_cpu_args() {
    local name part_name
    SERVER_CPU=()
    for name in "${service_order[@]}"; do SERVER_CPU+=(--cpu "$name=${service_pid[$name]}"); done
    for part_name in kafka postgres redis; do
        if pid_alive "$part_name"; then
            SERVER_CPU+=(--cpu "$part_name=$(cat "$RUN_DIR/$part_name.pid")")
        fi
    done
}
start_service() {
    local name="$1" log="$BENCH_LOGS/$1-$NAMESPACE.log" own=()
    # Notifier replicas differ only by their health port (in env, a later assignment wins).
    [[ "$name" != notifier-* ]] || own=(PRESENCE_NOTIFIER_HTTP_PORT="$(http_port_of "$name")")
    env "${unset_presence[@]}" "${service_env[@]}" "${own[@]}" \
        setsid "$PY" -m "$(module_of "$name")" >"$log" 2>&1 </dev/null &
    service_pid[$name]=$!
    service_order+=("$name")
    "$PY" "$CTL" wait-ready "http://127.0.0.1:$(http_port_of "$name")/health/ready" \
        "${service_pid[$name]}" 60 || { tail -n 20 "$log" >&2; die "$name did not become ready, see $log"; }
    say "  $name: ready (pid ${service_pid[$name]})"
}

say "bench: namespace $NAMESPACE, SIP udp 127.0.0.1:$SIP_PORT, logs in $BENCH_LOGS"
# The parts compare and scale start their own (one notifier, fresh per size).
if has_part publish || has_part fanout || has_part dialog || has_part throughput1 || has_part throughput3; then
    for name in $SERVICES; do start_service "$name"; done
fi

# --- PUBLISH under load ---------------------------------------------------------------------
failures=()
if has_part publish; then
    profilers=()
    if [ "$BENCH_PROFILE" = 1 ]; then
        for name in "${service_order[@]}"; do
            # Past the first seconds (warm-up), to a few seconds before the load ends.
            (sleep 3; exec "$REPO_ROOT/.venv/bin/py-spy" record --nonblocking --rate 50 \
                --duration $(( BENCH_DURATION > 8 ? BENCH_DURATION - 6 : 2 )) \
                --pid "${service_pid[$name]}" -o "$PRESENCE_VAR/bench/$STAMP-$name.svg") \
                >"$BENCH_LOGS/py-spy-$name.log" 2>&1 &
            profilers+=($!)
        done
    fi
    server_cpu_args
    "$PY" "$REPO_ROOT/bench/publish_bench.py" --port "$SIP_PORT" --rate "$BENCH_RATE" \
        --duration "$BENCH_DURATION" --users "$BENCH_USERS" --json "$WORK/publish.json" "${SERVER_CPU[@]}" \
        || failures+=("publish_bench (exit $?)")
    for pid in "${profilers[@]}"; do
        wait "$pid" || say "py-spy (pid $pid) failed, see $BENCH_LOGS/py-spy-*.log"
    done
    [ "$BENCH_PROFILE" != 1 ] || say "flame graphs: $PRESENCE_VAR/bench/$STAMP-*.svg"
    # Read now, while the topics hold only this part's records (the services idle).
    "$PY" "$CTL" breakdown "$KAFKA_BOOTSTRAP" "$NAMESPACE" bench-edge "$WORK/breakdown.json" \
        || say "could not read the latency breakdown from the topics"
fi

# --- NOTIFY fan-out ----------------------------------------------------------------------------
# CPU is read per process over each measured window: the services, and the broker,
# PostgreSQL (with its backends) and Redis from their pid files.
notify_bench() {   # notify_bench PART MODE ARGS...: one run, its JSON in $WORK/PART.json
    local part="$1" mode="$2"; shift 2
    server_cpu_args
    echo
    "$PY" "$REPO_ROOT/bench/notify_bench.py" "$mode" --port "$SIP_PORT" "${SERVER_CPU[@]}" \
        --json "$WORK/$part.json" "$@" || failures+=("notify_bench $part (exit $?)")
}
per_presentity=$(( BENCH_WATCHERS / BENCH_PRESENTITIES > 0 ? BENCH_WATCHERS / BENCH_PRESENTITIES : 1 ))
throughput_args=(--presentities "$BENCH_PRESENTITIES" --per-presentity "$per_presentity"
    --rate "$BENCH_NOTIFY_RATE" --duration "$BENCH_NOTIFY_DURATION")
has_part fanout && notify_bench fanout fanout --watchers "$BENCH_WATCHERS" --changes "$BENCH_CHANGES"
if has_part dialog; then
    # Busy-lamp fields (RFC 4235): a PBX publishing one call per line, then one line
    # watched by BENCH_WATCHERS lamps; the same load generators, --event dialog.
    echo
    "$PY" "$REPO_ROOT/bench/publish_bench.py" --event dialog --port "$SIP_PORT" --rate "$BENCH_RATE" \
        --duration "$BENCH_DURATION" --users "$BENCH_USERS" --json "$WORK/dialog_publish.json" \
        || failures+=("publish_bench dialog (exit $?)")
    # The same load from sipp, as a PBX sends it (bench/sipp/publish-dialog.xml): a new
    # line per call, retransmitting on its own timer.
    "$PY" "$REPO_ROOT/bench/compare.py" steady publish-dialog --rate "$BENCH_RATE" --port "$SIP_PORT" \
        --server ours --step-seconds "$BENCH_DIALOG_SIPP_SECONDS" \
        --out "$PRESENCE_VAR/bench/$STAMP-dialog-sipp" --json "$WORK/dialog_sipp.json" \
        || failures+=("sipp dialog PUBLISH (exit $?)")
    notify_bench dialog_fanout fanout --event dialog --watchers "$BENCH_WATCHERS" --changes "$BENCH_CHANGES"
fi
has_part throughput1 && notify_bench throughput_1 throughput "${throughput_args[@]}"
if has_part throughput3; then
    echo
    say "starting two more notifier replicas"
    start_service notifier-2
    start_service notifier-3
    # Ready is not enough: a replica works only once the group has given it partitions.
    "$PY" "$CTL" wait-group "$KAFKA_BOOTSTRAP" "$NAMESPACE.notifier" 3 60 \
        || die "the notifier replicas did not share the partitions; logs in $BENCH_LOGS"
    notify_bench throughput_3 throughput "${throughput_args[@]}"
fi

# --- side by side with Kamailio ---------------------------------------------------------
# Each server alone on the machine while it is measured (the other one stopped: the
# services' idle polling would take CPU from Kamailio), with the same tools and knobs.
compare_server() {   # compare_server NAME PORT CPU_ARGS...: all compare parts against one server
    local server="$1" port="$2" raw="$PRESENCE_VAR/bench/$STAMP-compare/$1"; shift 2
    # Before each part: a pause, then until probe PUBLISHes are answered promptly again,
    # so that no part inherits the backlog of an overloaded one.
    settle() {
        sleep "$BENCH_COMPARE_COOLDOWN"
        "$PY" "$REPO_ROOT/bench/compare.py" settle --port "$port"
    }
    echo
    say "compare: $server on udp 127.0.0.1:$port (sipp files in $raw)"
    local search_args=(--port "$port" --server "$server" --step-seconds "$BENCH_COMPARE_STEP_SECONDS"
        --cooldown "$BENCH_COMPARE_COOLDOWN" --refine "$BENCH_COMPARE_REFINE" --max-rate "$BENCH_COMPARE_MAX_RATE")
    "$PY" "$REPO_ROOT/bench/compare.py" search publish "${search_args[@]}" --start "$BENCH_COMPARE_PUBLISH_START" \
        --out "$raw/publish" --json "$WORK/compare-$server-publish_search.json" \
        || failures+=("compare $server publish search (exit $?)")
    settle
    "$PY" "$REPO_ROOT/bench/compare.py" search subscribe "${search_args[@]}" --start "$BENCH_COMPARE_SUBSCRIBE_START" \
        --out "$raw/subscribe" --json "$WORK/compare-$server-subscribe_search.json" \
        || failures+=("compare $server subscribe search (exit $?)")
    settle
    "$PY" "$REPO_ROOT/bench/compare.py" steady subscribe --rate "$BENCH_COMPARE_FLOW_RATE" --port "$port" \
        --server "$server" --step-seconds "$BENCH_COMPARE_STEADY_DURATION" --out "$raw/subscribe-steady" "$@" \
        --json "$WORK/compare-$server-subscribe_steady.json" || failures+=("compare $server subscribe steady (exit $?)")
    settle
    # Every PUBLISH to a presentity of its own, as in the search.
    "$PY" "$REPO_ROOT/bench/publish_bench.py" --port "$port" --rate "$BENCH_COMPARE_STEADY_RATE" \
        --duration "$BENCH_COMPARE_STEADY_DURATION" "$@" \
        --users "$(( ${BENCH_COMPARE_STEADY_RATE%.*} * ${BENCH_COMPARE_STEADY_DURATION%.*} ))" \
        --json "$WORK/compare-$server-steady.json" || failures+=("compare $server steady (exit $?)")
    settle
    "$PY" "$REPO_ROOT/bench/notify_bench.py" fanout --port "$port" "$@" --watchers "$BENCH_COMPARE_WATCHERS" \
        --changes "$BENCH_COMPARE_CHANGES" --json "$WORK/compare-$server-fanout.json" \
        || failures+=("compare $server fanout (exit $?)")
}
if compares ours; then
    if [ "${#service_order[@]}" -ne 3 ]; then   # back to one notifier, as `make run` has
        stop_services
        for name in $SERVICES; do start_service "$name"; done
    fi
    server_cpu_args
    compare_server ours "$SIP_PORT" "${SERVER_CPU[@]}"
fi

# --- overload: a burst at twice the sustainable rate -------------------------------------
# The sustainable rate is the one this run's PUBLISH search found for this project,
# unless BENCH_OVERLOAD_RATE names one (or the search did not run: 300/s).
if has_part overload; then
    overload_rate="${BENCH_OVERLOAD_RATE:-}"
    if [ -z "$overload_rate" ] && [ -f "$WORK/compare-ours-publish_search.json" ]; then
        overload_rate="$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["highest_clean_rate"] or "")' \
            "$WORK/compare-ours-publish_search.json")"
    fi
    overload_rate="${overload_rate:-300}"
    if [ "${#service_order[@]}" -ne 3 ]; then
        stop_services
        for name in $SERVICES; do start_service "$name"; done
    fi
    sleep "$BENCH_COMPARE_COOLDOWN"
    "$PY" "$REPO_ROOT/bench/compare.py" settle --port "$SIP_PORT" || true
    echo
    "$PY" "$REPO_ROOT/bench/overload_bench.py" --port "$SIP_PORT" --rate "$overload_rate" \
        --burst-factor "$BENCH_OVERLOAD_FACTOR" --burst-seconds "$BENCH_OVERLOAD_SECONDS" \
        --db-url "$BENCH_DB_URL" --store-metrics "http://127.0.0.1:$STORE_HTTP/metrics" \
        --json "$WORK/overload.json" || failures+=("overload_bench (exit $?)")
fi
stop_services
if compares kamailio; then
    echo
    read -r KAMAILIO_PORT <<<"$("$PY" "$CTL" free-ports 1)"
    kamailio_started=1
    KAMAILIO_SIP_PORT="$KAMAILIO_PORT" "$S/kamailio.sh" start
    # Kamailio uses PostgreSQL only: the idle broker and Redis are not its cost.
    compare_server kamailio "$KAMAILIO_PORT" --cpu "kamailio=$(cat "$RUN_DIR/kamailio.pid")" \
        --cpu "postgres=$(cat "$RUN_DIR/postgres.pid")"
    "$S/kamailio.sh" stop
    kamailio_started=""
    COMPARE_META=("kamailio_version=$({ kamailio -v 2>/dev/null || true; } | head -n 1 | sed 's/^version: //')"
        "kamailio_children=${KAMAILIO_CHILDREN:-4}" "kamailio_subs_db_mode=${KAMAILIO_SUBS_DB_MODE:-2}")
fi
# --- the same figures with a stored population ------------------------------------------
# Each size from a fresh load and freshly started services (their RSS then says what
# the stored rows cost them); the loaded dialogs' Contact is a loopback UDP port nobody
# listens on, and nothing expires during the run (scale_bench.py load).
if has_part scale; then
    stop_services
    echo
    say "scale: sizes $BENCH_SCALE_SIZES, $BENCH_SCALE_ROUNDS round(s)"
    read -r SCALE_SINK_PORT <<<"$("$PY" "$CTL" free-ports 1)"
    SCALE="$PY $REPO_ROOT/bench/scale_bench.py"
    for ((round = 1; round <= BENCH_SCALE_ROUNDS; round++)); do
        for size in ${BENCH_SCALE_SIZES//,/ }; do
            dir="$WORK/scale/r$round-$size" raw="$PRESENCE_VAR/bench/$STAMP-scale/r$round-$size"
            mkdir -p "$dir"
            echo
            say "scale: $size presentities and subscriptions (round $round)"
            $SCALE load "$BENCH_DB_URL" --size "$size" --edge-id bench-edge \
                --sink-port "$SCALE_SINK_PORT" --json "$dir/load.json"
            $SCALE tables "$BENCH_DB_URL" --json "$dir/tables.json"
            $SCALE plans "$BENCH_DB_URL" --json "$dir/plans.json"
            for name in $SERVICES; do start_service "$name"; done
            for group in presence-store notifier; do
                "$PY" "$CTL" wait-group "$KAFKA_BOOTSTRAP" "$NAMESPACE.$group" 1 60 >/dev/null
            done
            rss=(--pid "sip-edge=${service_pid[sip-edge]}" --pid "presence-store=${service_pid[presence-store]}"
                --pid "notifier=${service_pid[notifier]}")
            $SCALE probe "${rss[@]}" --store-http "http://127.0.0.1:$STORE_HTTP" --token "$ADMIN_TOKEN" \
                --json "$dir/before.json"
            # Fresh processes, pools and consumers: a few seconds of load before measuring.
            "$PY" "$REPO_ROOT/bench/compare.py" steady publish --rate "$BENCH_SCALE_RATE" --port "$SIP_PORT" \
                --server warmup --step-seconds 3 --out "$raw/warmup" --json "$dir/warmup.json" >/dev/null || true
            "$PY" "$REPO_ROOT/bench/compare.py" settle --port "$SIP_PORT"
            "$PY" "$REPO_ROOT/bench/publish_bench.py" --port "$SIP_PORT" --rate "$BENCH_SCALE_RATE" \
                --duration "$BENCH_SCALE_DURATION" \
                --users "$(( ${BENCH_SCALE_RATE%.*} * ${BENCH_SCALE_DURATION%.*} ))" \
                --json "$dir/steady.json" || failures+=("scale $size steady (exit $?)")
            "$PY" "$REPO_ROOT/bench/compare.py" settle --port "$SIP_PORT"
            "$PY" "$REPO_ROOT/bench/compare.py" steady subscribe --rate "$BENCH_SCALE_FLOW_RATE" \
                --port "$SIP_PORT" --server ours --step-seconds "$BENCH_SCALE_DURATION" \
                --out "$raw/subscribe-steady" --json "$dir/subscribe_steady.json" \
                || failures+=("scale $size subscribe steady (exit $?)")
            "$PY" "$REPO_ROOT/bench/compare.py" settle --port "$SIP_PORT"
            "$PY" "$REPO_ROOT/bench/compare.py" search publish --port "$SIP_PORT" --server ours \
                --step-seconds "$BENCH_SCALE_STEP_SECONDS" --cooldown "$BENCH_COMPARE_COOLDOWN" \
                --refine "$BENCH_SCALE_REFINE" --max-rate "$BENCH_COMPARE_MAX_RATE" \
                --start "$BENCH_SCALE_SEARCH_START" --out "$raw/publish" --json "$dir/publish_search.json" \
                || failures+=("scale $size publish search (exit $?)")
            sleep "$BENCH_COMPARE_COOLDOWN"
            "$PY" "$REPO_ROOT/bench/compare.py" settle --port "$SIP_PORT"
            "$PY" "$REPO_ROOT/bench/notify_bench.py" fanout --port "$SIP_PORT" \
                --watchers "$BENCH_SCALE_WATCHERS" --changes "$BENCH_SCALE_CHANGES" \
                --setup-rate "$BENCH_SCALE_SETUP_RATE" \
                --json "$dir/fanout.json" || failures+=("scale $size fanout (exit $?)")
            $SCALE probe "${rss[@]}" --json "$dir/after.json"
            stop_services
        done
    done
    # Nothing of the population stays behind for a later stack to notify.
    $SCALE load "$BENCH_DB_URL" --size 0 --edge-id bench-edge --sink-port "$SCALE_SINK_PORT" \
        --json "$WORK/scale-emptied.json" >/dev/null
    echo
    $SCALE summarize "$WORK/scale" --json "$WORK/scale.json" >/dev/null
fi
if has_part compare; then   # `sipp -v` exits 99
    COMPARE_META+=("sipp_version=$({ sipp -v 2>/dev/null || true; } | grep -o 'v[0-9][0-9.]*[0-9]' | head -n 1)")
fi

report
[ "${#failures[@]}" -eq 0 ] || die "failed: ${failures[*]}; service logs in $BENCH_LOGS"
