#!/usr/bin/env bash
# The project virtualenv (.venv) with the pinned dependencies and the five packages
# (the library, the three services, presencectl) installed editable. Reinstalls only
# when a requirements file changed.
set -euo pipefail
source "$(dirname "$0")/common.sh"

VENV="$REPO_ROOT/.venv"
STAMP="$VENV/.requirements.sha256"
command -v python3 >/dev/null || die "python3 not found: install Python 3.11 or newer"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "Python 3.11 or newer is needed, found $(python3 --version 2>&1)"

wanted="$(cat "$REPO_ROOT"/requirements*.txt "$REPO_ROOT"/lib/pyproject.toml \
    "$REPO_ROOT"/services/*/pyproject.toml "$REPO_ROOT"/tools/*/pyproject.toml \
    | sha256sum | cut -d' ' -f1)"
if [ -x "$VENV/bin/python" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$wanted" ]; then
    exit 0
fi
say "python: installing dependencies into .venv (pip)..."
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV" || die "could not create .venv (apt-get install -y python3-venv?)"
PIP_LOG="$LOG_DIR/pip.log"
"$VENV/bin/pip" install -q --disable-pip-version-check -r "$REPO_ROOT/requirements-dev.txt" \
    >"$PIP_LOG" 2>&1 || { tail -n 20 "$PIP_LOG" >&2; die "pip install failed, see $PIP_LOG"; }
# setuptools warns at length about editable installs; keep that in the log.
"$VENV/bin/pip" install -q --disable-pip-version-check --no-deps \
    -e "$REPO_ROOT/lib" -e "$REPO_ROOT/services/sip-edge" \
    -e "$REPO_ROOT/services/presence-store" -e "$REPO_ROOT/services/notifier" >>"$PIP_LOG" 2>&1 \
    || { tail -n 20 "$PIP_LOG" >&2; die "pip install of the project packages failed, see $PIP_LOG"; }
# After the library: a .venv from when the library shipped presencectl loses that
# console script when the library is reinstalled, so presencectl comes last.
"$VENV/bin/pip" install -q --disable-pip-version-check --no-deps \
    -e "$REPO_ROOT/tools/presencectl" >>"$PIP_LOG" 2>&1 \
    || { tail -n 20 "$PIP_LOG" >&2; die "pip install of presencectl failed, see $PIP_LOG"; }
printf '%s' "$wanted" >"$STAMP"
say "python: .venv ready"
