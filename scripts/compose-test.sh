#!/usr/bin/env bash
# make compose-test: verify docker-compose.yml on a machine that reaches no image
# registry and whose containers reach no package index.
#
#   1. a Docker engine: the running one, or Debian's docker.io started here
#      (pid in var/run/dockerd.pid, stopped at the end because we started it);
#   2. local stand-ins for the official images (infra/images/README.md): a Debian
#      bookworm root made with debootstrap, packages installed into copies of it in
#      a chroot on the host, `docker import`, then the Dockerfiles in infra/images;
#   3. the service and test images, built offline from a wheelhouse made on the host;
#   4. `up -d` (the init service makes the secrets and a CA into a volume), wait for
#      health, the test profile (UDP, TCP, TLS and WSS), `--scale notifier=3`, the test
#      profile again, the notifier-replica checks from the host (change events spread
#      over the three; one killed mid-load loses no NOTIFY), `down -v`.
#
# Environment:
#   COMPOSE_TEST_SIP_PORT   host port published for SIP (default: the first of 25060-25159 free
#                           for TCP and UDP; 5060 may be `make run`'s, 25060 someone else's)
#   COMPOSE_TEST_PROJECT    compose project name (default presence-compose-test): another name
#                           lets a second run share one Docker engine without colliding
#   COMPOSE_TEST_COMPOSE    the compose command (default: `docker compose` when it answers, else
#                           docker-compose; e.g. COMPOSE_TEST_COMPOSE=docker-compose)
#   COMPOSE_TEST_KEEP=1     leave the stack (and a dockerd started here) running at the end
#   DEBIAN_MIRROR           mirror for debootstrap (default: the host's apt source)
#   PRESENCE_VAR            where images, the wheelhouse and dockerd's data go (default var/)
set -euo pipefail
source "$(dirname "$0")/common.sh"

# sip_port_free PORT: nothing is bound to PORT, TCP or UDP, on any address (docker
# publishes on 0.0.0.0, which a listener on 127.0.0.1 alone would block).
sip_port_free() {
    python3 - "$1" <<'PY'
import socket, sys
for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
    s = socket.socket(socket.AF_INET, kind)
    try:
        s.bind(("0.0.0.0", int(sys.argv[1])))
    except OSError:
        sys.exit(1)
    finally:
        s.close()
PY
}
SIP_PORT="${COMPOSE_TEST_SIP_PORT:-}"
if [ -z "$SIP_PORT" ]; then
    for SIP_PORT in $(seq 25060 25159); do sip_port_free "$SIP_PORT" && break; done
fi
# The other published ports (SIP over TLS, WS, WSS; presence-store's HTTPS): free
# ones the kernel picks, so that nothing on the host's defaults is disturbed.
free_tcp_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("0.0.0.0", 0)); print(s.getsockname()[1])'; }
TLS_PORT="$(free_tcp_port)" WS_PORT="$(free_tcp_port)" WSS_PORT="$(free_tcp_port)" HTTPS_PORT="$(free_tcp_port)"
IMAGES_DIR="$PRESENCE_VAR/images"
WHEELHOUSE="$PRESENCE_VAR/wheelhouse"
CONTEXT="$PRESENCE_VAR/compose-build/context"
DOCKERD_PID_FILE="$RUN_DIR/dockerd.pid"
KAFKA_VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$REPO_ROOT/infra/kafka/pom.xml" | head -n 1)"
L=presence-local   # repository prefix of every image built here
export DOCKER_BUILDKIT=0 COMPOSE_DOCKER_CLI_BUILD=0   # the classic builder: no buildx needed
export COMPOSE_PROJECT_NAME="${COMPOSE_TEST_PROJECT:-presence-compose-test}" COMPOSE_FILE="$REPO_ROOT/docker-compose.yml"
# What docker-compose.yml reads: the local images, a free SIP port, documents in NOTIFYs.
export POSTGRES_IMAGE=$L/postgres:15 REDIS_IMAGE=$L/redis:7 KAFKA_IMAGE=$L/kafka:$KAFKA_VERSION \
    PYTHON_IMAGE=$L/python:3.11 SIP_EDGE_IMAGE=$L/sip-edge:latest \
    PRESENCE_STORE_IMAGE=$L/presence-store:latest NOTIFIER_IMAGE=$L/notifier:latest \
    TESTS_IMAGE=$L/compose-tests:latest \
    PRESENCE_SIP_PORT="$SIP_PORT" PRESENCE_SERVER_ADDRESS="sip:127.0.0.1:$SIP_PORT" \
    PRESENCE_SIP_TLS_PORT="$TLS_PORT" PRESENCE_SIP_WS_PORT="$WS_PORT" PRESENCE_SIP_WSS_PORT="$WSS_PORT" \
    PRESENCE_STORE_HTTPS_PORT="$HTTPS_PORT" \
    PRESENCE_FORCE_ACTIVE=1 PRESENCE_AUTH=none  # its SIP checks send no credentials

