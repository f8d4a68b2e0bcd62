#!/usr/bin/env bash
# A real single-node Apache Kafka broker (KRaft: broker + controller in one JVM),
# fetched from Maven Central and run directly on Java 17 -- no Docker, no tarball.
#
#   scripts/kafka.sh install   fetch the broker's jars into $PRESENCE_VAR/kafka-dist/libs
#   scripts/kafka.sh start     format storage on first start, start, wait until it serves
#   scripts/kafka.sh stop      SIGTERM (then SIGKILL after 30 s); harmless if not running
#   scripts/kafka.sh status    exit 0 if running
#
# Environment:
#   PRESENCE_VAR                    runtime state (default: <repo>/var)
#   PRESENCE_KAFKA_DIST             where the broker's jars go (default: $PRESENCE_VAR/kafka-dist)
#   PRESENCE_KAFKA_PORT             client listener on 127.0.0.1 (default 19092)
#   PRESENCE_KAFKA_CONTROLLER_PORT  KRaft controller listener on 127.0.0.1 (default 19093)
#   PRESENCE_KAFKA_START_TIMEOUT    seconds to wait for the broker to serve (default 60)
#   PRESENCE_KAFKA_HEAP_OPTS        JVM heap flags (default "-Xms256m -Xmx768m")
set -euo pipefail

source "$(dirname "$0")/common.sh"
PRESENCE_KAFKA_START_TIMEOUT="${PRESENCE_KAFKA_START_TIMEOUT:-60}"
PRESENCE_KAFKA_HEAP_OPTS="${PRESENCE_KAFKA_HEAP_OPTS:--Xms256m -Xmx768m}"

HOST=127.0.0.1
POM="$REPO_ROOT/infra/kafka/pom.xml"
DIST_DIR="${PRESENCE_KAFKA_DIST:-$PRESENCE_VAR/kafka-dist}"
LIBS_DIR="$DIST_DIR/libs"
KAFKA_DIR="$PRESENCE_VAR/kafka"
DATA_DIR="$KAFKA_DIR/data"
LOG_DIRS="$DATA_DIR/logs"
CLUSTER_ID_FILE="$DATA_DIR/cluster.id"
SERVER_PROPERTIES="$KAFKA_DIR/server.properties"
LOG4J_CONFIG="$KAFKA_DIR/log4j2.properties"
PID_FILE="$RUN_DIR/kafka.pid"
LOG_FILE="$LOG_DIR/kafka.log"

say() { echo "kafka: $*"; }
die() { echo "kafka: $*" >&2; exit 1; }

# Wall-clock milliseconds (bash 5's EPOCHREALTIME), and "1.2s" elapsed since one.
now_ms() { local t="${EPOCHREALTIME/[.,]/}"; echo "${t:0:-3}"; }
since() { local ms=$(($(now_ms) - $1)); printf '%d.%01ds' $((ms / 1000)) $((ms % 1000 / 100)); }

kafka_version() {
    sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$POM" | head -n 1
}

require_java() {
    command -v java >/dev/null 2>&1 \
        || die "java not found: install a Java 17 runtime (apt-get install -y openjdk-17-jre-headless)"
    local major
    major="$(java -version 2>&1 | sed -n 's/.* version "\([0-9]*\).*/\1/p' | head -n 1)"
    if [[ "$major" =~ ^[0-9]+$ ]] && ((major < 17)); then
        die "java $major found but Kafka 4 needs Java 17 or newer (apt-get install -y openjdk-17-jre-headless)"
    fi
}

# --- install ------------------------------------------------------------------

installed() {
    # Installed means: the jars of the version the pom asks for are there.
    [[ -f "$LIBS_DIR/kafka_2.13-$(kafka_version).jar" ]]
}

cmd_install() {
    require_java
    if installed; then
        [[ "${1:-}" == quiet ]] || say "Apache Kafka $(kafka_version) already installed in $LIBS_DIR"
        return 0
    fi
    command -v mvn >/dev/null 2>&1 \
        || die "mvn not found: install Maven (apt-get install -y maven) to fetch the Kafka jars"
    local version tmp started
    version="$(kafka_version)"
    [[ -n "$version" ]] || die "cannot read <kafka.version> from $POM"
    say "fetching Apache Kafka $version from Maven Central..."
    started=$(now_ms)
    mkdir -p "$DIST_DIR"
    tmp="$(mktemp -d "$DIST_DIR/.libs.XXXXXX")"
    # -q prints only errors; the sed drops the bare colour resets Maven 3.8 emits anyway.
    if ! mvn -q -B -f "$POM" dependency:copy-dependencies \
            -DincludeScope=runtime -DoutputDirectory="$tmp" 2>&1 \
            | sed -e 's/\x1b\[[0-9;]*m//g' -e '/^[[:space:]]*$/d' >&2; then
        rm -rf "$tmp"
        die "fetching Apache Kafka $version from Maven Central failed (see the Maven output above)"
    fi
    # Swap the whole directory so an interrupted fetch never leaves half a classpath.
    rm -rf "$LIBS_DIR"
    mv "$tmp" "$LIBS_DIR"
    say "installed $(find "$LIBS_DIR" -name '*.jar' | wc -l) jars into $LIBS_DIR ($(since "$started"))"
}

