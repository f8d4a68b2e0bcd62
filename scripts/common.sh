# Shared by the scripts that install and start the local stack; sourced, not run.
# Everything a run creates lives under $PRESENCE_VAR (default: <repo>/var, git-ignored).

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PRESENCE_VAR="${PRESENCE_VAR:-$REPO_ROOT/var}"
PRESENCE_PG_PORT="${PRESENCE_PG_PORT:-15432}"
PRESENCE_REDIS_PORT="${PRESENCE_REDIS_PORT:-16379}"
PRESENCE_KAFKA_PORT="${PRESENCE_KAFKA_PORT:-19092}"
PRESENCE_KAFKA_CONTROLLER_PORT="${PRESENCE_KAFKA_CONTROLLER_PORT:-19093}"
RUN_DIR="$PRESENCE_VAR/run"
LOG_DIR="$PRESENCE_VAR/log"
mkdir -p "$RUN_DIR" "$LOG_DIR"

say() { printf '%s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# pid_alive NAME: true when $RUN_DIR/NAME.pid names a live process.
pid_alive() {
    local pid_file="$RUN_DIR/$1.pid"
    [ -f "$pid_file" ] && kill -0 "$(cat "$pid_file")" 2>/dev/null
}

# port_in_use PORT [udp]: true when something listens on 127.0.0.1:PORT.
port_in_use() {
    if [ "${2:-tcp}" = udp ]; then
        python3 - "$1" <<'PY'
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(0)
sys.exit(1)
PY
    else
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
    fi
}

# wait_for DESCRIPTION SECONDS COMMAND...: poll COMMAND until it succeeds or time runs out.
wait_for() {
    local what="$1" seconds="$2"; shift 2
    local deadline=$((SECONDS + seconds))
    say "  waiting for $what..."
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.2
    done
}

# stop_pid NAME [SECONDS]: SIGTERM the process in NAME.pid, SIGKILL after SECONDS.
stop_pid() {
    local name="$1" grace="${2:-20}" pid_file="$RUN_DIR/$1.pid"
    [ -f "$pid_file" ] || return 0
    local pid; pid="$(cat "$pid_file")"
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        local deadline=$((SECONDS + grace))
        while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then
            say "$name: did not stop within ${grace}s, sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        say "$name: stopped (pid $pid)"
    fi
    rm -f "$pid_file"
}

# apt_install PACKAGE...: install Debian packages, as root or through sudo.
apt_install() {
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || die "need root to install $*: run 'sudo apt-get install -y $*'"
        sudo="sudo"
    fi
    local log="$LOG_DIR/apt.log"
    say "installing $* from Debian's packages (apt-get, log in $log)..."
    $sudo apt-get update -qq >"$log" 2>&1 || { tail -n 5 "$log" >&2; die "apt-get update failed"; }
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" \
        >>"$log" 2>&1 || { tail -n 5 "$log" >&2; die "apt-get install $* failed"; }
}