say() { printf 'compose-test: %s\n' "$*"; }
die() { printf 'compose-test: error: %s\n' "$*" >&2; exit 1; }
T0=$SECONDS
# step DESCRIPTION COMMAND...: run, then print how long it took.
step() {
    local what="$1" t=$SECONDS; shift
    say "$what..."
    "$@"
    say "$what: done in $((SECONDS - t))s"
}

# --- the engine -------------------------------------------------------------------

STARTED_DOCKERD=""
ensure_engine() {
    if docker info >/dev/null 2>&1; then say "using the running Docker engine"; return; fi
    if ! command -v dockerd >/dev/null || ! command -v docker-compose >/dev/null; then
        apt_install docker.io docker-compose iptables
    fi
    [ "$(id -u)" = 0 ] || die "no Docker engine runs and starting dockerd needs root: run 'sudo dockerd &' first"
    local log="$LOG_DIR/dockerd.log"
    say "starting dockerd (data in $PRESENCE_VAR/docker, log in $log)"
    setsid dockerd --data-root "$PRESENCE_VAR/docker" >>"$log" 2>&1 </dev/null &
    echo $! >"$DOCKERD_PID_FILE"
    STARTED_DOCKERD=$!
    local deadline=$((SECONDS + 60))
    until docker info >/dev/null 2>&1; do
        kill -0 "$STARTED_DOCKERD" 2>/dev/null || { tail -n 5 "$log" >&2; die "dockerd exited at start; its log: $log"; }
        [ "$SECONDS" -lt "$deadline" ] || die "dockerd not answering after 60s; its log: $log"
        sleep 0.5
    done
    say "dockerd ready (pid $STARTED_DOCKERD)"
}

COMPOSE=()
pick_compose() {
    if [ -n "${COMPOSE_TEST_COMPOSE:-}" ]; then read -ra COMPOSE <<<"$COMPOSE_TEST_COMPOSE"
    elif docker compose version >/dev/null 2>&1; then COMPOSE=(docker compose)
    elif command -v docker-compose >/dev/null; then COMPOSE=(docker-compose)
    else die "neither 'docker compose' nor docker-compose found: apt-get install -y docker-compose"
    fi
    say "compose: ${COMPOSE[*]} ($("${COMPOSE[@]}" version --short 2>/dev/null || echo '?')), docker engine $(docker version -f '{{.Server.Version}}'), SIP on host port $SIP_PORT (TLS $TLS_PORT, WS $WS_PORT, WSS $WSS_PORT, HTTPS $HTTPS_PORT), project $COMPOSE_PROJECT_NAME"
}

# --- stand-in images --------------------------------------------------------------

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

debian_mirror() {
    local mirror
    mirror="$(grep -hoE '(URIs:|deb) +https?://[^ ]+' /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null \
        | awk '{print $2}' | grep -v security | head -n 1 || true)"
    echo "${DEBIAN_MIRROR:-${mirror:-http://deb.debian.org/debian}}"
}

base_rootfs() {
    local root="$IMAGES_DIR/debian-bookworm/rootfs"
    if [ ! -f "$root.complete" ]; then
        command -v debootstrap >/dev/null || apt_install debootstrap
        local mirror log="$LOG_DIR/debootstrap.log"; mirror="$(debian_mirror)"
        say "debootstrap bookworm from $mirror into $root (log in $log)"
        rm -rf "$root"; mkdir -p "$(dirname "$root")"
        debootstrap --variant=minbase bookworm "$root" "$mirror" >"$log" 2>&1 \
            || { tail -n 5 "$log" >&2; die "debootstrap bookworm from $mirror failed (log: $log); set DEBIAN_MIRROR to a reachable mirror"; }
        rm -rf "$root/var/lib/apt/lists/"* "$root/var/cache/apt/"*.bin
        touch "$root.complete"
    fi
    have_image $L/debian:bookworm \
        || tar -C "$root" -c . | docker import -m "debootstrap bookworm minbase" - $L/debian:bookworm >/dev/null
}

