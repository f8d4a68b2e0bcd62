#!/usr/bin/env bash
# `make bench`: SIP parse/serialize throughput, then PUBLISH latency under a steady
# open-loop load through the three services. Reuses PostgreSQL, Redis and Kafka when
# they run and stops only what it started. The services run here on free ports, in
# their own database (presence_bench) and Kafka namespace, so a running `make run`
# is neither used nor disturbed. Results: var/bench/<UTC timestamp>.json.
#
# Environment: BENCH_RATE (PUBLISH/s, 200), BENCH_DURATION (s, 30), BENCH_USERS (1000),
# BENCH_LOG_LEVEL (the services', WARNING). Where the PUBLISH time went is read back
# from the bench topics' record timestamps (benchctl.py breakdown), not from logs.
set -euo pipefail
source "$(dirname "$0")/common.sh"
S="$REPO_ROOT/scripts"
PY="$REPO_ROOT/.venv/bin/python"
CTL="$REPO_ROOT/bench/benchctl.py"

BENCH_RATE="${BENCH_RATE:-200}"
BENCH_DURATION="${BENCH_DURATION:-30}"
BENCH_USERS="${BENCH_USERS:-1000}"
BENCH_LOG_LEVEL="${BENCH_LOG_LEVEL:-WARNING}"
SERVICES="presence-store notifier sip-edge"   # start order; stop goes in reverse
module_of() { case "$1" in sip-edge) echo sip_edge ;; presence-store) echo presence_store ;; notifier) echo notifier ;; esac; }

STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
NAMESPACE="bench-$(head -c 4 /dev/urandom | od -An -tx1 | tr -d ' \n')"
BENCH_LOGS="$LOG_DIR/bench"
WORK=""
mkdir -p "$BENCH_LOGS"
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

cleanup() {
    local name part
    for name in $(echo "$SERVICES" | tr ' ' '\n' | tac); do stop_service "$name"; done
    if pid_alive kafka; then
        "$PY" "$CTL" delete-topics "$KAFKA_BOOTSTRAP" "$NAMESPACE" || say "could not delete the topics of $NAMESPACE"
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
"$PY" "$REPO_ROOT/bench/parse_bench.py" --json "$WORK/parse.json"
echo

# --- database and services -------------------------------------------------------------
ADMIN_DB_URL="postgresql://presence:presence@127.0.0.1:$PRESENCE_PG_PORT/presence"
BENCH_DB_URL="postgresql://presence:presence@127.0.0.1:$PRESENCE_PG_PORT/presence_bench"
"$PY" "$CTL" recreate-db "$ADMIN_DB_URL" presence_bench
PRESENCE_DB_URL="$BENCH_DB_URL" "$PY" -m presence_store.migrate >"$BENCH_LOGS/migrate.log" 2>&1 \
    || { cat "$BENCH_LOGS/migrate.log" >&2; die "migrating presence_bench failed"; }

read -r SIP_PORT EDGE_HTTP STORE_HTTP NOTIFIER_HTTP <<<"$("$PY" "$CTL" free-ports 4)"
# The user's PRESENCE_* settings (and env file) are for `make run`, not for this stack.
mapfile -t unset_presence < <(compgen -e | grep '^PRESENCE_' | sed 's/^/--unset=/')
service_env=(
    PRESENCE_DB_URL="$BENCH_DB_URL"
    # A Redis database of its own: the lock keys (presence:lock:<shard>) carry no
    # namespace, so on database 0 this stack would contend with `make run` and tests.
    PRESENCE_REDIS_URL="redis://127.0.0.1:$PRESENCE_REDIS_PORT/9"
    PRESENCE_KAFKA_BOOTSTRAP="$KAFKA_BOOTSTRAP"
    PRESENCE_KAFKA_NAMESPACE="$NAMESPACE"
    PRESENCE_SIP_PORT="$SIP_PORT"
    PRESENCE_EDGE_HTTP_PORT="$EDGE_HTTP"
    PRESENCE_STORE_HTTP_PORT="$STORE_HTTP"
    PRESENCE_NOTIFIER_HTTP_PORT="$NOTIFIER_HTTP"
    PRESENCE_EDGE_ID=bench-edge
    PRESENCE_FORCE_ACTIVE=1
    PRESENCE_LOG_LEVEL="$BENCH_LOG_LEVEL"
)
http_port_of() { case "$1" in sip-edge) echo "$EDGE_HTTP" ;; presence-store) echo "$STORE_HTTP" ;; notifier) echo "$NOTIFIER_HTTP" ;; esac; }

say "bench: namespace $NAMESPACE, SIP udp 127.0.0.1:$SIP_PORT, logs in $BENCH_LOGS"
for name in $SERVICES; do
    log="$BENCH_LOGS/$name-$NAMESPACE.log"
    env "${unset_presence[@]}" "${service_env[@]}" setsid "$PY" -m "$(module_of "$name")" \
        >"$log" 2>&1 </dev/null &
    service_pid[$name]=$!
    "$PY" "$CTL" wait-ready "http://127.0.0.1:$(http_port_of "$name")/health/ready" \
        "${service_pid[$name]}" 60 || { tail -n 20 "$log" >&2; die "$name did not become ready, see $log"; }
    say "  $name: ready (pid ${service_pid[$name]})"
done

# --- PUBLISH under load ---------------------------------------------------------------------
publish_rc=0
"$PY" "$REPO_ROOT/bench/publish_bench.py" --port "$SIP_PORT" --rate "$BENCH_RATE" \
    --duration "$BENCH_DURATION" --users "$BENCH_USERS" --json "$WORK/publish.json" || publish_rc=$?

# The services are done: stop them before reading the topics, so nothing competes.
for name in $(echo "$SERVICES" | tr ' ' '\n' | tac); do stop_service "$name"; done
"$PY" "$CTL" breakdown "$KAFKA_BOOTSTRAP" "$NAMESPACE" bench-edge "$WORK/breakdown.json" \
    || say "could not read the latency breakdown from the topics"

OUT="$PRESENCE_VAR/bench/$STAMP.json"
"$PY" "$CTL" report "$OUT" "$WORK" \
    "timestamp=$STAMP" "git=$(git -C "$REPO_ROOT" describe --always --dirty 2>/dev/null || echo unknown)" \
    "namespace=$NAMESPACE" "cpus=$(nproc)" "log_level=$BENCH_LOG_LEVEL" "python=$("$PY" -V 2>&1)" \
    "loadavg_before=$LOAD_BEFORE" "loadavg_after=$(cut -d' ' -f1-3 /proc/loadavg)"
[ "$publish_rc" -eq 0 ] || die "publish_bench reported failures (exit $publish_rc); service logs in $BENCH_LOGS"
