#!/bin/sh
# Grafana of the observability profile (docker-compose.yml) starts with no default
# password: its admin password is GRAFANA_ADMIN_PASSWORD when that is set (at least
# 12 characters, not "admin"), else one generated at the first start and kept in
# Grafana's data volume next to its database, readable with
#   docker compose exec grafana cat /var/lib/grafana/presence-admin-password
# It is never written to the log. Grafana applies it only when it creates its
# database (the first start); later, change it in Grafana or with
# `grafana cli admin reset-admin-password`.
set -eu

file="${GRAFANA_PASSWORD_FILE:-/var/lib/grafana/presence-admin-password}"
run="${GRAFANA_RUN:-/run.sh}"

if [ -n "${GRAFANA_ADMIN_PASSWORD:-}" ]; then
    if [ "$GRAFANA_ADMIN_PASSWORD" = admin ] || [ ${#GRAFANA_ADMIN_PASSWORD} -lt 12 ]; then
        echo "grafana: GRAFANA_ADMIN_PASSWORD must be at least 12 characters and not 'admin';" \
             "unset it to have one generated" >&2
        exit 78  # EX_CONFIG
    fi
    GF_SECURITY_ADMIN_PASSWORD="$GRAFANA_ADMIN_PASSWORD"
elif [ -s "$file" ]; then
    GF_SECURITY_ADMIN_PASSWORD="$(cat "$file")"
else
    umask 077
    GF_SECURITY_ADMIN_PASSWORD="$(LC_ALL=C tr -dc 'A-Za-z0-9' </dev/urandom | head -c 24)"
    if [ ${#GF_SECURITY_ADMIN_PASSWORD} -ne 24 ]; then
        echo "grafana: could not generate an admin password" >&2
        exit 70  # EX_SOFTWARE
    fi
    printf '%s\n' "$GF_SECURITY_ADMIN_PASSWORD" >"$file"
    echo "grafana: generated the admin password (user admin); read it with:" \
         "docker compose exec grafana cat $file" >&2
fi
export GF_SECURITY_ADMIN_PASSWORD
unset GRAFANA_ADMIN_PASSWORD
exec "$run" "$@"
