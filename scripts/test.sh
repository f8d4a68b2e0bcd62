#!/usr/bin/env bash
# `make test`: lint, unit tests, then integration tests against real PostgreSQL,
# Redis and Kafka. Reuses infrastructure that already runs; stops only what it started.
# The integration tests start their own service processes (tests/integration/conftest.py)
# on free ports and in their own Kafka namespace and database, so a running `make run`
# is neither used nor disturbed.
set -euo pipefail
source "$(dirname "$0")/common.sh"
S="$REPO_ROOT/scripts"

"$S/venv.sh"
# Real SIP clients for the interoperability tests (tests/integration/test_interop_*.py);
# PJSIP's comes from PyPI with the venv (requirements-dev.txt).
clients=()
command -v baresip >/dev/null || clients+=(baresip-core)
command -v linphonec >/dev/null || clients+=(linphone-cli)
# Debian's chromium for the browser client's test (tests/integration/test_webclient.py).
command -v chromium >/dev/null || clients+=(chromium)
[ "${#clients[@]}" -eq 0 ] || apt_install "${clients[@]}"
"$S/webclient.sh"
"$REPO_ROOT/.venv/bin/ruff" check "$REPO_ROOT/lib" "$REPO_ROOT/services" "$REPO_ROOT/tools" \
    "$REPO_ROOT/tests"

started=()
for part in postgres redis kafka; do
    pid_alive "$part" || started+=("$part")
done
cleanup() {
    local part
    for part in "${started[@]}"; do "$S/$part.sh" stop || true; done
}
trap cleanup EXIT
"$S/stack.sh" infra-up

export PRESENCE_DB_URL="${PRESENCE_DB_URL:-postgresql://presence:presence@127.0.0.1:$PRESENCE_PG_PORT/presence}"
export PRESENCE_REDIS_URL="${PRESENCE_REDIS_URL:-redis://127.0.0.1:$PRESENCE_REDIS_PORT/0}"
export PRESENCE_KAFKA_BOOTSTRAP="${PRESENCE_KAFKA_BOOTSTRAP:-127.0.0.1:$PRESENCE_KAFKA_PORT}"
cd "$REPO_ROOT"
.venv/bin/python -m pytest -q -p no:cacheprovider tests "$@"