# derived_rootfs NAME PACKAGE...: a copy of the base root with Debian packages,
# installed by apt-get in a chroot on the host, imported as $L/NAME-rootfs
# (skipped while that image exists; the copy is deleted once imported).
derived_rootfs() {
    local name="$1"; shift
    local root="$IMAGES_DIR/$name/rootfs" log="$LOG_DIR/image-$name.log"
    have_image "$L/$name-rootfs" && return 0
    say "  $name: apt-get install $* (chroot, log in $log)"
    umount "$root/proc" 2>/dev/null || true   # left mounted by an interrupted run
    rm -rf "$root"; mkdir -p "$(dirname "$root")"
    cp -a "$IMAGES_DIR/debian-bookworm/rootfs" "$root"
    cp /etc/resolv.conf "$root/etc/resolv.conf"
    [ -f /etc/apt/sources.list.d/debian.sources ] && cp /etc/apt/sources.list.d/debian.sources "$root/etc/apt/sources.list.d/" && : >"$root/etc/apt/sources.list"
    printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"; chmod +x "$root/usr/sbin/policy-rc.d"
    mkdir -p "$root/etc/postgresql-common"
    echo "create_main_cluster = false" >"$root/etc/postgresql-common/createcluster.conf"
    mount -t proc proc "$root/proc"
    local ok=0
    { chroot "$root" apt-get update -qq \
        && DEBIAN_FRONTEND=noninteractive chroot "$root" apt-get install -y -qq --no-install-recommends "$@" \
        && chroot "$root" apt-get clean; } >"$log" 2>&1 || ok=$?
    umount "$root/proc"
    [ "$ok" = 0 ] || { tail -n 5 "$log" >&2; die "apt-get install $* in the $name chroot failed (log: $log)"; }
    rm -rf "$root/var/lib/apt/lists/"* "$root/usr/sbin/policy-rc.d"
    : >"$root/etc/resolv.conf"
    tar -C "$root" -c . | docker import -m "bookworm + $*" - "$L/$name-rootfs" >/dev/null
    rm -rf "$root"   # the image holds it now
}

# image NAME TAG CONTEXT: docker build infra/images/NAME on top of its rootfs.
image() {
    local log="$LOG_DIR/build-$1.log"
    docker build -t "$L/$1:$2" --build-arg ROOTFS_IMAGE="$L/$1-rootfs:latest" "$3" >"$log" 2>&1 \
        || { tail -n 20 "$log" >&2; die "building $L/$1:$2 failed (log: $log)"; }
    say "  $L/$1:$2 ($(docker image inspect -f '{{.Size}}' "$L/$1:$2" | awk '{printf "%d MB", $1/1e6}'))"
}

stand_in_images() {
    base_rootfs
    derived_rootfs python python3 python3-pip python-is-python3
    derived_rootfs postgres postgresql-15
    derived_rootfs redis redis-server
    derived_rootfs kafka openjdk-17-jre-headless
    image python 3.11 "$REPO_ROOT/infra/images/python"
    image postgres 15 "$REPO_ROOT/infra/images/postgres"
    image redis 7 "$REPO_ROOT/infra/images/redis"
    [ -f "$PRESENCE_VAR/kafka-dist/libs/kafka_2.13-$KAFKA_VERSION.jar" ] || "$REPO_ROOT/scripts/kafka.sh" install
    local kctx="$IMAGES_DIR/kafka/context"
    rm -rf "$kctx"; mkdir -p "$kctx"
    cp -a "$REPO_ROOT/infra/images/kafka/." "$kctx/"
    cp -a "$PRESENCE_VAR/kafka-dist/libs" "$kctx/libs"
    image kafka "$KAFKA_VERSION" "$kctx"
}

# --- service images ---------------------------------------------------------------

# stage_sources DIR: only what the Dockerfiles copy (the repository root also holds
# .venv and var/, which must not be sent to the engine), without build leftovers.
stage_sources() {
    rm -rf "$1"; mkdir -p "$1"
    (cd "$REPO_ROOT" && tar -c --exclude=__pycache__ --exclude='*.egg-info' --exclude=build \
        requirements.txt requirements-dev.txt lib services tools schema infra/images/wheelhouse \
        tests/__init__.py tests/integration/__init__.py tests/integration/sip_client.py tests/compose) \
        | tar -C "$1" -x
}

