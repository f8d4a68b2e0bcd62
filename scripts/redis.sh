#!/usr/bin/env bash
# Redis from Debian's packages on 127.0.0.1:$PRESENCE_REDIS_PORT, data in $PRESENCE_VAR/redis.
# Usage: redis.sh install|start|stop|status
set -euo pipefail
source "$(dirname "$0")/common.sh"

DATA="$PRESENCE_VAR/redis"

cmd_install() {
    command -v redis-server >/dev/null || apt_install redis-server
    command -v redis-server >/dev/null || die "redis-server not found after install"
}

cmd_start() {
    cmd_install
    if pid_alive redis; then say "redis: already running on 127.0.0.1:$PRESENCE_REDIS_PORT"; return 0; fi
    if port_in_use "$PRESENCE_REDIS_PORT"; then
        die "port $PRESENCE_REDIS_PORT is taken by another program: set PRESENCE_REDIS_PORT to a free port"
    fi
    mkdir -p "$DATA"
    # Redis holds only locks and leases (state lives in PostgreSQL), so no persistence.
    redis-server --bind 127.0.0.1 --port "$PRESENCE_REDIS_PORT" --dir "$DATA" \
        --save "" --appendonly no --daemonize yes \
        --pidfile "$RUN_DIR/redis.pid" --logfile "$LOG_DIR/redis.log" \
        || die "redis-server did not start, see $LOG_DIR/redis.log"
    wait_for "redis on 127.0.0.1:$PRESENCE_REDIS_PORT" 20 \
        redis-cli -h 127.0.0.1 -p "$PRESENCE_REDIS_PORT" ping \
        || die "redis did not answer, see $LOG_DIR/redis.log"
    say "redis: ready on 127.0.0.1:$PRESENCE_REDIS_PORT"
}

case "${1:-}" in
    install) cmd_install ;;
    start) cmd_start ;;
    stop) stop_pid redis ;;
    status) pid_alive redis ;;
    *) die "usage: $0 install|start|stop|status" ;;
esac
