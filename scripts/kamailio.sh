#!/usr/bin/env bash
# Kamailio 5.6 with its presence module, from Debian's packages: the reference that
# `make bench` compares the project with. Config: bench/kamailio.cfg. It listens on UDP
# 127.0.0.1:$KAMAILIO_SIP_PORT only and keeps its tables in a database of its own
# ($KAMAILIO_DB, recreated at every start) in the project's PostgreSQL
# (127.0.0.1:$PRESENCE_PG_PORT, which must be running). Pid file $RUN_DIR/kamailio.pid,
# log $LOG_DIR/kamailio.log.
#
# Usage: kamailio.sh install|start|stop|status
# Environment: KAMAILIO_SIP_PORT (25060), KAMAILIO_DB (kamailio_bench), KAMAILIO_CHILDREN
# (UDP workers, 4), KAMAILIO_SUBS_DB_MODE (presence subs_db_mode: 2, Kamailio's default,
# keeps subscriptions in memory and writes them back by a timer; 1 writes through),
# KAMAILIO_MAX_EXPIRES (PRESENCE_MAX_EXPIRES or 3600), KAMAILIO_SHM_MB (shared memory, 256).
set -euo pipefail
source "$(dirname "$0")/common.sh"

KAMAILIO_SIP_PORT="${KAMAILIO_SIP_PORT:-25060}"
KAMAILIO_DB="${KAMAILIO_DB:-kamailio_bench}"
KAMAILIO_CHILDREN="${KAMAILIO_CHILDREN:-4}"
KAMAILIO_SUBS_DB_MODE="${KAMAILIO_SUBS_DB_MODE:-2}"
KAMAILIO_MAX_EXPIRES="${KAMAILIO_MAX_EXPIRES:-${PRESENCE_MAX_EXPIRES:-3600}}"
KAMAILIO_SHM_MB="${KAMAILIO_SHM_MB:-256}"
CFG="$REPO_ROOT/bench/kamailio.cfg"
SQL_DIR=/usr/share/kamailio/postgres

PG_USER=presence PG_PASSWORD=presence

[[ "$KAMAILIO_SUBS_DB_MODE" =~ ^[0-3]$ ]] || die "KAMAILIO_SUBS_DB_MODE: 0 (memory), 1 (write-through), 2 (write-back) or 3 (database only), got '$KAMAILIO_SUBS_DB_MODE'"
[[ "$KAMAILIO_DB" =~ ^[a-z_][a-z0-9_]*$ ]] || die "KAMAILIO_DB: not a plain database name: '$KAMAILIO_DB'"
for knob in KAMAILIO_SIP_PORT KAMAILIO_CHILDREN KAMAILIO_SUBS_DB_MODE KAMAILIO_MAX_EXPIRES KAMAILIO_SHM_MB; do
    [[ "${!knob}" =~ ^[0-9]+$ ]] || die "$knob: must be a whole number, got '${!knob}'"
done

# installed: kamailio, its presence and PostgreSQL modules, and psql for the schema.
installed() {
    local presence
    presence="$(ls /usr/lib/*/kamailio/modules/presence.so 2>/dev/null | head -n 1)"
    command -v kamailio >/dev/null && command -v psql >/dev/null && [ -n "$presence" ] \
        && [ -f "${presence%/*}/db_postgres.so" ] && [ -f "$SQL_DIR/presence-create.sql" ]
}

cmd_install() {
    installed || apt_install kamailio kamailio-presence-modules kamailio-postgres-modules postgresql-client
    installed || die "kamailio, its presence and postgres modules or psql not found after install"
}

psql_admin() {
    PGPASSWORD="$PG_PASSWORD" PGOPTIONS="-c client_min_messages=warning" psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PRESENCE_PG_PORT" \
        -U "$PG_USER" "$@"
}