# --- process helpers ------------------------------------------------------------

read_pid() {
    if [[ -f "$PID_FILE" ]]; then
        tr -dc '0-9' <"$PID_FILE"
    fi
}

# True if $1 is a live process that is our broker (guards against a recycled pid).
is_our_broker() {
    local pid="$1"
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null \
        && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'kafka\.Kafka'
}

running_pid() {
    local pid
    pid="$(read_pid)"
    if is_our_broker "$pid"; then
        echo "$pid"
    fi
}

# True if something accepts TCP connections on 127.0.0.1:$1.
port_open() {
    timeout 2 bash -c "exec 3<>/dev/tcp/$HOST/$1" 2>/dev/null
}

# True once the broker answers a Metadata (v4) request listing at least one live
# broker: request processing is on and this broker is registered and unfenced.
# (Metadata v4 is still served by Kafka 4.x; KIP-896 removed only v0-v3.)
broker_ready() {
    # shellcheck disable=SC2016  # the inner script gets host and port as $1 and $2
    timeout 3 bash -c '
        exec 3<>"/dev/tcp/$1/$2" || exit 1
        # size 20 | api_key 3 | version 4 | correlation_id 0x7e57ab1e | client_id "probe"
        # | topics = null (-1) | allow_auto_topic_creation = false
        printf "\x00\x00\x00\x14\x00\x03\x00\x04\x7e\x57\xab\x1e\x00\x05probe\xff\xff\xff\xff\x00" >&3
        # size(4) correlation_id(4) throttle_time_ms(4) brokers.length(4)
        hex="$(head -c 16 <&3 | od -An -tx1 | tr -d " \n")"
        [[ ${#hex} -eq 32 && ${hex:8:8} == 7e57ab1e && ${hex:24:8} != 00000000 ]]
    ' _ "$HOST" "$PRESENCE_KAFKA_PORT" 2>/dev/null
}

# --- configuration --------------------------------------------------------------

write_config() {
    mkdir -p "$KAFKA_DIR" "$LOG_DIRS" "$LOG_DIR" "$RUN_DIR"
    cat >"$SERVER_PROPERTIES" <<EOF
# Written by scripts/kafka.sh on every start; edit the script, not this file.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$HOST:$PRESENCE_KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://$HOST:$PRESENCE_KAFKA_PORT,CONTROLLER://$HOST:$PRESENCE_KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$HOST:$PRESENCE_KAFKA_PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
log.dirs=$LOG_DIRS
num.partitions=1
auto.create.topics.enable=false
delete.topic.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
# After an unclean exit (SIGKILL, crash) the controller refuses the restarted broker's
# registration until the old one's session expires: 4 s here instead of the default 9 s.
broker.session.timeout.ms=4000
broker.heartbeat.interval.ms=1000
num.network.threads=2
num.io.threads=4
log.retention.hours=24
log.segment.bytes=67108864
EOF
    cat >"$LOG4J_CONFIG" <<'EOF'
# Written by scripts/kafka.sh. INFO to stdout, which the script appends to var/log/kafka.log.
status = warn
name = presence-kafka
appender.out.type = Console
appender.out.name = STDOUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = STDOUT
# The chattiest loggers, kept quiet.
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.requestchannel.name = kafka.network.RequestChannel$
logger.requestchannel.level = WARN
logger.config.name = org.apache.kafka.common.config.AbstractConfig
logger.config.level = WARN
logger.appinfo.name = org.apache.kafka.common.utils.AppInfoParser
logger.appinfo.level = WARN
logger.cleaner.name = kafka.log.LogCleaner
logger.cleaner.level = WARN
EOF
}

java_opts() {
    # shellcheck disable=SC2206
    local heap=($PRESENCE_KAFKA_HEAP_OPTS)
    JAVA_OPTS=(
        "${heap[@]}"
        -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35
        -XX:+ExplicitGCInvokesConcurrent -XX:+ExitOnOutOfMemoryError
        -Djava.awt.headless=true
        "-Dlog4j2.configurationFile=$LOG4J_CONFIG"
        -cp "$LIBS_DIR/*"
    )
}

format_storage_if_needed() {
    if [[ -f "$LOG_DIRS/meta.properties" ]]; then
        return 0
    fi
    local cluster_id
    if [[ -s "$CLUSTER_ID_FILE" ]]; then
        cluster_id="$(tr -d ' \n' <"$CLUSTER_ID_FILE")"
    else
        # What `kafka-storage random-uuid` prints: 16 random bytes, URL-safe base64,
        # unpadded, not starting with '-' (which a command line would take for a flag).
        cluster_id=-
        while [[ $cluster_id == -* ]]; do
            cluster_id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
        done
        echo "$cluster_id" >"$CLUSTER_ID_FILE"
    fi
    say "formatting KRaft storage in $LOG_DIRS (cluster id $cluster_id)"
    if ! java "${JAVA_OPTS[@]}" kafka.tools.StorageTool format \
            --config "$SERVER_PROPERTIES" --cluster-id "$cluster_id" --ignore-formatted \
            >>"$LOG_FILE" 2>&1; then
        log_tail >&2
        die "formatting the KRaft storage failed (see $LOG_FILE)"
    fi
}

# The last lines this start-up wrote to the log.
log_tail() {
    tail -c "+$((LOG_START_BYTE + 1))" "$LOG_FILE" | tail -n 40
}

# --- start / stop / status ------------------------------------------------------

cmd_start() {
    local pid
    pid="$(running_pid)"
    if [[ -n "$pid" ]]; then
        say "already running (pid $pid) on $HOST:$PRESENCE_KAFKA_PORT"
        return 0
    fi
    rm -f "$PID_FILE"

    if port_open "$PRESENCE_KAFKA_PORT"; then
        die "port $PRESENCE_KAFKA_PORT on $HOST is already in use by another process; set PRESENCE_KAFKA_PORT to a free port"
    fi
    if port_open "$PRESENCE_KAFKA_CONTROLLER_PORT"; then
        die "port $PRESENCE_KAFKA_CONTROLLER_PORT on $HOST is already in use by another process; set PRESENCE_KAFKA_CONTROLLER_PORT to a free port"
    fi

    cmd_install quiet
    write_config
    java_opts
    echo "===== $(date -u '+%Y-%m-%dT%H:%M:%SZ') scripts/kafka.sh start =====" >>"$LOG_FILE"
    LOG_START_BYTE=$(stat -c %s "$LOG_FILE")
    format_storage_if_needed

    local started
    started=$(now_ms)
    # No job control in a script, so the background child is not a group leader and
    # setsid runs java in place: $! is the JVM's pid.
    setsid nohup java "${JAVA_OPTS[@]}" kafka.Kafka "$SERVER_PROPERTIES" \
        >>"$LOG_FILE" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$PID_FILE"

    say "waiting for broker on $HOST:$PRESENCE_KAFKA_PORT..."
    local deadline=$((started + PRESENCE_KAFKA_START_TIMEOUT * 1000))
    while ! broker_ready; do
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$PID_FILE"
            echo "kafka: the broker exited during start-up; last lines of $LOG_FILE:" >&2
            log_tail >&2
            exit 1
        fi
        if (($(now_ms) >= deadline)); then
            echo "kafka: broker not ready on $HOST:$PRESENCE_KAFKA_PORT after ${PRESENCE_KAFKA_START_TIMEOUT}s; last lines of $LOG_FILE:" >&2
            log_tail >&2
            terminate "$pid" >/dev/null
            rm -f "$PID_FILE"
            exit 1
        fi
        sleep 0.2
    done
    say "ready on $HOST:$PRESENCE_KAFKA_PORT ($(since "$started"))"
}

# SIGTERM, wait up to 30 s, then SIGKILL.
terminate() {
    local pid="$1" i
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 300; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    say "broker (pid $pid) still alive after 30s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
}

cmd_stop() {
    local pid
    pid="$(running_pid)"
    if [[ -z "$pid" ]]; then
        rm -f "$PID_FILE"
        say "not running"
        return 0
    fi
    say "stopping broker (pid $pid)..."
    terminate "$pid"
    rm -f "$PID_FILE"
    say "stopped"
}

cmd_status() {
    local pid
    pid="$(running_pid)"
    if [[ -n "$pid" ]]; then
        say "running (pid $pid) on $HOST:$PRESENCE_KAFKA_PORT"
        return 0
    fi
    say "not running"
    return 1
}

case "${1:-}" in
    install) cmd_install ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *)
        echo "usage: $0 {install|start|stop|status}" >&2
        exit 2
        ;;
esac
