#!/usr/bin/env bash
# The three services as background processes (pid files in var/run, logs in var/log).
# Usage: services.sh start|stop|status
set -euo pipefail
source "$(dirname "$0")/common.sh"

PY="$REPO_ROOT/.venv/bin/python"
SERVICES="presence-store notifier sip-edge"   # start order; stop goes in reverse

module_of() { case "$1" in sip-edge) echo sip_edge ;; presence-store) echo presence_store ;; notifier) echo notifier ;; esac; }
http_port_of() {
    case "$1" in
        sip-edge) echo "${PRESENCE_EDGE_HTTP_PORT:-18081}" ;;
        presence-store) echo "${PRESENCE_STORE_HTTP_PORT:-8080}" ;;
        notifier) echo "${PRESENCE_NOTIFIER_HTTP_PORT:-18083}" ;;
    esac
}

ready() { "$PY" -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)" "$1"; }

cmd_start() {
    for name in $SERVICES; do
        if pid_alive "$name"; then say "$name: already running (pid $(cat "$RUN_DIR/$name.pid"))"; continue; fi
        local log="$LOG_DIR/$name.log" port; port="$(http_port_of "$name")"
        setsid "$PY" -m "$(module_of "$name")" >>"$log" 2>&1 </dev/null &
        echo $! >"$RUN_DIR/$name.pid"
        local pid=$!
        local deadline=$((SECONDS + 60))
        say "  waiting for $name to be ready (http://127.0.0.1:$port/health/ready)..."
        until ready "http://127.0.0.1:$port/health/ready" >/dev/null 2>&1; do
            if ! kill -0 "$pid" 2>/dev/null; then
                rm -f "$RUN_DIR/$name.pid"
                tail -n 5 "$log" >&2
                die "$name exited at start; its log: $log"
            fi
            [ "$SECONDS" -lt "$deadline" ] || { tail -n 5 "$log" >&2; die "$name not ready after 60s; its log: $log"; }
            sleep 0.2
        done
        say "$name: ready (pid $pid)"
    done
}

cmd_stop() {
    for name in $(echo "$SERVICES" | tr ' ' '\n' | tac); do stop_pid "$name" 20; done
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) for name in $SERVICES; do pid_alive "$name" || exit 1; done ;;
    *) die "usage: $0 start|stop|status" ;;
esac
