#!/bin/bash
# The part of apache/kafka's start-up that docker-compose.yml relies on:
# every KAFKA_<NAME> variable becomes a server.properties entry (prefix dropped,
# lower case, "_" -> ".", "__" -> "_", "___" -> "-"); KRaft storage is formatted
# with CLUSTER_ID on first start; the broker runs as appuser.
set -euo pipefail
CONFIG=/opt/kafka/config/server.properties
: "${CLUSTER_ID:=5L6g3nShT-eMCtK--X86sw}" "${KAFKA_HEAP_OPTS:=-Xms256m -Xmx512m}"
NOT_PROPERTIES=" KAFKA_HEAP_OPTS KAFKA_OPTS KAFKA_JVM_PERFORMANCE_OPTS KAFKA_LOG4J_OPTS KAFKA_GC_LOG_OPTS KAFKA_JMX_OPTS KAFKA_DEBUG KAFKA_VERSION "
LOG_DIRS="${KAFKA_LOG_DIRS:-/tmp/kraft-combined-logs}"

if [ "$(id -u)" = 0 ]; then
    IFS=, read -ra dirs <<<"$LOG_DIRS"
    mkdir -p "${dirs[@]}" && chown appuser:appuser "${dirs[@]}"
    exec setpriv --reuid=appuser --regid=appuser --init-groups "$0" "$@"
fi

[ -n "${KAFKA_PROCESS_ROLES:-}" ] || { echo "error: set KAFKA_PROCESS_ROLES and the other KAFKA_* variables (see docker-compose.yml)" >&2; exit 1; }
{
    echo "# Written by entrypoint.sh from the KAFKA_* environment variables."
    for name in $(compgen -e | grep '^KAFKA_' | sort); do
        [[ $NOT_PROPERTIES == *" $name "* ]] && continue
        key="$(echo "${name#KAFKA_}" | tr '[:upper:]' '[:lower:]' \
            | sed -e 's/___/-/g' -e 's/__/@/g' -e 's/_/./g' -e 's/@/_/g')"
        echo "$key=${!name}"
    done
} >"$CONFIG"

CP=(-cp "/opt/kafka/libs/*" -Dlog4j2.configurationFile=/opt/kafka/config/log4j2.properties)
IFS=, read -ra dirs <<<"$LOG_DIRS"
if [ ! -f "${dirs[0]}/meta.properties" ]; then
    echo "kafka: formatting KRaft storage in $LOG_DIRS (cluster id $CLUSTER_ID)"
    java "${CP[@]}" kafka.tools.StorageTool format --config "$CONFIG" \
        --cluster-id "$CLUSTER_ID" --ignore-formatted
fi
# shellcheck disable=SC2086  # KAFKA_HEAP_OPTS holds several flags
exec java $KAFKA_HEAP_OPTS -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError \
    -Djava.awt.headless=true "${CP[@]}" kafka.Kafka "$CONFIG"
