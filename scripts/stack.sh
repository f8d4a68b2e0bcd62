#!/usr/bin/env bash
# The whole local system: PostgreSQL, Redis, Kafka, the schema, the topics and the
# three services. Usage: stack.sh up|down|infra-up|infra-down
# Running `up` again while everything runs is harmless: each part checks its pid file.
set -euo pipefail
source "$(dirname "$0")/common.sh"

S="$REPO_ROOT/scripts"
PY="$REPO_ROOT/.venv/bin/python"
# The services read these; derived from the ports unless set by the user.
export PRESENCE_DB_URL="${PRESENCE_DB_URL:-postgresql://presence:presence@127.0.0.1:$PRESENCE_PG_PORT/presence}"
export PRESENCE_REDIS_URL="${PRESENCE_REDIS_URL:-redis://127.0.0.1:$PRESENCE_REDIS_PORT/0}"
export PRESENCE_KAFKA_BOOTSTRAP="${PRESENCE_KAFKA_BOOTSTRAP:-127.0.0.1:$PRESENCE_KAFKA_PORT}"
if [ -z "${PRESENCE_ENV_FILE:-}" ] && [ -f "$REPO_ROOT/presence.env" ]; then
    export PRESENCE_ENV_FILE="$REPO_ROOT/presence.env"
fi

# XCAP passwords derive from this secret (lib/presence/xcap/credentials.py): one is
# made for this installation at the first start and kept with its data.
xcap_secret() {
    [ -n "${PRESENCE_ENV_FILE:-}" ] && grep -q '^PRESENCE_XCAP_SECRET=.' "$PRESENCE_ENV_FILE" && return
    if [ -z "${PRESENCE_XCAP_SECRET:-}" ] && [ "${PRESENCE_XCAP_AUTH:-secret}" = secret ]; then
        local file="$PRESENCE_VAR/xcap-secret"
        if [ ! -s "$file" ]; then
            (umask 077; "$PY" -c "import secrets; print(secrets.token_urlsafe(32))" >"$file")
        fi
        PRESENCE_XCAP_SECRET="$(cat "$file")"
        export PRESENCE_XCAP_SECRET
    fi
}

# SIP authentication: `make run` is a development system on 127.0.0.1, so it runs
# without (PRESENCE_AUTH=none, warned about at start) unless told otherwise; with
# PRESENCE_AUTH=digest it gets a nonce secret kept with its data.
auth_defaults() {
    in_env_file() { [ -n "${PRESENCE_ENV_FILE:-}" ] && grep -q "^$1=." "$PRESENCE_ENV_FILE"; }
    if [ -z "${PRESENCE_AUTH:-}" ] && ! in_env_file PRESENCE_AUTH; then
        export PRESENCE_AUTH=none
    fi
    if [ "${PRESENCE_AUTH:-}" = digest ] && [ -z "${PRESENCE_AUTH_SECRET:-}" ] \
            && ! in_env_file PRESENCE_AUTH_SECRET; then
        local file="$PRESENCE_VAR/auth-secret"
        [ -s "$file" ] || (umask 077; "$PY" -c "import secrets; print(secrets.token_urlsafe(32))" >"$file")
        PRESENCE_AUTH_SECRET="$(cat "$file")"
        export PRESENCE_AUTH_SECRET
    fi
}

# The admin API's bearer token (presence-store /admin, presencectl): one is made for
# this installation at the first start and kept with its data, unless one is given.
admin_token() {
    [ -n "${PRESENCE_ENV_FILE:-}" ] && grep -q '^PRESENCE_ADMIN_TOKEN=.' "$PRESENCE_ENV_FILE" && return
    if [ -z "${PRESENCE_ADMIN_TOKEN:-}" ]; then
        local file="$PRESENCE_VAR/admin-token"
        [ -s "$file" ] || (umask 077; "$PY" -c "import secrets; print(secrets.token_urlsafe(32))" >"$file")
        PRESENCE_ADMIN_TOKEN="$(cat "$file")"
        export PRESENCE_ADMIN_TOKEN
    fi
}

# SIP over TLS, WSS and HTTPS need a certificate: without one given, a local CA and
# a server certificate it signs are made once under var/tls (kept, so a CA the user
# trusted stays valid), for 127.0.0.1, ::1, localhost, this host's name and
# PRESENCE_SIP_HOST.
tls_defaults() {
    in_env_file() { [ -n "${PRESENCE_ENV_FILE:-}" ] && grep -q "^$1=." "$PRESENCE_ENV_FILE"; }
    if [ -n "${PRESENCE_TLS_CERT:-}" ] || in_env_file PRESENCE_TLS_CERT; then
        TLS_CA=""
        return
    fi
    local dir="$PRESENCE_VAR/tls" hosts
    hosts="$(hostname) ${PRESENCE_SIP_HOST:-}"
    # shellcheck disable=SC2086  # the host names are separate arguments
    "$PY" -m presence.runtime.local_ca "$dir" $hosts >/dev/null  # keys 0600, certificates readable
    export PRESENCE_TLS_CERT="$dir/server.pem" PRESENCE_TLS_KEY="$dir/server-key.pem"
    TLS_CA="$dir/ca.pem"
}

