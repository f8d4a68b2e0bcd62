#!/usr/bin/env bash
# `make chaos`: the fault suite (tests/chaos/run.py). Installs what is missing, then
# starts PostgreSQL, Redis and Kafka of its own (data and logs in $PRESENCE_VAR/chaos,
# on free ports) and the three services, kills and restarts each of them under a
# bounded SIP load, checks that nothing was lost, and stops everything it started.
# It neither uses nor disturbs a running `make run` or `make test`.
set -euo pipefail
source "$(dirname "$0")/common.sh"
S="$REPO_ROOT/scripts"

"$S/venv.sh"
"$S/postgres.sh" install
"$S/redis.sh" install
"$S/kafka.sh" install          # the jars in $PRESENCE_VAR/kafka-dist, shared with make run
export PRESENCE_KAFKA_DIST="${PRESENCE_KAFKA_DIST:-$PRESENCE_VAR/kafka-dist}"
export CHAOS_VAR="${CHAOS_VAR:-$PRESENCE_VAR/chaos}"
cd "$REPO_ROOT"
# A bound on the whole run, whatever happens inside it.
exec timeout --kill-after=30 "${CHAOS_TIMEOUT:-1200}" .venv/bin/python -m tests.chaos.run "$@"