# The wheelhouse, made on the host (which reaches PyPI): the pinned dependencies,
# the library and services, the build backend pip needs offline (setuptools,
# wheel) and pytest. Built from a copy, so the repository gets no build/ dirs.
wheelhouse() {
    local stamp; stamp="$(cat "$REPO_ROOT"/requirements*.txt "$REPO_ROOT"/lib/pyproject.toml | sha256sum | cut -c1-16)"
    if [ -f "$WHEELHOUSE/.stamp-$stamp" ]; then say "  wheelhouse up to date ($WHEELHOUSE)"; return; fi
    local py="$REPO_ROOT/.venv/bin/python" log="$LOG_DIR/wheelhouse.log" src="$PRESENCE_VAR/compose-build/wheel-src"
    [ -x "$py" ] || "$REPO_ROOT/scripts/venv.sh"
    [ "$("$py" -c 'import sys; print(sys.version_info[:2] == (3, 11))')" = True ] \
        || die "the wheelhouse must be built with Python 3.11 (the images' python): recreate .venv with python3.11"
    stage_sources "$src"
    rm -rf "$WHEELHOUSE"; mkdir -p "$WHEELHOUSE"
    # shellcheck disable=SC2046  # one argument per pinned test requirement
    (cd "$src" && "$py" -m pip wheel --quiet -w "$WHEELHOUSE" -r requirements.txt \
        ./lib ./services/sip-edge ./services/presence-store ./services/notifier ./tools/presencectl \
        setuptools wheel \
        $(grep -E '^(pytest|iniconfig|pluggy|pygments)==' requirements-dev.txt)) >"$log" 2>&1 \
        || { tail -n 5 "$log" >&2; die "pip wheel failed (log: $log); the host needs PyPI for this step"; }
    rm -rf "$src"
    touch "$WHEELHOUSE/.stamp-$stamp"
    say "  wheelhouse: $(find "$WHEELHOUSE" -name '*.whl' | wc -l) wheels in $WHEELHOUSE"
}

service_images() {
    wheelhouse
    stage_sources "$CONTEXT"
    cp -a "$WHEELHOUSE" "$CONTEXT/wheelhouse"
    local name dockerfile t
    for name in sip-edge presence-store notifier compose-tests; do
        dockerfile="services/$name/Dockerfile"; [ "$name" = compose-tests ] && dockerfile=tests/compose/Dockerfile
        t=$SECONDS
        docker build -f "$CONTEXT/$dockerfile" -t "$L/$name:latest" --build-arg PYTHON_IMAGE=$PYTHON_IMAGE \
            --build-arg WHEELHOUSE=wheelhouse --build-arg PIP_OFFLINE=1 "$CONTEXT" >"$LOG_DIR/build-$name.log" 2>&1 \
            || { tail -n 20 "$LOG_DIR/build-$name.log" >&2; die "building $L/$name failed (log: $LOG_DIR/build-$name.log)"; }
        say "  $L/$name ($((SECONDS - t))s, $(docker image inspect -f '{{.Size}}' "$L/$name:latest" | awk '{printf "%d MB", $1/1e6}'))"
    done
}

# --- the stack --------------------------------------------------------------------

STACK_UP=""
compose() { "${COMPOSE[@]}" "$@"; }

# wait_healthy SERVICE COUNT SECONDS: until COUNT containers of SERVICE report healthy.
wait_healthy() {
    local service="$1" want="$2" deadline=$((SECONDS + $3)) healthy ids
    while :; do
        ids="$(compose ps -q "$service")"
        healthy=0
        for id in $ids; do
            [ "$(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{end}}' "$id")" = healthy ] && healthy=$((healthy + 1))
        done
        [ "$healthy" -ge "$want" ] && { say "  $service: $healthy healthy"; return 0; }
        [ "$SECONDS" -lt "$deadline" ] || { compose ps >&2; die "$service: $healthy of $want containers healthy after $3s (see 'compose logs' above)"; }
        sleep 1
    done
}