infra_up() {
    "$S/venv.sh"
    "$S/postgres.sh" start
    "$S/redis.sh" start
    "$S/kafka.sh" install
    "$S/kafka.sh" start
    "$PY" -m presence_store.migrate
    "$PY" -m presence.bus.topics
}

up() {
    # Check the configuration before starting anything, so a typo costs one line.
    "$S/venv.sh"
    "$PY" -m presence.settings || exit 1
    infra_up
    xcap_secret
    auth_defaults
    admin_token
    tls_defaults
    "$S/webclient.sh"   # the browser client presence-store serves under /client/
    "$S/services.sh" start
    local sip_port="${PRESENCE_SIP_PORT:-5060}" sip_host="${PRESENCE_SIP_HOST:-127.0.0.1}"
    cat <<MSG

The presence server is up.
  SIP (sip-edge)    udp+tcp $sip_host:$sip_port, tls $sip_host:${PRESENCE_SIP_TLS_PORT:-5061}
                    ws://$sip_host:${PRESENCE_SIP_WS_PORT:-5066}, wss://$sip_host:${PRESENCE_SIP_WSS_PORT:-7443} (subprotocol sip)
  HTTPS (XCAP, admin) https://127.0.0.1:${PRESENCE_STORE_HTTPS_PORT:-8443}
  browser client    https://127.0.0.1:${PRESENCE_STORE_HTTPS_PORT:-8443}/client/ (trust the local CA below),
                    or http://127.0.0.1:${PRESENCE_STORE_HTTP_PORT:-8080}/client/ from this machine
  sip-edge          http://127.0.0.1:${PRESENCE_EDGE_HTTP_PORT:-18081}/health/ready
  presence-store    http://127.0.0.1:${PRESENCE_STORE_HTTP_PORT:-8080}/health/ready
  XCAP pres-rules   http://127.0.0.1:${PRESENCE_STORE_HTTP_PORT:-8080}/xcap-root/pres-rules/users/<sip:user@domain>/index
                    a user's password (HTTP Basic, user name = the AOR):
                    PRESENCE_XCAP_SECRET=\$(cat $PRESENCE_VAR/xcap-secret) .venv/bin/python -m presence_store.xcap_passwords sip:alice@127.0.0.1
  notifier          http://127.0.0.1:${PRESENCE_NOTIFIER_HTTP_PORT:-18083}/health/ready
  metrics           /metrics on each of the three HTTP ports (Prometheus)
  admin API         http://127.0.0.1:${PRESENCE_STORE_HTTP_PORT:-8080}/docs, or the command line:
                    PRESENCE_ADMIN_TOKEN=\$(cat $PRESENCE_VAR/admin-token) .venv/bin/presencectl presentities
  SIP auth          ${PRESENCE_AUTH:-digest} (PRESENCE_AUTH=digest make run to require passwords;
                    users: .venv/bin/python -m presence_store.credentials add alice@127.0.0.1)
  PostgreSQL        127.0.0.1:$PRESENCE_PG_PORT (database presence, user presence)
  Redis             127.0.0.1:$PRESENCE_REDIS_PORT
  Kafka             127.0.0.1:$PRESENCE_KAFKA_PORT
  data and logs     $PRESENCE_VAR (logs in $LOG_DIR)
$(if [ -n "$TLS_CA" ]; then cat <<TRUST
  local CA          $TLS_CA made the server certificate; trust it in a client, e.g.
                    curl --cacert $TLS_CA https://127.0.0.1:${PRESENCE_STORE_HTTPS_PORT:-8443}/health/ready
                    system-wide (Debian): cp $TLS_CA /usr/local/share/ca-certificates/presence-local-ca.crt && update-ca-certificates
                    browsers: import it as an authority (Chromium: Settings, Privacy and security, Security, Manage certificates)
TRUST
fi)
Try it:  sipsak -vv -s sip:$sip_host:$sip_port   (or see README.md: a first PUBLISH and SUBSCRIBE by hand)
Stop it: make stop
MSG
}

down() {
    "$S/services.sh" stop
    "$S/kafka.sh" stop
    "$S/redis.sh" stop
    "$S/postgres.sh" stop
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    infra-up) infra_up ;;
    infra-down) "$S/kafka.sh" stop; "$S/redis.sh" stop; "$S/postgres.sh" stop ;;
    *) die "usage: $0 up|down|infra-up|infra-down" ;;
esac