cmd_db() {
    port_in_use "$PRESENCE_PG_PORT" || die "PostgreSQL does not answer on 127.0.0.1:$PRESENCE_PG_PORT (scripts/postgres.sh start)"
    psql_admin -d postgres -c "DROP DATABASE IF EXISTS $KAMAILIO_DB WITH (FORCE)" \
        -c "CREATE DATABASE $KAMAILIO_DB" >/dev/null
    # The version table first: each module checks its tables' versions in it at start.
    psql_admin -d "$KAMAILIO_DB" -f "$SQL_DIR/standard-create.sql" -f "$SQL_DIR/presence-create.sql" \
        >"$LOG_DIR/kamailio-db.log" 2>&1 || { tail -n 5 "$LOG_DIR/kamailio-db.log" >&2; die "creating $KAMAILIO_DB failed"; }
}

# sip_ping: one OPTIONS over UDP, true when a 200 comes back within a second.
sip_ping() {
    python3 - "$KAMAILIO_SIP_PORT" <<'PY'
import socket, sys
port = int(sys.argv[1])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0))
s.settimeout(1.0)
me = s.getsockname()[1]
s.sendto((f"OPTIONS sip:ping@127.0.0.1:{port} SIP/2.0\r\n"
          f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK-ping{me};rport\r\n"
          f"Max-Forwards: 70\r\nFrom: <sip:ping@127.0.0.1>;tag=p{me}\r\nTo: <sip:ping@127.0.0.1>\r\n"
          f"Call-ID: ping-{me}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode(), ("127.0.0.1", port))
try:
    sys.exit(0 if s.recv(65535).startswith(b"SIP/2.0 200") else 1)
except OSError:
    sys.exit(1)
PY
}

cmd_start() {
    cmd_install
    if pid_alive kamailio; then say "kamailio: already running (pid $(cat "$RUN_DIR/kamailio.pid"))"; return 0; fi
    if port_in_use "$KAMAILIO_SIP_PORT" udp; then
        die "UDP port $KAMAILIO_SIP_PORT is taken: set KAMAILIO_SIP_PORT to a free port"
    fi
    cmd_db
    local log="$LOG_DIR/kamailio.log" dburl="postgres://$PG_USER:$PG_PASSWORD@127.0.0.1:$PRESENCE_PG_PORT/$KAMAILIO_DB"
    kamailio -f "$CFG" -c -A "LISTEN=udp:127.0.0.1:$KAMAILIO_SIP_PORT" -A "DBURL=\"$dburl\"" \
        >"$log" 2>&1 || { tail -n 20 "$log" >&2; die "bench/kamailio.cfg does not check, see $log"; }
    # -DD: stays in the foreground (its children are forked as usual), so its pid is $!;
    # -E: log to stderr, i.e. the log file.
    setsid kamailio -f "$CFG" -DD -E -m "$KAMAILIO_SHM_MB" \
        -A "LISTEN=udp:127.0.0.1:$KAMAILIO_SIP_PORT" -A "DBURL=\"$dburl\"" \
        -A "CHILDREN=$KAMAILIO_CHILDREN" -A "MAXEXPIRES=$KAMAILIO_MAX_EXPIRES" \
        -A "SUBSDBMODE=$KAMAILIO_SUBS_DB_MODE" >"$log" 2>&1 </dev/null &
    echo $! >"$RUN_DIR/kamailio.pid"
    if ! wait_for "kamailio on udp 127.0.0.1:$KAMAILIO_SIP_PORT" 30 sip_ping; then
        tail -n 20 "$log" >&2
        stop_pid kamailio 5
        die "kamailio did not answer OPTIONS, see $log"
    fi
    say "kamailio: ready on udp 127.0.0.1:$KAMAILIO_SIP_PORT (pid $(cat "$RUN_DIR/kamailio.pid"), database $KAMAILIO_DB, $KAMAILIO_CHILDREN UDP workers)"
}

case "${1:-}" in
    install) cmd_install ;;
    start) cmd_start ;;
    stop) stop_pid kamailio ;;
    status) pid_alive kamailio ;;
    *) die "usage: $0 install|start|stop|status" ;;
esac