# The published port answers OPTIONS from the host, over UDP and TCP.
options_from_host() {
    python3 - "$SIP_PORT" <<'PY'
import socket, sys
port = int(sys.argv[1])
def options(transport):
    kind = socket.SOCK_DGRAM if transport == "UDP" else socket.SOCK_STREAM
    s = socket.socket(socket.AF_INET, kind); s.settimeout(5)
    s.connect(("127.0.0.1", port)); here = "%s:%d" % s.getsockname()
    s.send((f"OPTIONS sip:ping@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/{transport} {here};branch=z9hG4bK-ct{transport};rport\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:ct@example.com>;tag=1\r\nTo: <sip:ping@127.0.0.1>\r\n"
            f"Call-ID: compose-test-{transport}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode())
    line = s.recv(65535).decode(errors="replace").split("\r\n", 1)[0]
    print(f"compose-test:   OPTIONS over {transport} to 127.0.0.1:{port}: {line}")
    return line.startswith("SIP/2.0 200")
sys.exit(0 if all([options("UDP"), options("TCP")]) else 1)
PY
}

# After --scale notifier=3, from the host (tests/compose/notifier_replicas.py): change
# events spread over the replicas (counts per replica printed), then one replica
# killed while PUBLISHes flow, and every watcher still gets the last state.
notifier_replicas() {
    "$REPO_ROOT/scripts/venv.sh"
    "$REPO_ROOT/.venv/bin/python" "$REPO_ROOT/tests/compose/notifier_replicas.py" --project "$COMPOSE_PROJECT_NAME"
}

# The first start made the secrets once; a later start (init runs again) keeps them.
SECRET_FILES="/run/presence/auth-secret /run/presence/xcap-secret /run/presence/admin-token /run/presence/tls/ca.pem"
stored_secrets() { compose exec -T sip-edge cat $SECRET_FILES | sha256sum | cut -c1-16; }
FIRST_SECRETS=""
first_start() {
    local logs; logs="$(compose logs --no-color init)"   # whole, then searched: no early close of a pipe
    grep -q "first start: made" <<<"$logs" || die "the init service made nothing at the first start: $logs"
    FIRST_SECRETS="$(stored_secrets)"
    say "  init made the secrets and a CA (digest $FIRST_SECRETS); read with: $(grep -m1 -o 'docker compose exec .*auth-secret' <<<"$logs")"
}
secrets_kept() {
    local now; now="$(stored_secrets)"
    [ "$now" = "$FIRST_SECRETS" ] || die "the secrets changed on a later start ($FIRST_SECRETS -> $now)"
    say "  a later start kept them (digest $now)"
}

wait_stack() { wait_healthy sip-edge 1 180; wait_healthy presence-store 1 10; wait_healthy notifier 1 10; }

# --no-deps: the stack is up and healthy; without it Compose v2 reconciles the
# dependencies first, which scales notifier back to the file's one replica.
run_tests() { compose --profile test run --rm --no-deps tests; }

cleanup() {
    local rc=$?
    if [ -n "$STACK_UP" ]; then
        if [ "$rc" != 0 ]; then compose --profile test logs --tail 30 >&2 || true; fi
        if [ "${COMPOSE_TEST_KEEP:-0}" = 1 ]; then
            say "COMPOSE_TEST_KEEP=1: the stack stays up ($COMPOSE_PROJECT_NAME); stop it with: COMPOSE_PROJECT_NAME=$COMPOSE_PROJECT_NAME ${COMPOSE[*]} down -v"
        else
            say "docker compose down -v"; compose --profile test down -v --remove-orphans >/dev/null 2>&1 || true
        fi
    fi
    if [ -n "$STARTED_DOCKERD" ] && [ "${COMPOSE_TEST_KEEP:-0}" != 1 ]; then
        say "stopping the dockerd started here (pid $STARTED_DOCKERD)"
        kill -TERM "$STARTED_DOCKERD" 2>/dev/null || true
        local deadline=$((SECONDS + 30))
        while kill -0 "$STARTED_DOCKERD" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.5; done
        kill -0 "$STARTED_DOCKERD" 2>/dev/null && kill -KILL "$STARTED_DOCKERD" 2>/dev/null || true
        rm -f "$DOCKERD_PID_FILE"
    fi
    say "finished with exit code $rc after $((SECONDS - T0))s"
}
trap cleanup EXIT

main() {
    step "Docker engine" ensure_engine
    pick_compose
    if ! sip_port_free "$SIP_PORT"; then
        die "port $SIP_PORT is in use on the host: set COMPOSE_TEST_SIP_PORT to a free port"
    fi
    step "stand-in images (debootstrap, Debian packages, Maven jars)" stand_in_images
    step "service images (offline, from the wheelhouse)" service_images
    compose --profile test down -v --remove-orphans >/dev/null 2>&1 || true   # a previous run's leftovers
    STACK_UP=1
    step "docker compose up -d" compose up -d --no-build
    step "waiting for health" wait_stack
    step "OPTIONS from the host to the published port" options_from_host
    step "the first start's secrets" first_start
    step "test profile (1 notifier)" run_tests
    step "docker compose up -d --scale notifier=3" compose up -d --no-build --scale notifier=3
    step "waiting for 3 healthy notifiers" wait_healthy notifier 3 120
    step "secrets after a later start" secrets_kept
    step "test profile (3 notifiers)" run_tests
    step "notifier replicas: change events spread, one killed mid-load" notifier_replicas
    say "all checks passed"
}
main "$@"
