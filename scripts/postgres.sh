#!/usr/bin/env bash
# PostgreSQL from Debian's packages, run as a private cluster on 127.0.0.1:$PRESENCE_PG_PORT
# with its data in $PRESENCE_VAR/postgres. Usage: postgres.sh install|start|stop|status
set -euo pipefail
source "$(dirname "$0")/common.sh"

DATA="$PRESENCE_VAR/postgres"
PG_USER=presence PG_PASSWORD=presence PG_DB=presence

pg_bin() {
    local dir
    dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
    [ -n "$dir" ] && [ -x "$dir/postgres" ] && printf '%s' "$dir"
}

# PostgreSQL refuses to run as root: as root, the cluster belongs to the
# 'postgres' user that the Debian package creates.
as_owner() {
    if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

cmd_install() {
    pg_bin >/dev/null || apt_install postgresql
    pg_bin >/dev/null || die "PostgreSQL binaries not found under /usr/lib/postgresql after install"
}

cmd_start() {
    cmd_install
    local bin; bin="$(pg_bin)"
    if pid_alive postgres; then say "postgres: already running on 127.0.0.1:$PRESENCE_PG_PORT"; return 0; fi
    if port_in_use "$PRESENCE_PG_PORT"; then
        die "port $PRESENCE_PG_PORT is taken by another program: set PRESENCE_PG_PORT to a free port"
    fi
    mkdir -p "$DATA"
    [ "$(id -u)" -ne 0 ] || chown postgres:postgres "$DATA"
    if [ ! -f "$DATA/PG_VERSION" ]; then
        say "postgres: creating a cluster in $DATA"
        local pwfile; pwfile="$(mktemp)"; printf '%s\n' "$PG_PASSWORD" >"$pwfile"; chmod 644 "$pwfile"
        as_owner "$bin/initdb" -D "$DATA" -U "$PG_USER" --pwfile="$pwfile" \
            --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >"$LOG_DIR/initdb.log" \
            || { rm -f "$pwfile"; die "initdb failed, see $LOG_DIR/initdb.log"; }
        rm -f "$pwfile"
    fi
    local log="$LOG_DIR/postgres.log"
    touch "$log"; [ "$(id -u)" -ne 0 ] || chown postgres:postgres "$log"
    # Socket in the data folder: no clash with a system cluster in /var/run/postgresql.
    as_owner "$bin/pg_ctl" -D "$DATA" -l "$log" -w -t 60 start \
        -o "-c listen_addresses=127.0.0.1 -p $PRESENCE_PG_PORT -k $DATA -c max_connections=200 -c fsync=on" >/dev/null \
        || { tail -n 20 "$log" >&2; die "postgres did not start, see $log"; }
    head -n 1 "$DATA/postmaster.pid" >"$RUN_DIR/postgres.pid"
    if ! as_owner "$bin/psql" -h "$DATA" -p "$PRESENCE_PG_PORT" -U "$PG_USER" -d postgres -tAc \
        "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'" | grep -q 1; then
        as_owner "$bin/createdb" -h "$DATA" -p "$PRESENCE_PG_PORT" -U "$PG_USER" "$PG_DB"
    fi
    say "postgres: ready on 127.0.0.1:$PRESENCE_PG_PORT (database $PG_DB, user $PG_USER)"
}

cmd_stop() {
    local bin; bin="$(pg_bin || true)"
    if pid_alive postgres && [ -n "$bin" ]; then
        as_owner "$bin/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null && say "postgres: stopped"
    fi
    rm -f "$RUN_DIR/postgres.pid"
}

case "${1:-}" in
    install) cmd_install ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) pid_alive postgres ;;
    *) die "usage: $0 install|start|stop|status" ;;
esac
